"""The rack's configuration: one TOML file, every value optional, every mistake explained.

Each table of the file fills one settings dataclass; a key the dataclass does not have, or a value of the wrong
type or out of range, stops the program with a message naming the file, the key and what would be right.
See ``deploy/rackwatch.example.toml`` for every key with its default.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints

from .analysis import AnalysisSettings
from .camera import CAMERA_FPS, CAMERA_SIZE
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
    width: int = CAMERA_SIZE[0]
    height: int = CAMERA_SIZE[1]
    """The frame size the Pi camera's ISP delivers: scaled in hardware, so it costs the CPU nothing. The model
    sees 192×192 pixels of the lifter; 320×240 gives it that when the lifter fills at least two thirds of the
    frame's height. Raise it (e.g. 640×480) for a camera further away: see docs/performance.md."""
    fps: float = CAMERA_FPS
    """The most frames a second to take. At start the model is timed, and the camera is capped lower if the
    model cannot keep up (about 9 fps on a Pi 4, 20 on a Pi 5: see docs/performance.md)."""


@dataclass(frozen=True)
class Config:
    rack: RackSettings = field(default_factory=RackSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    camera: CameraSettings = field(default_factory=CameraSettings)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    extra: dict = field(default_factory=dict)
    """Tables owned by other parts (``mqtt``, ``panel``), validated by them."""


_OTHER_TABLES = ("mqtt", "panel", "dashboard")


_WORDS = {float: "a number", int: "a whole number", str: "text", bool: "true or false"}


def settings_from_table(cls: type, table: Any, where: str, *, fixed: dict[str, Any] | None = None) -> Any:
    """A settings dataclass from one table of the config file, every key checked.

    ``fixed`` holds fields the caller sets itself (the table may not); a key the dataclass does not have, a value
    of the wrong type, a negative number, or a value the dataclass itself refuses is a :class:`ConfigError`
    naming ``where`` and the key.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of settings, not {table!r}.")
    fixed = fixed or {}
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - set(fixed)
    values = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where} has no setting {key!r}. Known settings: {', '.join(sorted(names))}.")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            values[key] = settings_from_table(kind, value, f"{where}.{key}")
            continue
        if isinstance(kind, types.UnionType):   # "str | None": TOML has no null, so the value is the other type
            kind = next(k for k in get_args(kind) if k is not type(None))
        wanted = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}.get(kind)
        if wanted and (not isinstance(value, wanted) or (kind is not bool and isinstance(value, bool))):
            raise ConfigError(f"{where} {key} must be {_WORDS[kind]}, not {value!r}.")
        if kind in (int, float) and value < 0:
            raise ConfigError(f"{where} {key} must not be negative, not {value!r}.")
        values[key] = float(value) if kind is float else value
    try:
        return cls(**fixed, **values)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
    config = settings_from_table(Config, data, str(path))
    config = dataclasses.replace(config, extra=extra)
    _check(config, str(path))
    return config


__all__ = ["Config", "ConfigError", "ModelSettings", "RackSettings", "load_config",
           "AnalysisSettings", "RepSettings", "JudgeSettings", "OneEuroSettings"]
