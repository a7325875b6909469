"""The one validated config: grid expansion, presets, overrides, round trip, bad values."""

import math

import pytest

from actrange.config import ExperimentConfig, PixelRange, Switch, apply_overrides
from actrange.config_files import preset_names, resolve, to_toml
from actrange.errors import UsageError


def test_defaults_are_the_study_as_written():
    runs = ExperimentConfig().runs()
    assert len(runs) == 4
    assert {(r.activation, r.range.lo, r.range.hi) for r in runs} == {
        ("relu", -1, 1),
        ("relu", -5, 5),
        ("tanh", -1, 1),
        ("tanh", -5, 5),
    }
    run = runs[0]
    assert (run.seed, run.lr, run.momentum, run.batch_size, run.epochs) == (42, 0.01, 0.5, 128, 20)


def test_normalize_pairs_are_the_studys_ranges():
    assert PixelRange.from_normalize(0.5, 0.5) == PixelRange(-1.0, 1.0)
    assert PixelRange.from_normalize(0.5, 0.1) == PixelRange(-5.0, 5.0)
    assert PixelRange(-5, 5).mean == 0.5 and PixelRange(-5, 5).std == pytest.approx(0.1)
    config = apply_overrides(ExperimentConfig(), {"normalize": [[0.5, 0.5], [0.5, 0.1]]})
    assert config.ranges == (PixelRange(-1.0, 1.0), PixelRange(-5.0, 5.0))


def test_presets_have_the_documented_sizes():
    sizes = {name: len(resolve(name, {}).runs()) for name in preset_names()}
    assert sizes == {
        "seed": 4,
        "replicate": 40,
        "ranges": 60,
        "activations": 80,
        "lr": 48,
        "switch": 40,
    }


def test_switch_to_the_same_activation_is_the_unswitched_run():
    config = resolve("switch", {"seeds": [0]})
    labels = sorted({r.label for r in config.runs()})
    assert labels == ["relu", "relu>tanh@5", "tanh", "tanh>relu@5"]
    run = next(r for r in config.runs() if r.label == "tanh>relu@5")
    assert [run.activation_at(e) for e in (4, 5, 20)] == ["tanh", "relu", "relu"]


def test_overrides_beat_the_preset():
    config = resolve("replicate", {"seeds": [1, 2], "epochs": 3, "train_subset": 500})
    assert (config.seeds, config.epochs, config.train_subset) == ((1, 2), 3, 500)
    assert len(config.runs()) == 8


def test_resolved_config_round_trips_through_toml():
    import tomllib

    config = resolve("switch", {"lrs": [0.003, 0.1], "seeds": [7]})
    again = apply_overrides(ExperimentConfig(), tomllib.loads(to_toml(config)))
    assert again == config
    assert again.switches == (None, Switch(5, "relu"), Switch(5, "tanh"))


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"activations": ["relux"]}, "activation 'relux' is unknown; allowed:"),
        ({"ranges": [[1, -1]]}, "needs lo < hi"),
        ({"ranges": [[2, 2]]}, "needs lo < hi"),
        ({"ranges": [[-math.inf, 1]]}, "ranges"),
        ({"ranges": [[math.nan, 1]]}, "ranges"),
        ({"normalize": [[0.5, 0.0]]}, "normalize"),
        ({"normalize": [[0.5, -0.1]]}, "normalize"),
        ({"epochs": 0}, "'epochs'"),
        ({"epochs": 1e30}, "'epochs'"),
        ({"epochs": 2.5}, "'epochs'"),
        ({"batch_size": 0}, "'batch_size'"),
        ({"lrs": [0]}, "'lrs'"),
        ({"lrs": [-0.1]}, "'lrs'"),
        ({"lrs": [math.nan]}, "'lrs'"),
        ({"lrs": [1e300]}, "'lrs'"),
        ({"momentum": 1.5}, "'momentum'"),
        ({"seeds": [-1]}, "'seeds'"),
        ({"seeds": [True]}, "'seeds'"),
        ({"device": "gpu"}, "not a device"),
        ({"precision": "fp8"}, "allowed: fp32, tf32, bf16"),
        ({"learning_rate": 0.1}, "unknown config key 'learning_rate'"),
        ({"switches": [{"epoch": 5}]}, "switches"),
        ({"switches": [{"epoch": 25, "to": "relu"}]}, "never happens"),
        ({"ranges": [[-1, 1]], "normalize": [[0.5, 0.5]]}, "both set"),
        ({"activations": []}, "must not be empty"),
    ],
)
def test_bad_values_name_the_problem(raw, words):
    with pytest.raises(UsageError, match=None) as caught:
        apply_overrides(ExperimentConfig(), raw)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(UsageError, match="preset 'nope' is unknown; allowed: activations"):
        resolve("nope", {})
