"""Where rackwatch finds its files: in a development checkout, or installed from a wheel (as on a rack).

rackwatch runs two ways. From a **checkout** (``pip install -e .``, the developer's and CI's way) the project
folder is there: its ``models/`` folder holds the pose model and ``../shared/footage`` beside it holds the sample
recordings. From a **wheel** (``pip install rackwatch-*.whl``, a rack's way) there is no project folder: the
manifest ships inside the package, the model lives in a data folder of its own, and there is no sample footage.
This module is the one place that tells the two apart; nothing else looks at ``__file__``.
"""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]   # the project folder, when this file sits in <project>/edge/rackwatch

#: The project folder of a development checkout, or ``None`` when rackwatch is installed from a wheel.
CHECKOUT: Path | None = _ROOT if (_ROOT / "pyproject.toml").is_file() and (_ROOT / "edge").is_dir() else None

#: The model folder of an installed rack: the systemd unit's state folder (``StateDirectory=rackwatch``).
SYSTEM_MODELS = Path("/var/lib/rackwatch/models")

FOOTAGE_ENV = "RACKWATCH_FOOTAGE"
SAMPLE_CLIP = Path("kratika") / "squat_front_bodyweight.mp4"   # 9 front-view reps: the demo recording


def user_models() -> Path:
    """A user's own model folder: ``$XDG_DATA_HOME/rackwatch/models`` (``~/.local/share/rackwatch/models``)."""
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "rackwatch" / "models"


def model_dirs() -> list[Path]:
    """The folders searched for the model file, first match wins: the checkout's ``models/`` (in a checkout),
    the user's data folder, then the rack's ``/var/lib/rackwatch/models``."""
    dirs = [CHECKOUT / "models"] if CHECKOUT else []
    return dirs + [user_models(), SYSTEM_MODELS]


def fetch_dir() -> Path:
    """Where ``rackwatch models fetch`` puts the model: the checkout's ``models/``; installed, the rack's
    ``/var/lib/rackwatch/models`` when run as root (the service reads it there), else the user's data folder
    (an explicit ``$XDG_DATA_HOME`` wins, even for root)."""
    if CHECKOUT:
        return CHECKOUT / "models"
    if os.environ.get("XDG_DATA_HOME") or os.geteuid() != 0:
        return user_models()
    return SYSTEM_MODELS


def footage_dir() -> Path | None:
    """The labelled footage: ``$RACKWATCH_FOOTAGE``, else ``../shared/footage`` beside a checkout, else none."""
    if os.environ.get(FOOTAGE_ENV):
        return Path(os.environ[FOOTAGE_ENV])
    return CHECKOUT.parent / "shared" / "footage" if CHECKOUT else None


def sample_clip() -> Path | None:
    """The recording ``analyze`` and ``bench`` use when given none, if the footage is known here."""
    folder = footage_dir()
    return folder / SAMPLE_CLIP if folder else None
