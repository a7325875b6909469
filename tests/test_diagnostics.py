import math

import pytest
import torch

from actrange.activations import get_activation
from actrange.diagnostics import layer_statistics, sample_values, weight_step_statistics

RELU = get_activation("relu")
TANH = get_activation("tanh")
SIGMOID = get_activation("sigmoid")


def _value(stats: dict[str, torch.Tensor], name: str) -> float:
    assert stats[name].shape == (1,)
    assert stats[name].dtype == torch.float32
    return stats[name].item()


def test_linear_layer_statistics_by_hand():
    # one model, 2 images, 2 units; unit 0 is <= 0 for both images, so it is dead
    pre = torch.tensor([[[-1.0, 2.0], [0.0, 4.0]]])  # [G=1, B=2, U=2]
    stats = layer_statistics(pre, RELU)
    assert _value(stats, "mean") == pytest.approx(1.25)
    # population std: deviations -2.25, 0.75, -1.25, 2.75 -> mean square 14.75 / 4
    assert _value(stats, "std") == pytest.approx(math.sqrt(3.6875))
    # sorted -1, 0, 2, 4; linear interpolation at q * 3
    assert _value(stats, "p02") == pytest.approx(-1.0 + 0.06 * 1.0)
    assert _value(stats, "p25") == pytest.approx(-0.25)
    assert _value(stats, "p50") == pytest.approx(1.0)
    assert _value(stats, "p75") == pytest.approx(2.5)
    assert _value(stats, "p98") == pytest.approx(2.0 + 0.94 * 2.0)
    assert _value(stats, "zero_frac") == pytest.approx(0.5)
    assert _value(stats, "dead_frac") == pytest.approx(0.5)
    assert math.isnan(_value(stats, "saturated_frac"))


def test_percentiles_match_torch_quantile():
    pre = torch.randn(3, 4, 5, 6, 6, generator=torch.Generator().manual_seed(1))
    stats = layer_statistics(pre, TANH)
    levels = torch.tensor([0.02, 0.25, 0.5, 0.75, 0.98])
    expected = torch.quantile(pre.flatten(1), levels, dim=1)  # [5, G]
    for name, row in zip(["p02", "p25", "p50", "p75", "p98"], expected, strict=True):
        torch.testing.assert_close(stats[name], row)


def test_dead_unit_needs_every_image_and_position():
    # [G=1, B=2, U=2, H=1, W=2]: unit 0 is <= 0 everywhere; unit 1 is positive at one position only
    pre = torch.tensor([[[[[-1.0, 0.0]], [[-3.0, -2.0]]], [[[-0.5, -4.0]], [[-1.0, 0.1]]]]])
    stats = layer_statistics(pre, RELU)
    assert _value(stats, "dead_frac") == pytest.approx(0.5)
    assert _value(stats, "zero_frac") == pytest.approx(7 / 8)


def test_tanh_saturation_threshold():
    # tanh(2) = 0.964 and tanh(-3) = -0.995 count; tanh(1.5) = 0.905 and tanh(0) do not
    pre = torch.tensor([[[2.0, 1.5], [-3.0, 0.0]]])  # [1, 2, 2]
    stats = layer_statistics(pre, TANH)
    assert _value(stats, "saturated_frac") == pytest.approx(0.5)
    assert math.isnan(_value(stats, "zero_frac"))
    assert math.isnan(_value(stats, "dead_frac"))


def test_sigmoid_saturation_uses_its_own_bounds():
    # sigmoid(4) = 0.982 and sigmoid(-4) = 0.018 count; sigmoid(3) = 0.953 and sigmoid(-3) do not
    pre = torch.tensor([[[4.0, -4.0], [3.0, -3.0]]])
    stats = layer_statistics(pre, SIGMOID)
    assert _value(stats, "saturated_frac") == pytest.approx(0.5)


def test_each_model_gets_its_own_numbers():
    model_a = [[[1.0, 2.0], [3.0, 4.0]]]  # all positive: nothing dead
    model_b = [[[-1.0, -2.0], [-3.0, 5.0]]]  # unit 0 dead, 3 of 4 values <= 0
    pre = torch.tensor(model_a + model_b)  # [G=2, B=2, U=2]
    stats = layer_statistics(pre, RELU)
    for name in ("mean", "std", "p50", "zero_frac", "dead_frac"):
        assert stats[name].shape == (2,)
    torch.testing.assert_close(stats["mean"], torch.tensor([2.5, -0.25]))
    torch.testing.assert_close(stats["zero_frac"], torch.tensor([0.0, 0.75]))
    torch.testing.assert_close(stats["dead_frac"], torch.tensor([0.0, 0.5]))
    torch.testing.assert_close(stats["p50"], torch.tensor([2.5, -1.5]))


def test_half_precision_input_gives_float32():
    stats = layer_statistics(torch.ones(2, 3, 4, dtype=torch.float16), RELU)
    assert all(value.dtype == torch.float32 for value in stats.values())


def test_layer_statistics_rejects_missing_dimensions():
    with pytest.raises(ValueError, match="G, B, U"):
        layer_statistics(torch.ones(2, 3), RELU)


def test_weight_step_statistics_by_hand():
    before = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])  # [G=2, 1, 2], norms 5 and 1
    after = torch.tensor([[[3.0, 3.0]], [[0.0, 0.0]]])  # steps of norm 1 and 1
    grad = torch.tensor([[[0.0, 2.0]], [[6.0, 8.0]]])  # norms 2 and 10
    stats = weight_step_statistics(before, after, grad)
    torch.testing.assert_close(stats["grad_norm"], torch.tensor([2.0, 10.0]))
    torch.testing.assert_close(stats["update_ratio"], torch.tensor([0.2, 1.0]))


def test_weight_step_statistics_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        weight_step_statistics(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 4))


def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(seed) for seed in seeds]


def test_sample_is_reproducible_per_seed():
    pre = torch.arange(2 * 10_000, dtype=torch.float32).reshape(2, 100, 100)
    first = sample_values(pre, 50, _generators(1, 2))
    again = sample_values(pre, 50, _generators(1, 2))
    other = sample_values(pre, 50, _generators(3, 2))
    assert first.shape == (2, 50)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first[0], other[0])
    # model 1 depends on its own generator only
    torch.testing.assert_close(first[1], other[1])


def test_sample_draws_without_replacement_from_the_models_own_values():
    pre = torch.arange(2 * 1000, dtype=torch.float32).reshape(2, 10, 100)
    for k in (10, 400, 600):  # below and above half of n take different paths
        sample = sample_values(pre, k, _generators(5, 6))
        assert sample.shape == (2, k)
        for g in range(2):
            assert sample[g].unique().numel() == k
            assert sample[g].min() >= 1000 * g
            assert sample[g].max() < 1000 * (g + 1)


def test_sample_with_k_beyond_n_keeps_every_value():
    pre = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])  # n = 4
    sample = sample_values(pre, 5000, _generators(0))
    assert sample.shape == (1, 4)
    assert sorted(sample[0].tolist()) == [1.0, 2.0, 3.0, 4.0]


def test_sample_is_roughly_uniform():
    # each of 100 values should be drawn about 10 times in 100 draws of 10 without replacement
    pre = torch.arange(100, dtype=torch.float32).reshape(1, 1, 100)
    counts = torch.zeros(100)
    generator = torch.Generator().manual_seed(0)
    for _ in range(100):
        counts[sample_values(pre, 10, [generator])[0].long()] += 1
    assert counts.sum() == 1000
    assert counts.min() >= 1
    assert counts.max() <= 25


def test_sample_rejects_bad_arguments():
    pre = torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match="one generator per model"):
        sample_values(pre, 5, _generators(0))
    with pytest.raises(ValueError, match="at least 1"):
        sample_values(pre, 0, _generators(0, 1))
