"""The rack's configuration: one TOML file, every value optional, every mistake explained.

Each table of the file fills one settings dataclass; a key the dataclass does not have, or a value of the wrong
type or out of range, stops the program with a message naming the file, the key and what would be right.
See ``deploy/rackwatch.example.toml`` for every key with its default.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from .analysis import AnalysisSettings
from .judge import JudgeSettings
from .reps import RepSettings
from .smoothing import OneEuroSettings


class ConfigError(ValueError):
    """The configuration is wrong; the message says where and how to fix it."""


@dataclass(frozen=True)
class RackSettings:
    id: str = "rack01"
    state_dir: str = "/var/lib/rackwatch"
    """Where the outbox and the lifter's settings are kept."""


@dataclass(frozen=True)
class ModelSettings:
    path: str = ""
    """Empty: $RACKWATCH_MODEL, then the project's models/ folder."""
    threads: int = 0
    """0: every core."""
    runtime: str = ""
    """Empty: ai_edge_litert if installed, else tflite_runtime."""


@dataclass(frozen=True)
class CameraSettings:
    width: int = 640
    height: int = 480
    """The frame size the Pi camera's ISP delivers: scaled in hardware, so it costs the CPU nothing."""
    fps: float = 15.0
    """Cap at what the model sustains (about 10 on a Pi 4, 20 on a Pi 5: see docs/performance.md)."""


@dataclass(frozen=True)
class Config:
    rack: RackSettings = field(default_factory=RackSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    extra: dict = field(default_factory=dict)
    """Tables owned by other parts (``mqtt``, ``panel``), validated by them."""


_OTHER_TABLES = ("mqtt", "panel", "dashboard")


def _build(cls: type, table: Any, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of settings, not {table!r}.")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where} has no setting {key!r}. Known settings: {', '.join(sorted(names))}.")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = _build(kind, value, f"{where}.{key}")
            continue
        wanted = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(kind)
        if wanted and (not isinstance(value, wanted) or (kind is not bool and isinstance(value, bool))):
            raise ConfigError(f"{where}.{key} must be {kind.__name__}, got {value!r}.")
        if kind in (int, float) and value < 0:
            raise ConfigError(f"{where}.{key} must not be negative, got {value!r}.")
        values[key] = float(value) if kind is float else value
    return cls(**values)


def _check(config: Config, where: str) -> None:
    reps, judge = config.analysis.reps, config.analysis.judge
    if not reps.end_depth < reps.start_depth <= reps.min_depth < 1:
        raise ConfigError(f"{where}: [analysis.reps] needs end_depth < start_depth <= min_depth < 1.")
    if not judge.minor_cave < judge.moderate_cave < judge.severe_cave:
        raise ConfigError(f"{where}: [analysis.judge] needs minor_cave < moderate_cave < severe_cave.")
    if not (config.camera.width >= 64 and config.camera.height >= 64 and 0 < config.camera.fps <= 120):
        raise ConfigError(f"{where}: [camera] needs width and height of at least 64 and fps between 0 and 120.")
    if not 0 < config.analysis.min_score < 1:
        raise ConfigError(f"{where}: [analysis] min_score must lie between 0 and 1.")


def load_config(path: str | Path | None) -> Config:
    """The configuration in ``path``, or the defaults when ``path`` is ``None``."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"No config file at {path}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from None
    extra = {key: data.pop(key) for key in _OTHER_TABLES if key in data}
    data.setdefault("analysis", {})
    data["analysis"] = {**data["analysis"]}
    config = _build(Config, data, str(path))
    config = dataclasses.replace(config, extra=extra)
    _check(config, str(path))
    return config


__all__ = ["Config", "ConfigError", "ModelSettings", "RackSettings", "load_config",
           "AnalysisSettings", "RepSettings", "JudgeSettings", "OneEuroSettings"]
