import math

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from actrange.columns import EPOCH_COLUMNS, HIDDEN_LAYERS, LAYER_COLUMNS, RUN_COLUMNS
from actrange.errors import UsageError
from actrange.figures import (
    accuracy_curves,
    accuracy_heatmap,
    loss_curves,
    per_class_accuracy,
    save_figure,
)
from actrange.layer_figures import (
    grad_norm_curves,
    health_heatmaps,
    percentile_bands,
    violin_comparison,
)

N_EPOCHS = 3


def _run(run_id: str, activation: str, seed: int, switch_epoch: int = 0, lo: float = -1.0) -> dict:
    start, _, rest = activation.partition(">")
    row = dict.fromkeys(RUN_COLUMNS, 0)
    row.update(
        run_id=run_id,
        activation=activation,
        activation_start=start,
        switch_epoch=switch_epoch,
        switch_to=rest.partition("@")[0],
        range_lo=lo,
        range_hi=-lo,
        seed=seed,
        lr=0.01,
        epochs=N_EPOCHS,
        test_accuracy=80.0 + seed,
        status="finished",
    )
    return row


def _rows(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Epoch and layer rows for the runs, with values that vary by seed, epoch and layer."""
    epochs, layers = [], []
    for run in runs:
        for epoch in range(1, N_EPOCHS + 1):
            in_force = run["activation_start"]
            if run["switch_epoch"] and epoch >= run["switch_epoch"]:
                in_force = run["switch_to"]
            row = dict.fromkeys(EPOCH_COLUMNS, 0.0)
            row.update(run_id=run["run_id"], epoch=epoch, activation=in_force)
            row.update(train_loss=2.0 / epoch + 0.1 * run["seed"], test_accuracy=60.0 + epoch)
            epochs.append(row)
            for depth, layer in enumerate(HIDDEN_LAYERS):
                saturating = in_force == "tanh"
                share = 0.1 * depth / epoch
                row = dict.fromkeys(LAYER_COLUMNS, math.nan)
                row.update(run_id=run["run_id"], epoch=epoch, layer=layer, activation=in_force)
                row.update(mean=0.0, std=1.0, p02=-2.0, p25=-0.7, p50=0.0, p75=0.7, p98=2.0)
                row.update(grad_norm=10.0 ** -(depth + run["seed"]), update_ratio=1e-3)
                row["saturated_frac" if saturating else "dead_frac"] = share
                if not saturating:
                    row["zero_frac"] = 0.5
                layers.append(row)
    return epochs, layers


@pytest.fixture(scope="module")
def study() -> tuple[list[dict], list[dict], list[dict]]:
    """2 activations × 2 seeds × 3 epochs at [-1, 1], plus one seed that switches at epoch 2."""
    runs = [_run(f"{a}-{s}", a, s) for a in ("relu", "tanh") for s in (1, 2)]
    runs.append(_run("switch-1", "tanh>relu@2", 1, switch_epoch=2))
    return (runs, *_rows(runs))


def _bands(ax) -> list:
    """Shaded areas: fill_between bands, or the bodies of violins."""
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _switch_lines(ax) -> list:
    return [
        line
        for line in ax.lines
        if line.get_linestyle() == "--" and list(line.get_xdata()) == [1.5, 1.5]
    ]


@pytest.mark.parametrize("plot", [loss_curves, accuracy_curves])
def test_epoch_curves_show_cells_bands_and_switch(study, plot):
    runs, epochs, _ = study
    fig = plot(runs, epochs, -1, 1)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    labels = [line.get_label() for line in ax.lines]
    assert labels[:2] == ["ReLU (n=2)", "Tanh (n=2)"]
    assert "Tanh→ReLU@2 (n=1)" in labels
    # a band for each two-seed cell, none for the single switched run
    assert len(_bands(ax)) == 2
    assert len(_switch_lines(ax)) == 1
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]
    assert "[-1, 1]" in ax.get_title()


def test_loss_curve_is_the_seed_mean_with_a_t_band(study):
    runs, epochs, _ = study
    ax = loss_curves(runs, epochs, -1, 1).axes[0]
    # seeds 1 and 2 give losses 2/epoch + 0.1 and + 0.2
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [2.15, 1.15, 2 / 3 + 0.15])
    band = _bands(ax)[0].get_paths()[0].vertices[:, 1]
    # half-width: t(0.975, 1) * sd / sqrt(2) with sd = 0.1 / sqrt(2)
    half = 12.706 * 0.05
    assert band.max() == pytest.approx(2.15 + half, rel=1e-3)
    assert band.min() == pytest.approx(2 / 3 + 0.15 - half, rel=1e-3)


def test_curves_reject_a_range_without_runs(study):
    runs, epochs, _ = study
    with pytest.raises(UsageError, match=r"\[-5, 5\].*\[-1, 1\]"):
        loss_curves(runs, epochs, -5, 5)


def _records(n_epochs: int, shift: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {layer: rng.normal(shift, 1.0, (n_epochs, 50)) for layer in HIDDEN_LAYERS}


def _tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_violins_split_early_and_late_epochs():
    fig = violin_comparison(_records(3, 0), _records(3, 1), "ReLU", "Tanh", split_epoch=2)
    axes = np.array(fig.axes).reshape(len(HIDDEN_LAYERS), 2)
    left, right = axes[0]
    assert _tick_labels(left) == ["1", "2"]
    assert _tick_labels(right) == ["3"]
    bodies = _bands(left)
    assert len(bodies) == 4  # two epochs × (a, b)
    colours = [to_rgb(body.get_facecolor()[0]) for body in bodies]
    assert colours[0] == colours[2] == to_rgb("tab:blue")
    assert colours[1] == colours[3] == to_rgb("tab:red")
    # each pair straddles its epoch tick
    centres = [body.get_paths()[0].vertices[:, 0].mean() for body in bodies]
    assert centres[0] < 0 < centres[1] < 1 < centres[3]
    assert len(_bands(right)) == 2
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["ReLU", "Tanh"]


def test_violins_turn_the_right_column_off_without_later_epochs():
    fig = violin_comparison(_records(2, 0), _records(2, 1), "a", "b", split_epoch=2)
    axes = np.array(fig.axes).reshape(len(HIDDEN_LAYERS), 2)
    assert all(ax.axison for ax in axes[:, 0])
    assert not any(ax.axison for ax in axes[:, 1])


def test_violins_skip_non_finite_values_and_reject_missing_layers():
    records = _records(2, 0)
    records["conv1"][1] = np.nan  # a diverged epoch: nothing to draw there
    fig = violin_comparison(records, _records(2, 1), "a", "b", split_epoch=5)
    assert len(_bands(fig.axes[0])) == 3
    del records["lin2"]
    with pytest.raises(UsageError, match="lin2"):
        violin_comparison(records, _records(2, 1), "a", "b")
    with pytest.raises(UsageError, match="split epoch"):
        violin_comparison(_records(2, 0), _records(2, 1), "a", "b", split_epoch=0)


def test_percentile_bands_have_a_panel_per_layer(study):
    runs, _, layers = study
    fig = percentile_bands(runs, layers, -1, 1)
    # seven layers and the legend panel
    assert len(fig.axes) == len(HIDDEN_LAYERS) + 1
    conv1 = fig.axes[0]
    assert conv1.get_title() == "conv1"
    assert len(_bands(conv1)) == 2 * 3  # two bands for each of three cells
    np.testing.assert_allclose(conv1.lines[0].get_ydata(), [0.0, 0.0, 0.0])
    assert len(_switch_lines(conv1)) == 1
    assert not fig.axes[-1].axison


def test_health_heatmaps_show_the_family_statistics(study):
    runs, _, layers = study
    fig = health_heatmaps(runs, layers, -1, 1)
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert titles == [
        "ReLU: dead units",
        "ReLU: <= 0",
        "Tanh: saturated share",
        "Tanh→ReLU@2: saturated share",
        "Tanh→ReLU@2: dead units",
        "Tanh→ReLU@2: <= 0",
    ]
    image: AxesImage = fig.axes[2].get_images()[0]
    assert image.get_clim() == (0, 1)
    grid = image.get_array()
    assert grid.shape == (len(HIDDEN_LAYERS), N_EPOCHS)
    # saturated share 0.1 * depth / epoch
    assert grid[3, 1] == pytest.approx(0.15)
    # the switched run has no saturated share after the switch
    assert np.ma.is_masked(fig.axes[3].get_images()[0].get_array()[0, 1])
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_grad_norms_use_a_log_scale(study):
    runs, _, layers = study
    fig = grad_norm_curves(runs, layers, -1, 1)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 3
    assert all(ax.get_yscale() == "log" for ax in panels)
    # conv1 of ReLU: 1e-1 and 1e-2 across seeds, so a geometric mean of 10**-1.5
    assert panels[0].lines[0].get_ydata()[0] == pytest.approx(10**-1.5)
    assert len(_bands(panels[0])) == len(HIDDEN_LAYERS)
    assert len(_switch_lines(panels[2])) == 1


def test_layer_figures_need_layer_rows(study):
    runs, _, _ = study
    with pytest.raises(UsageError, match="no layer statistics"):
        health_heatmaps(runs, [], -1, 1)


def test_accuracy_heatmap_annotates_every_cell():
    means = np.array([[86.1, 10.0], [85.0, 84.0]])
    notes = [["86.1 ± 0.4 (n=10)", "10.0 ± 0.0 (n=10)"], ["85.0", "84.0"]]
    fig = accuracy_heatmap(["[-1, 1]", "[-5, 5]"], ["ReLU", "Tanh"], means, notes)
    ax = fig.axes[0]
    assert len(fig.axes) == 2
    assert sorted(t.get_text() for t in ax.texts) == sorted(sum(notes, []))
    with pytest.raises(UsageError, match="2 ranges × 2 activations"):
        accuracy_heatmap(["[-1, 1]", "[-5, 5]"], ["ReLU", "Tanh"], means[:1], notes)


def test_per_class_accuracy_groups_bars():
    names = [f"class {i}" for i in range(10)]
    fig = per_class_accuracy({"ReLU": np.full(10, 80.0), "Tanh": np.full(10, 70.0)}, names)
    ax = fig.axes[0]
    assert len(ax.patches) == 20
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ReLU", "Tanh"]
    with pytest.raises(UsageError, match="expected \\(10,\\)"):
        per_class_accuracy({"ReLU": np.zeros(9)}, names)


def test_save_figure_writes_a_png(study, tmp_path):
    runs, epochs, _ = study
    path = save_figure(loss_curves(runs, epochs, -1, 1), tmp_path / "deep" / "loss.png")
    assert path == tmp_path / "deep" / "loss.png"
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG")
    assert 1000 < len(data) < 200_000


def test_a_diverged_seed_drops_out_of_the_mean_and_band(study):
    runs, epochs, _ = study
    epochs = [dict(row) for row in epochs]
    for row in epochs:
        if row["run_id"] == "relu-2" and row["epoch"] == 3:
            row["train_loss"] = math.nan
    ax = loss_curves(runs, epochs, -1, 1).axes[0]
    # epoch 3 keeps seed 1 alone (2/3 + 0.1) and so has no band there
    assert ax.lines[0].get_ydata()[2] == pytest.approx(2 / 3 + 0.1)
    band_x = _bands(ax)[0].get_paths()[0].vertices[:, 0]
    assert band_x.max() < 3
