"""One validated experiment config: its defaults, and every value checked as it is applied.

An experiment is a grid. The plural keys (``activations``, ``ranges``, ``seeds``, ``lrs``,
``switches``) are its axes; every other key is shared by all runs. Each grid point is a
:class:`RunConfig`, the unit that is trained, stored and identified by hash. Reading the config
from files and presets, and writing it back, is :mod:`actrange.config_files`.
"""

import math
from dataclasses import dataclass, field, replace
from typing import Any

from actrange.activations import get_activation
from actrange.errors import UsageError

TRAIN_IMAGES = 60_000
MAX_EPOCHS = 10_000
MAX_SEED = 2**63 - 1


def format_number(value: float) -> str:
    """Compact text for a range bound or rate: 1.0 -> "1", 0.5 -> "0.5", -10.0 -> "-10"."""
    text = f"{float(value):g}"
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class PixelRange:
    """The interval that pixel/255 is mapped onto, linearly: [0, 1] -> [lo, hi]."""

    lo: float
    hi: float

    @classmethod
    def from_normalize(cls, mean: float, std: float) -> "PixelRange":
        """The range torchvision's Normalize((mean,), (std,)) gives after ToTensor."""
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise UsageError(f"normalize ({mean}, {std}) is not finite; give finite mean and std")
        if std <= 0:
            raise UsageError(f"normalize std must be > 0, got {std}")
        return cls((0.0 - mean) / std, (1.0 - mean) / std)

    @property
    def mean(self) -> float:
        """The Normalize mean that gives this range: (p - mean) / std maps 0 -> lo."""
        return -self.lo / (self.hi - self.lo)

    @property
    def std(self) -> float:
        """The Normalize std that gives this range."""
        return 1.0 / (self.hi - self.lo)

    @property
    def label(self) -> str:
        """Human-readable form, e.g. "[-1, 1]"."""
        return f"[{format_number(self.lo)}, {format_number(self.hi)}]"


@dataclass(frozen=True)
class Switch:
    """Change the activation to ``to`` from epoch ``epoch`` (1-based) onwards."""

    epoch: int
    to: str


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides one run's numbers."""

    activation: str
    range: PixelRange
    seed: int
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    train_subset: int
    switch: Switch | None = None
    record_values: int = 5000
    precision: str = "fp32"

    def activation_at(self, epoch: int) -> str:
        """The activation in force during ``epoch`` (1-based)."""
        if self.switch is not None and epoch >= self.switch.epoch:
            return self.switch.to
        return self.activation

    @property
    def label(self) -> str:
        """The activation schedule's name: "relu", or "tanh>relu@5" when it switches."""
        if self.switch is None:
            return self.activation
        return f"{self.activation}>{self.switch.to}@{self.switch.epoch}"

    def identity(self) -> dict[str, Any]:
        """The settings that change the run's numbers, as plain JSON-able values."""
        return {
            "activation": self.activation,
            "switch": None if self.switch is None else [self.switch.epoch, self.switch.to],
            "range": [self.range.lo, self.range.hi],
            "seed": self.seed,
            "lr": self.lr,
            "momentum": self.momentum,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "train_subset": self.train_subset,
            "record_values": self.record_values,
            "precision": self.precision,
        }


@dataclass(frozen=True)
class ExperimentConfig:
    """A grid of runs plus how to execute them. Defaults are the study as written."""

    name: str = "seed"
    activations: tuple[str, ...] = ("relu", "tanh")
    ranges: tuple[PixelRange, ...] = (PixelRange(-1.0, 1.0), PixelRange(-5.0, 5.0))
    seeds: tuple[int, ...] = (42,)
    lrs: tuple[float, ...] = (0.01,)
    switches: tuple[Switch | None, ...] = (None,)
    momentum: float = 0.5
    batch_size: int = 128
    epochs: int = 20
    train_subset: int = TRAIN_IMAGES
    record_values: int = 5000
    precision: str = "fp32"
    device: str = "auto"
    group_size: int = 0  # 0: chosen from the available memory
    workers: int = 1  # local training processes sharing the result directory
    checkpoint: bool = True
    accuracy_threshold: float = 80.0
    backend: str = "local"
    ray_address: str = ""
    ray_cpus_per_task: float = 1.0
    ray_gpus_per_task: float = 0.0
    mlflow: str = ""
    tensorboard: str = ""
    data: str = ""
    download: bool = True
    verify_data: bool = True  # False accepts other counts and checksums; formats are still checked
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def runs(self) -> list[RunConfig]:
        """Expand the grid; a switch to the run's own activation is the unswitched run."""
        planned: dict[RunConfig, None] = {}
        for rng in self.ranges:
            for activation in self.activations:
                for switch in self.switches:
                    if switch is not None and switch.to == activation:
                        switch = None
                    for lr in self.lrs:
                        for seed in self.seeds:
                            run = RunConfig(
                                activation=activation,
                                range=rng,
                                seed=seed,
                                lr=lr,
                                momentum=self.momentum,
                                batch_size=self.batch_size,
                                epochs=self.epochs,
                                train_subset=self.train_subset,
                                switch=switch,
                                record_values=self.record_values,
                                precision=self.precision,
                            )
                            planned[run] = None
        return list(planned)


# ---------------------------------------------------------------------------------------------
# parsing: raw TOML/CLI values -> validated fields

PRECISIONS = ("fp32", "tf32", "bf16")
BACKENDS = ("local", "ray")


def _fail(key: str, problem: str) -> UsageError:
    return UsageError(f"config key '{key}': {problem}")


def _as_int(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"expected an integer in {lo}..{hi}, got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _fail(key, f"expected an integer in {lo}..{hi}, got {value!r}")
    if not lo <= value <= hi:
        raise _fail(key, f"expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _as_float(key: str, value: Any, lo: float, hi: float, *, open_lo: bool = False) -> float:
    allowed = f"a finite number {'>' if open_lo else '>='} {lo:g} and <= {hi:g}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, f"expected {allowed}, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value > hi or value < lo or (open_lo and value == lo):
        raise _fail(key, f"expected {allowed}, got {value!r}")
    return value


def _as_str(key: str, value: Any, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(key, f"expected a string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise _fail(key, f"{value!r} is not allowed; allowed: {', '.join(allowed)}")
    return value


def _as_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}")
    return value


def _as_list(key: str, value: Any) -> list[Any]:
    items = value if isinstance(value, list | tuple) else [value]
    if not items:
        raise _fail(key, "must not be empty")
    return list(items)


def _parse_range(key: str, value: Any) -> PixelRange:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise _fail(key, f"expected [lo, hi] pairs, got {value!r}")
    lo, hi = (_as_float(key, v, -1e6, 1e6) for v in value)
    if not lo < hi:
        raise _fail(key, f"range [{lo:g}, {hi:g}] needs lo < hi")
    return PixelRange(lo, hi)


def _parse_normalize(key: str, value: Any) -> PixelRange:
    if not (isinstance(value, list | tuple) and len(value) == 2):
        raise _fail(key, f"expected [mean, std] pairs, got {value!r}")
    mean = _as_float(key, value[0], -1e6, 1e6)
    std = _as_float(key, value[1], 0.0, 1e6, open_lo=True)
    return PixelRange.from_normalize(mean, std)


def _parse_switch(key: str, value: Any) -> Switch | None:
    if value in ("none", None):
        return None
    if not isinstance(value, dict) or set(value) != {"epoch", "to"}:
        raise _fail(key, f'expected {{ epoch = N, to = "name" }} or "none", got {value!r}')
    epoch = _as_int(key, value["epoch"], 2, MAX_EPOCHS)
    return Switch(epoch, get_activation(_as_str(key, value["to"])).name)


def _unique(items: list[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _parse_axes(raw: dict[str, Any]) -> dict[str, Any]:
    """The grid axes, each a list in TOML (a single value is accepted too)."""
    parsed: dict[str, Any] = {}
    if "activations" in raw:
        names = [_as_str("activations", v) for v in _as_list("activations", raw["activations"])]
        parsed["activations"] = _unique([get_activation(n).name for n in names])
    if "ranges" in raw and "normalize" in raw:
        raise UsageError("config keys 'ranges' and 'normalize' both set; give one of them")
    if "ranges" in raw:
        parsed["ranges"] = _unique([_parse_range("ranges", v) for v in raw["ranges"] or [None]])
    if "normalize" in raw:
        pairs = raw["normalize"] or [None]
        parsed["ranges"] = _unique([_parse_normalize("normalize", v) for v in pairs])
    if "seeds" in raw:
        seeds = _as_list("seeds", raw["seeds"])
        parsed["seeds"] = _unique([_as_int("seeds", s, 0, MAX_SEED) for s in seeds])
    if "lrs" in raw:
        lrs = _as_list("lrs", raw["lrs"])
        parsed["lrs"] = _unique([_as_float("lrs", v, 0.0, 100.0, open_lo=True) for v in lrs])
    if "switches" in raw:
        switches = _as_list("switches", raw["switches"])
        parsed["switches"] = _unique([_parse_switch("switches", s) for s in switches])
    return parsed


_SCALARS = {
    "name": lambda k, v: _as_str(k, v),
    "momentum": lambda k, v: _as_float(k, v, 0.0, 0.999),
    "batch_size": lambda k, v: _as_int(k, v, 1, TRAIN_IMAGES),
    "epochs": lambda k, v: _as_int(k, v, 1, MAX_EPOCHS),
    "train_subset": lambda k, v: _as_int(k, v, 1, TRAIN_IMAGES),
    "record_values": lambda k, v: _as_int(k, v, 0, 1_000_000),
    "precision": lambda k, v: _as_str(k, v, PRECISIONS),
    "device": lambda k, v: _parse_device(k, v),
    "group_size": lambda k, v: _as_int(k, v, 0, 4096),
    "workers": lambda k, v: _as_int(k, v, 1, 64),
    "checkpoint": _as_bool,
    "accuracy_threshold": lambda k, v: _as_float(k, v, 0.0, 100.0),
    "backend": lambda k, v: _as_str(k, v, BACKENDS),
    "ray_address": lambda k, v: _as_str(k, v),
    "ray_cpus_per_task": lambda k, v: _as_float(k, v, 0.0, 1024.0),
    "ray_gpus_per_task": lambda k, v: _as_float(k, v, 0.0, 64.0),
    "mlflow": lambda k, v: _as_str(k, v),
    "tensorboard": lambda k, v: _as_str(k, v),
    "data": lambda k, v: _as_str(k, v),
    "download": _as_bool,
    "verify_data": _as_bool,
}
_AXES = ("activations", "ranges", "normalize", "seeds", "lrs", "switches")
ALLOWED_KEYS = tuple(sorted((*_SCALARS, *_AXES, "switch", "lr", "seed")))


def _parse_device(key: str, value: Any) -> str:
    text = _as_str(key, value)
    if text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise _fail(key, f"{text!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps")


def _singular_aliases(raw: dict[str, Any]) -> dict[str, Any]:
    """Accept `switch = {...}`, `lr = x`, `seed = n` as one-point axes."""
    aliased = dict(raw)
    for single, plural in (("switch", "switches"), ("lr", "lrs"), ("seed", "seeds")):
        if single in aliased:
            if plural in aliased:
                raise UsageError(f"config keys '{single}' and '{plural}' both set; give one")
            aliased[plural] = aliased.pop(single)
    return aliased


def apply_overrides(base: ExperimentConfig, raw: dict[str, Any]) -> ExperimentConfig:
    """Return ``base`` with the keys of ``raw`` (TOML-shaped values) parsed and checked.

    Raises:
        UsageError: an unknown key, or a value of the wrong type or out of range.
    """
    unknown = sorted(set(raw) - set(ALLOWED_KEYS))
    if unknown:
        raise UsageError(
            f"unknown config key '{unknown[0]}'; allowed keys: {', '.join(ALLOWED_KEYS)}"
        )
    raw = _singular_aliases(raw)
    updates = _parse_axes(raw)
    for key, value in raw.items():
        if key in _SCALARS:
            updates[key] = _SCALARS[key](key, value)
    config = replace(base, **updates)
    _check_consistency(config)
    return config


def _check_consistency(config: ExperimentConfig) -> None:
    """Cross-key rules that no single value can break."""
    for switch in config.switches:
        if switch is not None and switch.epoch > config.epochs:
            raise UsageError(
                f"switch at epoch {switch.epoch} never happens in a {config.epochs}-epoch run; "
                f"give an epoch in 2..{config.epochs}"
            )
    if config.workers > 1 and config.backend != "local":
        raise UsageError("workers > 1 is for the local backend; Ray places its own tasks")
    if config.workers > 1 and config.mlflow:
        raise UsageError("workers > 1 cannot log to MLflow yet: its store takes one writer")
