"""Experiment configs as files: TOML read and written, the shipped presets, and resolution.

An experiment is resolved from the defaults, then a preset or a TOML file, then the command
line's overrides; the resolved config is written back as TOML that reads in to the same value.
"""

import tomllib
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

from actrange.config import ExperimentConfig, PixelRange, Switch, apply_overrides
from actrange.errors import UsageError


def load_toml(path: Path) -> dict[str, Any]:
    """Read an experiment file; a missing or malformed file is a UsageError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"experiment file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"experiment file {path} cannot be read: {error}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"experiment file {path} is not valid TOML: {error}") from None


def preset_names() -> list[str]:
    """Names of the presets that ship with the package."""
    folder = resources.files("actrange") / "presets"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A preset by name (``seed``, ``replicate``, ...) or a path to a TOML file."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return load_toml(Path(name_or_path))
    if name_or_path not in preset_names():
        allowed = ", ".join(preset_names())
        raise UsageError(f"preset {name_or_path!r} is unknown; allowed: {allowed}, or a .toml path")
    text = (resources.files("actrange") / "presets" / f"{name_or_path}.toml").read_text()
    return tomllib.loads(text)


def resolve(preset: str | None, overrides: dict[str, Any]) -> ExperimentConfig:
    """Defaults, then the preset or file, then the command line's overrides."""
    config = ExperimentConfig()
    if preset is not None:
        config = apply_overrides(config, load_preset(preset))
    return apply_overrides(config, overrides)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, PixelRange):
        return f"[{value.lo!r}, {value.hi!r}]"
    if isinstance(value, Switch):
        return f'{{ epoch = {value.epoch}, to = "{value.to}" }}'
    if value is None:
        return '"none"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def to_toml(config: ExperimentConfig) -> str:
    """The resolved config as TOML that :func:`apply_overrides` reads back to the same value."""
    lines = [
        f"{f.name} = {_toml_value(getattr(config, f.name))}"
        for f in fields(config)
        if f.name != "extra"
    ]
    return "\n".join(lines) + "\n"
