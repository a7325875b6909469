"""The batched engine against the plain model trained alone, and its invariants."""

import math

import pytest
import torch
import torch.nn.functional as F

from actrange import engine
from actrange.activations import ACTIVATIONS
from actrange.config import PixelRange, RunConfig, Switch
from actrange.devicedata import DeviceData
from actrange.engine import derive_seed, train_group
from actrange.grouped import activation_plan, group_forward, stack_parameters, to_group_layout
from actrange.model import StudyCNN, initial_parameters
from tests.helpers import synthetic_dataset

CPU = torch.device("cpu")


def make_run(activation="relu", lo=-1.0, hi=1.0, seed=0, lr=0.05, epochs=2, switch=None):
    return RunConfig(
        activation=activation,
        range=PixelRange(lo, hi),
        seed=seed,
        lr=lr,
        momentum=0.5,
        batch_size=16,
        epochs=epochs,
        train_subset=60_000,
        switch=switch,
        record_values=50,
    )


def train_alone_reference(run: RunConfig, data: DeviceData) -> list[float]:
    """The plain nn.Module and torch.optim.SGD with the same seed and shuffle order."""
    model = StudyCNN(run.activation)
    model.load_state_dict(initial_parameters(run.seed))
    model.to(data.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=run.lr, momentum=run.momentum)
    shuffle = torch.Generator().manual_seed(derive_seed(run.seed, "shuffle"))
    index = data.range_indices([run.range])[0]
    losses = []
    for epoch in range(1, run.epochs + 1):
        model.switch_activation(run.activation_at(epoch))
        order = torch.randperm(data.train_labels.shape[0], generator=shuffle)
        batch_losses = []
        for start in range(0, order.shape[0], run.batch_size):
            batch = order[start : start + run.batch_size]
            images = data.train_images[index, batch][:, None]  # [b, 1, 28, 28]
            loss = F.cross_entropy(model(images), data.train_labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        losses.append(sum(batch_losses) / len(batch_losses))
    return losses


def collect(runs, data):
    reports = []
    train_group(runs, data, on_epoch=lambda report, state: reports.append(report))
    return reports


@pytest.fixture(scope="module")
def data():
    return DeviceData(synthetic_dataset(n_train=80, n_test=40), CPU)


def assert_group_matches_alone(runs: list[RunConfig], data: DeviceData, rel: float) -> None:
    """Each member's per-epoch training loss in the group equals its loss trained alone."""
    reports = collect(runs, data)
    for g, run in enumerate(runs):
        alone = train_alone_reference(run, data)
        grouped = [r.train_loss[g] for r in reports]
        assert grouped == pytest.approx(alone, rel=rel, abs=1e-5)


def test_group_matches_each_model_trained_alone(data):
    runs = [
        make_run("relu", -1, 1, seed=1),
        make_run("tanh", -5, 5, seed=2, lr=0.02),
        make_run("tanh", -1, 1, seed=3, switch=Switch(2, "relu")),
        make_run("relu", 0, 1, seed=4),
    ]
    assert_group_matches_alone(runs, data, rel=1e-4)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_monotone_flag_says_whether_the_function_never_decreases(name):
    # the engine pools before a monotone activation, so a wrong flag would change results
    grid = torch.linspace(-8, 8, 20_001)
    values = ACTIVATIONS[name].fn(grid)
    never_decreases = bool((values[1:] >= values[:-1]).all())
    assert ACTIVATIONS[name].monotone == never_decreases


def test_group_forward_and_gradients_match_the_plain_model_for_every_activation():
    names = sorted(ACTIVATIONS)  # monotone and not, so both pooling orders are exercised
    per_model = [initial_parameters(seed) for seed in range(len(names))]
    images = torch.randn(len(names), 6, 28, 28, generator=torch.Generator().manual_seed(0))
    params = {k: v.requires_grad_(True) for k, v in stack_parameters(per_model).items()}
    logits = group_forward(params, to_group_layout(images), activation_plan(names))
    logits.square().sum().backward()
    for g, name in enumerate(names):
        model = StudyCNN(name)
        model.load_state_dict(per_model[g])
        alone = model(images[g][:, None])
        alone.square().sum().backward()
        torch.testing.assert_close(logits[g], alone, rtol=1e-5, atol=1e-5)
        conv1 = params["conv1.weight"].grad[g * 8 : (g + 1) * 8]
        torch.testing.assert_close(conv1, model.conv1.weight.grad, rtol=1e-4, atol=1e-5)


def test_evaluation_does_not_depend_on_its_chunk_size(data, monkeypatch):
    runs = [make_run("relu", seed=1), make_run("tanh", -5, 5, seed=2)]
    state = engine.initial_state(runs, CPU)
    range_index = data.range_indices([r.range for r in runs])
    plan = activation_plan(["relu", "tanh"])
    whole = engine.evaluate(state, data, range_index, plan, confusion=True)
    monkeypatch.setitem(engine.EVAL_CHUNK, "cpu", 7)  # 40 test images: six chunks, one short
    chunked = engine.evaluate(state, data, range_index, plan, confusion=True)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-6, atol=0)
    assert torch.equal(chunked[1], whole[1]) and torch.equal(chunked[2], whole[2])
    assert whole[2].sum() == 2 * 40


def test_member_numbers_do_not_depend_on_the_rest_of_the_group(data):
    run = make_run("tanh", -5, 5, seed=7)
    alone = collect([run], data)
    together = collect([make_run("relu", seed=8), run, make_run("gelu", seed=9)], data)
    for a, t in zip(alone, together, strict=True):
        assert t.train_loss[1] == pytest.approx(a.train_loss[0], rel=1e-5)
        assert t.test_accuracy[1] == pytest.approx(a.test_accuracy[0], abs=1e-9)


def test_nan_in_one_model_does_not_reach_the_others(data):
    runs = [make_run("relu", seed=1), make_run("relu", seed=2)]
    params = stack_parameters([initial_parameters(1), initial_parameters(2)])
    images = to_group_layout(data.train_images[data.range_indices([runs[0].range])[[0, 0]], :4])
    clean = group_forward(params, images, activation_plan(["relu", "relu"]))
    params["conv1.weight"][:8] = float("nan")  # model 0's conv1
    poisoned = group_forward(params, images, activation_plan(["relu", "relu"]))
    assert torch.isnan(poisoned[0]).all()
    assert torch.equal(poisoned[1], clean[1])


def test_divergence_is_recorded_with_its_epoch(data):
    runs = [make_run("relu", -10, 10, seed=1, lr=50.0), make_run("relu", seed=2)]
    reports = collect(runs, data)
    assert reports[-1].diverged_epoch[0] >= 1
    assert reports[-1].diverged_epoch[1] == 0
    assert math.isfinite(reports[-1].train_loss[1])


def test_same_seed_gives_bitwise_identical_numbers(data):
    first = collect([make_run("tanh", seed=5)], data)
    second = collect([make_run("tanh", seed=5)], data)
    assert [r.train_loss for r in first] == [r.train_loss for r in second]
    # NaN marks a statistic that does not apply; compare it as text so NaN equals NaN
    assert repr([r.layer_stats for r in first]) == repr([r.layer_stats for r in second])


def test_switch_changes_the_activation_at_exactly_that_epoch(data):
    run = make_run("tanh", epochs=3, switch=Switch(2, "relu"))
    reports = collect([run], data)
    assert [r.activations[0] for r in reports] == ["tanh", "relu", "relu"]


def test_a_switched_run_is_the_unswitched_one_until_the_switch(data):
    plain = collect([make_run("tanh", seed=3, epochs=3)], data)
    switched = collect([make_run("tanh", seed=3, epochs=3, switch=Switch(3, "relu"))], data)
    for epoch in (0, 1):
        assert switched[epoch].train_loss == plain[epoch].train_loss
        assert repr(switched[epoch].layer_stats) == repr(plain[epoch].layer_stats)
    assert switched[2].train_loss != plain[2].train_loss
    assert math.isnan(plain[2].layer_stats[0]["conv1"]["dead_frac"])
    assert not math.isnan(switched[2].layer_stats[0]["conv1"]["dead_frac"])


def test_bf16_autocast_stays_close_to_fp32(data):
    fp32 = collect([make_run("tanh", seed=4)], data)
    bf16_run = RunConfig(**{**make_run("tanh", seed=4).__dict__, "precision": "bf16"})
    bf16 = collect([bf16_run], data)
    for a, b in zip(fp32, bf16, strict=True):
        assert b.train_loss[0] == pytest.approx(a.train_loss[0], rel=0.02)


def test_under_bf16_autocast_conv1_stays_fp32_and_the_rest_is_bf16():
    params = stack_parameters([initial_parameters(seed) for seed in (0, 1)])
    images = to_group_layout(torch.randn(2, 3, 28, 28))  # [B=3, G=2, 28, 28]
    record: dict[str, torch.Tensor] = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = group_forward(params, images, activation_plan(["relu", "tanh"]), record)
    assert record["conv1"].dtype == torch.float32
    assert {record[layer].dtype for layer in ("conv2", "conv5", "lin1", "lin2")} == {torch.bfloat16}
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 3, 10)

    # conv1 under autocast computes exactly what it computes without it
    plain: dict[str, torch.Tensor] = {}
    group_forward(params, images, activation_plan(["relu", "tanh"]), plain)
    assert torch.equal(record["conv1"], plain["conv1"])
