"""The rack's configuration: one TOML file, every value optional, the whole of it checked when it is loaded.

The file fills one typed tree, :class:`Config`, and every part of the rack reads its own branch of it::

    [rack]                 RackSettings          (here)
    [model]                ModelSettings         (rackwatch.pose)
    [camera]               CameraSettings        (rackwatch.camera)
    [aim]                  AimSettings           (rackwatch.aim)
    [analysis]             AnalysisSettings      (rackwatch.analysis)
      [analysis.reps]        RepSettings           (rackwatch.reps)
      [analysis.judge]       JudgeSettings         (rackwatch.judge)
      [analysis.smoothing]   OneEuroSettings       (rackwatch.smoothing)
    [mqtt]                 MqttSettings          (rackwatch.mqtt)
    [panel]                PanelSettings         (rackwatch.panel), with [panel.pins] and [panel.timing]

Each settings class lives beside the code that uses it and declares its defaults, its ranges and the rules
between its fields (see :mod:`rackwatch.settings`). A key the tree does not have, a value of the wrong type,
out of range, ``nan`` or ``inf``, or a table written as a single value stops the program before anything
starts, with one line per problem naming the file, the table and the key, and saying what would be right.
See ``deploy/rackwatch.example.toml`` for every key with its default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from pydantic import Field, ValidationError

from .aim import AimSettings
from .analysis import AnalysisSettings
from .camera import CameraSettings
from .judge import JudgeSettings
from .mqtt import MqttSettings, RackId
from .panel import PanelSettings
from .pose import ModelSettings
from .reps import RepSettings
from .settings import ConfigError, Settings, problems
from .smoothing import OneEuroSettings


class RackSettings(Settings):
    """The ``[rack]`` table: who this rack is and where it keeps its files."""

    id: RackId = "rack01"
    """One MQTT topic level and the rack's broker username."""
    state_dir: str = Field("/var/lib/rackwatch", min_length=1)
    """Where the outbox and the lifter's settings are kept."""


class Config(Settings):
    """The whole config file."""

    rack: RackSettings = RackSettings()
    model: ModelSettings = ModelSettings()
    camera: CameraSettings = CameraSettings()
    aim: AimSettings = AimSettings()
    analysis: AnalysisSettings = AnalysisSettings()
    mqtt: MqttSettings = MqttSettings()
    panel: PanelSettings | None = None
    """``None`` without a ``[panel]`` table: no panel is fitted (``rackwatch run --virtual-panel`` uses the
    defaults then)."""


_GONE = {
    "dashboard": "there is no [dashboard] table any more: the dashboard takes its own command-line flags "
                 "(rackwatch dashboard --help); remove the table from this file.",
}
"""Tables the file once had, and what to do instead."""


def load_config(path: str | Path | None) -> Config:
    """The configuration in ``path``, or the defaults when ``path`` is ``None``; :class:`ConfigError` if wrong."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"No config file at {path}.") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file: give the path of the .toml file.") from None
    except OSError as exc:
        raise ConfigError(f"The config file {path} cannot be read ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text file (byte {exc.start} is not UTF-8): give the rack's TOML "
                          "config file, e.g. a copy of deploy/rackwatch.example.toml.") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}.") from None
    return config_from_data(data, str(path))


def config_from_data(data: dict, where: str) -> Config:
    """The configuration from a parsed TOML document; ``where`` (the file's name) starts every error line."""
    lines = [_GONE[table] for table in _GONE if table in data]
    data = {table: value for table, value in data.items() if table not in _GONE}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        lines += problems(exc, Config)
    if lines:
        raise ConfigError("\n".join(f"{where}: {line}" for line in lines))
    return config


__all__ = ["Config", "ConfigError", "ModelSettings", "RackSettings", "CameraSettings", "load_config", "AimSettings",
           "config_from_data", "AnalysisSettings", "RepSettings", "JudgeSettings", "OneEuroSettings",
           "MqttSettings", "PanelSettings"]
