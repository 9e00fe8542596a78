"""What the lifter has told the rack: bar load, one-rep max, units and exercise.

Every rep is judged relative to the load on the bar, so these few numbers matter as much as the camera. They
arrive from two directions, the buttons on the rack panel and remote commands over MQTT, and both go through
the same :class:`SettingsStore` methods, so both end in the same place: one :class:`LifterSettings` value, saved
to disk and announced to whoever listens (the panel's display, the rep judge, the retained MQTT state).

:class:`LifterSettings` is a plain frozen value and knows nothing about files or threads; it validates itself, so
an impossible load (negative, or heavier than any squat ever recorded) cannot exist at all. The store adds the
file, the lock and the listeners.

Weights are stored in the lifter's chosen units, because that is what the plates in the gym are marked in. The
plate step is the smallest change a press of a button makes: 2.5 kg (two 1.25 kg plates) or 5 lb (two 2.5 lb
plates).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from .events import EXERCISES, LEGS, UNITS, load_info

log = logging.getLogger(__name__)

KG_PER_LB = 0.45359237

#: The smallest change in load the panel makes, per unit.
PLATE_STEP = {"kg": 2.5, "lb": 5.0}

#: The heaviest load the rack accepts, per unit; well above any squat ever lifted, low enough to catch typos.
MAX_LOAD = {"kg": 1000.0, "lb": 2200.0}


def _check_weight(name: str, value: Any, units: str, *, allow_zero: bool) -> float | None:
    if value is None:
        return None
    # bool is an int in Python; a JSON ``true`` must not become a load of 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, not {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'0 or more' if allow_zero else 'more than 0'}, not {value:g}")
    if value > MAX_LOAD[units]:
        raise ValueError(f"{name} of {value:g} {units} is more than the rack accepts ({MAX_LOAD[units]:g} {units})")
    return value


def round_to_plates(value: float, units: str) -> float:
    """``value`` rounded to the nearest plate step of ``units`` (halves round up, as a lifter would load)."""
    step = PLATE_STEP[units]
    return math.floor(value / step + 0.5) * step


def convert(value: float | None, from_units: str, to_units: str) -> float | None:
    """``value`` in ``to_units``, rounded to that unit's plate step and kept within its limit."""
    if value is None or from_units == to_units:
        return value
    exact = value * KG_PER_LB if from_units == "lb" else value / KG_PER_LB
    return min(round_to_plates(exact, to_units), MAX_LOAD[to_units])


def step_weight(value: float | None, steps: int, units: str) -> float:
    """``value`` moved by ``steps`` plate steps, landing on a plate step, never below 0 or above the limit.

    A value that sits between steps (typed in remotely, say 101 kg) first snaps to the neighbouring step in the
    direction of travel, so one press up from 101 gives 102.5 and one press down gives 100. Nothing entered yet
    (``None``) counts as 0.
    """
    step = PLATE_STEP[units]
    position = (value or 0.0) / step
    # The small tolerance keeps float noise (e.g. 99.99999) from counting as "between steps".
    base = math.floor(position + 1e-9) if steps > 0 else math.ceil(position - 1e-9)
    moved = (base + steps) * step
    return min(max(moved, 0.0), MAX_LOAD[units])


@dataclass(frozen=True)
class LifterSettings:
    """The lifter's settings at the rack.

    ``load``
        the weight on the bar, ``None`` until someone enters it; 0 is a real load (a bodyweight single-leg
        squat).
    ``one_rm``
        the lifter's one-rep max for the exercise, or ``None`` if unknown; used to judge how close to their
        limit a set is. It may be below ``load`` (a new personal best is being attempted), but never 0.
    ``units``
        ``kg`` or ``lb``; both weights are in these units.
    ``exercise``
        ``squat`` or ``single-leg``.
    ``working_leg``
        for a single-leg squat, ``left`` or ``right`` when the lifter said which; ``None`` lets the rep
        tracker see for itself. Always ``None`` for a squat on both legs.

    (Not to be confused with :class:`rackwatch.config.RackSettings`, the rack's own id and folders: these
    settings belong to whoever is lifting and change between sets.)

    Constructing an invalid value raises :exc:`ValueError` with a message fit to show the person who typed it.
    """

    load: float | None = None
    one_rm: float | None = None
    units: str = "kg"
    exercise: str = "squat"
    working_leg: str | None = None

    def __post_init__(self) -> None:
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, not {self.units!r}")
        if self.exercise not in EXERCISES:
            raise ValueError(f"exercise must be one of {', '.join(EXERCISES)}, not {self.exercise!r}")
        if self.working_leg is not None:
            if self.working_leg not in LEGS:
                raise ValueError(f"working leg must be one of {', '.join(LEGS)}, not {self.working_leg!r}")
            if self.exercise != "single-leg":
                raise ValueError("a working leg only applies to the single-leg squat")
        # object.__setattr__ because the dataclass is frozen; this only normalises ints to floats.
        object.__setattr__(self, "load", _check_weight("load", self.load, self.units, allow_zero=True))
        object.__setattr__(self, "one_rm", _check_weight("one-rep max", self.one_rm, self.units, allow_zero=False))

    @property
    def plate_step(self) -> float:
        return PLATE_STEP[self.units]

    @property
    def max_load(self) -> float:
        return MAX_LOAD[self.units]

    @property
    def percent_of_max(self) -> float | None:
        """The load as a percentage of the one-rep max; ``None`` while either is unknown."""
        if self.load is None or not self.one_rm:
            return None
        return 100.0 * self.load / self.one_rm

    def in_units(self, units: str) -> LifterSettings:
        """The same settings in other units; both weights are converted and rounded to that unit's plate step."""
        if units not in UNITS:
            raise ValueError(f"units must be one of {', '.join(UNITS)}, not {units!r}")
        one_rm = convert(self.one_rm, self.units, units)
        if one_rm is not None:
            one_rm = max(one_rm, PLATE_STEP[units])  # a tiny 1RM must not round to the forbidden 0
        return replace(self, load=convert(self.load, self.units, units), one_rm=one_rm, units=units)

    def load_info(self) -> dict[str, Any] | None:
        """The ``load`` object that rep, set and state events carry (see :func:`rackwatch.events.load_info`)."""
        return load_info(self.load, self.units, self.one_rm)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifterSettings:
        """Settings from :meth:`to_dict` output; unknown keys are ignored, missing ones take the defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"settings must be a JSON object, not {type(data).__name__}")
        known = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        return cls(**known)


Listener = Callable[[LifterSettings], None]


def _in_current_units(value: Any, units: str | None, settings: LifterSettings) -> Any:
    if units is None or units == settings.units or value is None:
        return value
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, not {units!r}")
    # Checked in the sender's units first, so a mistake is reported in the numbers the sender typed.
    return convert(_check_weight("weight", value, units, allow_zero=True), units, settings.units)


class SettingsStore:
    """The one place the rack's settings live, shared by the panel and remote commands.

    With a ``state_dir`` the settings survive restarts in ``state_dir/settings.json``; without one they live in
    memory only (handy for analysing a recording, and in tests). Every change is written to disk before the
    listeners hear of it, so what a listener shows is what a restart will bring back.

    All methods are safe to call from several threads at once (button callbacks and the MQTT client each run in
    their own). Each setter returns the settings after the change, or raises :exc:`ValueError` and changes
    nothing.

    A settings file that cannot be read (corrupt, hand-edited into nonsense) is moved aside to
    ``settings.json.bad`` and the defaults are used, with a warning in the log: a rack that refuses to start
    over a load setting is worse than one that asks for the load again.
    """

    FILENAME = "settings.json"

    def __init__(self, state_dir: str | os.PathLike[str] | None = None, *,
                 defaults: LifterSettings = LifterSettings()) -> None:
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._path = Path(state_dir) / self.FILENAME if state_dir is not None else None
        self._settings = self._read(defaults)

    @property
    def path(self) -> Path | None:
        """Where the settings are saved, or ``None`` for a store in memory only."""
        return self._path

    @property
    def settings(self) -> LifterSettings:
        """The current settings (an immutable value: keep it as long as you like)."""
        return self._settings

    # -- listeners -----------------------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Listener:
        """Call ``listener(settings)`` after every change; returns ``listener`` so it can be used as a decorator."""
        with self._lock:
            self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # -- changes -------------------------------------------------------------------------------------------

    def set_load(self, value: float | None, units: str | None = None) -> LifterSettings:
        """Set the bar load; ``None`` clears it.

        ``value`` is in ``units`` if given (a remote command says what it means), else in the current units. A
        value in the other units is converted to the current ones and rounded to their plate step: the rack
        keeps showing the units the lifter chose.
        """
        return self._change(lambda s: replace(s, load=_in_current_units(value, units, s)))

    def set_one_rm(self, value: float | None, units: str | None = None) -> LifterSettings:
        """Set the one-rep max; ``None`` clears it. ``units`` as for :meth:`set_load`."""
        return self._change(lambda s: replace(s, one_rm=_in_current_units(value, units, s)))

    def set_units(self, units: str) -> LifterSettings:
        """Switch to ``kg`` or ``lb``, converting the load and one-rep max to the new unit's plate steps."""
        return self._change(lambda s: s.in_units(units))

    def set_exercise(self, exercise: str, working_leg: str | None = None) -> LifterSettings:
        """Set the exercise: ``squat`` or ``single-leg``, the latter optionally with its ``working_leg``."""
        return self._change(lambda s: replace(s, exercise=exercise, working_leg=working_leg))

    def step_load(self, steps: int) -> LifterSettings:
        """Move the load by ``steps`` plate steps (negative for lighter), stopping at 0 and at the limit."""
        return self._change(lambda s: replace(s, load=step_weight(s.load, steps, s.units)))

    def step_one_rm(self, steps: int) -> LifterSettings:
        """Move the one-rep max by ``steps`` plate steps.

        With no one-rep max yet, a step up starts from the current load (the max is rarely below it) and a step
        down does nothing. Stepping down past the smallest plate step clears it, which is how a lifter removes
        a one-rep max from the panel.
        """
        def stepped(s: LifterSettings) -> LifterSettings:
            if s.one_rm is None:
                if steps <= 0:
                    return s
                start = max(round_to_plates(s.load or 0.0, s.units), s.plate_step)
                return replace(s, one_rm=step_weight(start, steps - 1, s.units))
            moved = step_weight(s.one_rm, steps, s.units)
            return replace(s, one_rm=moved if moved > 0 else None)
        return self._change(stepped)

    def _change(self, how: Callable[[LifterSettings], LifterSettings]) -> LifterSettings:
        with self._lock:
            old = self._settings
            new = how(old)
            if new == old:
                return old
            self._write(new)
            self._settings = new
            listeners = list(self._listeners)
        # Listeners run outside the lock so that one which calls back into the store cannot deadlock, and one
        # which fails cannot undo a change that has already been saved.
        for listener in listeners:
            try:
                listener(new)
            except Exception:
                log.exception("a settings listener failed")
        return new

    # -- the file ------------------------------------------------------------------------------------------

    def _read(self, defaults: LifterSettings) -> LifterSettings:
        if self._path is None or not self._path.exists():
            return defaults
        try:
            return LifterSettings.from_dict(json.loads(self._path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
            aside = self._path.with_name(self._path.name + ".bad")
            try:
                os.replace(self._path, aside)
                kept = f"kept the unreadable file as {aside}"
            except OSError:
                kept = "could not move the unreadable file aside"
            log.warning("rack settings in %s could not be read (%s); starting from the defaults "
                        "(load, one-rep max, units and exercise need entering again); %s", self._path, exc, kept)
            return defaults

    def _write(self, settings: LifterSettings) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Write a temporary file next to the real one, flush it to disk, then rename it over the old file:
            # a power cut at any moment leaves either the old settings or the new ones, never half a file.
            fd, tmp = tempfile.mkstemp(prefix=self._path.name + ".", suffix=".tmp", dir=self._path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(settings.to_dict(), f, indent=2)
                    f.write("\n")
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self._path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            _fsync_dir(self._path.parent)
        except OSError:
            # The change still takes effect for this run; only surviving a restart is lost.
            log.exception("could not save rack settings to %s", self._path)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (the rename) to disk; not possible on every platform, hence best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
