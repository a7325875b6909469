import math

import pytest

from actrange.columns import HIDDEN_LAYERS, LAYER_COLUMNS, RUN_COLUMNS
from actrange.errors import UsageError
from actrange.evidence import cells_at_range, evidence_sentences, group_cells

EPOCHS = (1, 2, 3)


def _run(run_id: str, activation: str, lo: float, accuracy: float, **extra) -> dict:
    row = dict.fromkeys(RUN_COLUMNS, 0)
    row.update(run_id=run_id, activation=activation, range_lo=lo, range_hi=-lo, lr=0.01)
    row.update(test_accuracy=accuracy, status="finished", switch_to="")
    row.update(extra)
    return row


def _layers(run_id: str, activation: str, overrides: dict[tuple[str, int], dict]) -> list[dict]:
    """Layer rows for three epochs: quiet defaults, then the (layer, epoch) overrides."""
    saturating = activation == "tanh"
    rows = []
    for epoch in EPOCHS:
        for layer in HIDDEN_LAYERS:
            row = dict.fromkeys(LAYER_COLUMNS, math.nan)
            row.update(run_id=run_id, epoch=epoch, layer=layer, activation=activation)
            row.update(grad_norm=1e-2, update_ratio=1e-3)
            if saturating:
                row["saturated_frac"] = 0.01
            else:
                row.update(dead_frac=0.0, zero_frac=0.3)
            row.update(overrides.get((layer, epoch), {}))
            rows.append(row)
    return rows


def _relu_narrow(run_id: str, dead: float, grad: float) -> list[dict]:
    # lin2 loses dead units over training; conv1 has the smallest gradient
    return _layers(
        run_id,
        "relu",
        {
            ("lin2", 1): {"dead_frac": dead},
            ("lin2", 3): {"dead_frac": 0.1},
            ("conv4", 1): {"dead_frac": 0.2},
            ("conv1", 1): {"grad_norm": grad},
        },
    )


def _tanh_wide(run_id: str, early: float, late: float) -> list[dict]:
    return _layers(
        run_id,
        "tanh",
        {("conv1", 1): {"saturated_frac": early}, ("conv1", 3): {"saturated_frac": late}},
    )


def _study() -> tuple[list[dict], list[dict]]:
    runs = [
        _run("rn1", "relu", -1, 10.0),
        _run("rn2", "relu", -1, 10.0),
        _run("rn3", "relu", -1, math.nan, status="diverged"),
        _run("rw1", "relu", -5, 85.0),
        _run("rw2", "relu", -5, 86.0),
        _run("tw1", "tanh", -5, 84.0),
        _run("tw2", "tanh", -5, 84.6),
    ]
    layers = [
        *_relu_narrow("rn1", 0.36, 2.0e-5),
        *_relu_narrow("rn2", 0.40, 2.2e-5),
        *_layers("rw1", "relu", {("conv1", 1): {"grad_norm": 2.1e-3, "zero_frac": 0.5}}),
        *_layers("rw2", "relu", {("conv1", 1): {"grad_norm": 2.1e-3, "zero_frac": 0.5}}),
        *_tanh_wide("tw1", 0.60, 0.46),
        *_tanh_wide("tw2", 0.62, 0.48),
    ]
    return runs, layers


def test_sentences_carry_the_numbers_of_each_cell():
    runs, layers = _study()
    relu_narrow, relu_wide, tanh_wide = evidence_sentences(runs, layers)
    assert relu_narrow == (
        "At [-1, 1], ReLU finished at 10.0% (n=2, 1 diverged); at epoch 1, 38% of lin2 units "
        "were dead, falling to 10% by epoch 3; the smallest gradient norm, at conv1, was "
        "2.1e-05, 100× smaller than at [-5, 5]."
    )
    assert relu_wide == (
        "At [-5, 5], ReLU finished at 85.5% (n=2); at epoch 1, no layer had dead units and at "
        "most 50% of pre-activations were <= 0 (in conv1); the smallest gradient norm, at conv1, "
        "was 0.0021, 100× larger than at [-1, 1]."
    )
    assert tanh_wide == (
        "At [-5, 5], Tanh finished at 84.3% (n=2); at epoch 1, 61% of conv1 outputs were "
        "saturated (|tanh| > 0.95), falling to 47% by epoch 3; the smallest gradient norm, at "
        "conv1, was 0.01."
    )


def test_a_later_early_epoch_reads_other_rows():
    runs, layers = _study()
    tanh_wide = evidence_sentences(runs, layers, early_epoch=3)[2]
    assert "at epoch 3, 47% of conv1 outputs were saturated" in tanh_wide
    assert "by epoch" not in tanh_wide


def test_similar_gradients_are_called_close():
    runs = [_run("a", "tanh", -1, 80.0), _run("b", "tanh", -5, 81.0)]
    layers = [*_layers("a", "tanh", {}), *_layers("b", "tanh", {("conv2", 1): {"grad_norm": 5e-3}})]
    narrow, wide = evidence_sentences(runs, layers)
    assert "still 1% at epoch 3" in narrow
    assert "the smallest gradient norm, at conv1, was 0.01, close to the 0.01 at [-5, 5]" in narrow
    assert "at conv2, was 0.005, 2.0× smaller than at [-1, 1]" in wide


def test_switch_sigmoid_learning_rates_and_missing_layers():
    runs = [
        _run("s", "tanh>relu@2", -1, 70.0, switch_epoch=2, switch_to="relu"),
        _run("g1", "sigmoid", -1, 60.0),
        _run("g2", "sigmoid", -1, 62.0, lr=0.1),
    ]
    layers = [row for row in _layers("s", "tanh", {}) if row["epoch"] == 1]
    layers += _layers("g1", "sigmoid", {("lin1", 1): {"saturated_frac": 0.3}})
    slow, fast, switched = evidence_sentences(runs, layers)
    assert switched.startswith(
        "At [-1, 1], Tanh→ReLU@2 lr=0.01 finished at 70.0% (n=1), switching "
    )
    assert "switching to ReLU at epoch 2; at epoch 1, 1% of conv1 outputs" in switched
    assert "(sigmoid < 0.025 or > 0.975)" in slow
    assert "30% of lin1 outputs" in slow
    assert fast == (
        "At [-1, 1], Sigmoid lr=0.1 finished at 62.0% (n=1); "
        "no layer statistics were recorded at epoch 1."
    )


def test_a_cell_without_accuracy_says_so():
    runs = [_run("x", "relu", -1, math.nan, status="failed")]
    (sentence,) = evidence_sentences(runs, [])
    assert sentence.startswith("At [-1, 1], ReLU has no test accuracy (n=0)")


def test_early_epoch_must_be_positive():
    runs, layers = _study()
    with pytest.raises(UsageError, match="early epoch"):
        evidence_sentences(runs, layers, early_epoch=0)


def test_cells_group_seeds_and_order_by_range():
    runs, _ = _study()
    cells = group_cells(runs)
    assert [(c.range_label, c.activation, len(c.run_ids)) for c in cells] == [
        ("[-1, 1]", "relu", 3),
        ("[-5, 5]", "relu", 2),
        ("[-5, 5]", "tanh", 2),
    ]
    assert [c.activation for c in cells_at_range(runs, -5, 5)] == ["relu", "tanh"]
    with pytest.raises(UsageError, match=r"\[-2, 2\]; ranges present: \[-1, 1\], \[-5, 5\]"):
        cells_at_range(runs, -2, 2)
