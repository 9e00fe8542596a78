"""What the lifter has told the rack: bar load, one-rep max, units and exercise.

Every rep is judged relative to the load on the bar, so these few numbers matter as much as the camera. They
arrive from several directions -- the buttons on the rack panel, remote commands over MQTT, ``rackwatch run`` and
``rackwatch analyze`` on the command line, the settings saved on disk -- and all of them end in one
:class:`LifterSettings` value, which validates itself, so an impossible combination cannot exist at all:

* a load or one-rep max outside the rack's range (negative, or heavier than any squat ever recorded);
* **a load above the one-rep max**: every rep is judged as a percentage of the max, and a load of 125 % of it
  would be judged as if it were a near-max single (cave tolerated). Either the max is out of date (raise it: the
  lifter is attempting a new best) or the load is a typo (lower it); the rack cannot tell which, so it refuses
  and says both (:class:`AboveOneRepMax`). Each entry point decides how to refuse (docs/panel.md).

Weights are masses. Each is kept as it was entered (:class:`Weight`: the number and its units), and shown in the
lifter's chosen units, converted exactly (1 lb = 0.45359237 kg, by definition). Switching units changes only what
is shown, never what was entered, so kg -> lb -> kg any number of times gives back the number typed; a command in
the other units is kept as sent. Display and events show a weight to :data:`DISPLAY_DECIMALS` decimal (100 kg is
220.5 lb on the panel). The plate step is the smallest change a press of a button makes, in the units shown:
2.5 kg (two 1.25 kg plates) or 5 lb (two 2.5 lb plates); a press lands on a plate step of those units.

The store (:class:`SettingsStore`) adds the file, the lock and the listeners.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from .events import EXERCISES, LEGS, UNITS, Load

log = logging.getLogger(__name__)

KG_PER_LB = 0.45359237
#: The same, exactly (the international pound of 1959): conversions go through it, so none ever drifts.
_KG_PER_UNIT = {"kg": Fraction(1), "lb": Fraction(45359237, 100_000_000)}

#: The smallest change in load the panel makes, per unit.
PLATE_STEP = {"kg": 2.5, "lb": 5.0}

#: The heaviest load the rack accepts, per unit; well above any squat ever lifted, low enough to catch typos.
MAX_LOAD = {"kg": 1000.0, "lb": 2200.0}

#: Weights are shown (panel, virtual panel, messages) to this many decimals, in either unit.
DISPLAY_DECIMALS = 1
#: ... and carried in events to this many, so a load entered in the other unit reads back within 0.01.
EVENT_DECIMALS = 2


def _check_units(units: Any) -> str:
    if units not in UNITS:
        raise ValueError(f"units must be one of {', '.join(UNITS)}, not {units!r}")
    return units


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


def format_weight(value: float, units: str | None = None) -> str:
    """A weight as people read it: whole numbers plain, else :data:`DISPLAY_DECIMALS` decimal (``220.5 lb``)."""
    rounded = round(value, DISPLAY_DECIMALS)
    text = f"{rounded:.0f}" if rounded == int(rounded) else f"{rounded:.{DISPLAY_DECIMALS}f}"
    return f"{text} {units}" if units else text


@dataclass(frozen=True)
class Weight:
    """A mass as it was entered: the number and the units it was typed in, kept exactly as typed."""

    value: float
    units: str

    def __post_init__(self) -> None:
        _check_units(self.units)
        object.__setattr__(self, "value", float(self.value))

    @property
    def kg(self) -> Fraction:
        """The mass in kg, exactly (a float is an exact fraction; so is the pound)."""
        return Fraction(self.value) * _KG_PER_UNIT[self.units]

    def to(self, units: str) -> float:
        """The number in ``units``: the value itself in its own units, else one exact conversion rounded once."""
        if units == self.units:
            return self.value
        return float(self.kg / _KG_PER_UNIT[_check_units(units)])

    def __str__(self) -> str:
        return format_weight(self.value, self.units)

    def shown_in(self, units: str) -> str:
        """``220 lb`` in its own units; ``100 kg (220.5 lb)`` when shown in other units than it was entered in."""
        if units == self.units:
            return str(self)
        return f"{format_weight(self.to(units), units)} ({self})"


#: A load this little above the one-rep max is the max (it shows the same): 220.5 lb typed against a max of
#: 100 kg (220.46 lb) is not a new best. Half the display's last digit, in kg for the heavier unit.
_SAME_AS_SHOWN_KG = Fraction(5, 10 ** (DISPLAY_DECIMALS + 1))


def above(load: Weight | None, one_rm: Weight | None) -> bool:
    """Whether ``load`` is above ``one_rm`` by more than the display can show; ``False`` while either is unknown."""
    return load is not None and one_rm is not None and load.kg - one_rm.kg > _SAME_AS_SHOWN_KG


class AboveOneRepMax(ValueError):
    """A load above the lifter's one-rep max. The message says what to do, in the units the lifter reads
    (``units``), and which of the two was just changed (``changed``: ``load``, ``one_rm`` or ``None`` for both)."""

    def __init__(self, load: Weight, one_rm: Weight, units: str, changed: str | None = None) -> None:
        self.load, self.one_rm, self.units, self.changed = load, one_rm, units, changed
        # In the numbers of whoever changed it: a command's 225 lb is answered in lb, though the rack shows kg.
        units = {"load": load.units, "one_rm": one_rm.units}.get(changed or "", units)
        shown_load, shown_max = load.shown_in(units), one_rm.shown_in(units)
        if changed == "load":
            text = (f"a load of {shown_load} is above the one-rep max of {shown_max}: lower the load to "
                    f"{format_weight(one_rm.to(units), units)} or less, or raise the one-rep max first "
                    "(for a new best)")
        elif changed == "one_rm":
            text = (f"a one-rep max of {shown_max} is below the load on the bar, {shown_load}: enter a one-rep "
                    f"max of {format_weight(load.to(units), units)} or more, or lower the load first")
        else:
            text = (f"the load of {shown_load} is above the one-rep max of {shown_max}: raise the one-rep max "
                    f"to {format_weight(load.to(units), units)} or more (a new best), or lower the load")
        super().__init__(text)

    def for_flags(self, *, saved: bool) -> str:
        """The refusal as ``rackwatch analyze`` and ``run`` say it, naming their flags. ``saved``: the max is the
        one saved on the rack (``run`` without ``--one-rm``)."""
        units = self.units
        where = " saved on this rack" if saved else ""
        return (f"The load of {self.load.shown_in(units)} is above the one-rep max{where} of "
                f"{self.one_rm.shown_in(units)}, so no rep could be judged against it. Raise the one-rep max "
                f"(--one-rm {format_weight(self.load.to(units))} or more, for a new best) or lower the load "
                f"(--load {format_weight(self.one_rm.to(units))} or less).")


def _entered(name: str, value: Weight | float | None, units: str, *, allow_zero: bool) -> Weight | None:
    """A weight given as a :class:`Weight` (kept as it is) or a number in ``units``, checked against the limits."""
    if isinstance(value, Weight):
        _check_weight(name, value.value, value.units, allow_zero=allow_zero)
        return value
    checked = _check_weight(name, value, units, allow_zero=allow_zero)
    return None if checked is None else Weight(checked, units)


def round_to_plates(value: float, units: str) -> float:
    """``value`` rounded to the nearest plate step of ``units`` (halves round up, as a lifter would load)."""
    step = PLATE_STEP[units]
    return math.floor(value / step + 0.5) * step


def step_weight(value: float | None, steps: int, units: str) -> float:
    """``value`` moved by ``steps`` plate steps, landing on a plate step, never below 0 or above the limit.

    A value that sits between steps (typed in remotely, say 101 kg, or 100 kg shown as 220.46 lb) first snaps to
    the neighbouring step in the direction of travel, so one press up from 101 gives 102.5 and one press down
    gives 100. Nothing entered yet (``None``) counts as 0. A step up never lowers a value already above this
    unit's limit (1000 kg shown as 2204.6 lb), it stays.
    """
    step = PLATE_STEP[units]
    start = value or 0.0
    position = start / step
    # The small tolerance keeps float noise (e.g. 99.99999) from counting as "between steps".
    base = math.floor(position + 1e-9) if steps > 0 else math.ceil(position - 1e-9)
    moved = min(max((base + steps) * step, 0.0), MAX_LOAD[units])
    return max(moved, start) if steps > 0 else min(moved, start)


_UNSET: Any = object()


@dataclass(frozen=True, init=False)
class LifterSettings:
    """The lifter's settings at the rack.

    ``load``
        the weight on the bar in ``units``, ``None`` until someone enters it; 0 is a real load (a bodyweight
        single-leg squat).
    ``one_rm``
        the lifter's one-rep max for the exercise in ``units``, or ``None`` if unknown; used to judge how close
        to their limit a set is. Never 0, and never below the load (see :class:`AboveOneRepMax`).
    ``units``
        ``kg`` or ``lb``: the units the weights are shown in.
    ``exercise``
        ``squat`` or ``single-leg``.
    ``working_leg``
        for a single-leg squat, ``left`` or ``right`` when the lifter said which; ``None`` lets the rep
        tracker see for itself. Always ``None`` for a squat on both legs.

    ``load`` and ``one_rm`` may be given as numbers in ``units`` or as :class:`Weight` values in any units; they
    are kept as entered (:attr:`entered_load`, :attr:`entered_one_rm`) and read back in ``units``.

    (Not to be confused with :class:`rackwatch.config.RackSettings`, the rack's own id and folders: these
    settings belong to whoever is lifting and change between sets.)

    Constructing an invalid value raises :exc:`ValueError` with a message fit to show the person who typed it.
    """

    entered_load: Weight | None
    entered_one_rm: Weight | None
    units: str
    exercise: str
    working_leg: str | None

    def __init__(self, load: Weight | float | None = None, one_rm: Weight | float | None = None,
                 units: str = "kg", exercise: str = "squat", working_leg: str | None = None) -> None:
        _check_units(units)
        if exercise not in EXERCISES:
            raise ValueError(f"exercise must be one of {', '.join(EXERCISES)}, not {exercise!r}")
        if working_leg is not None:
            if working_leg not in LEGS:
                raise ValueError(f"working leg must be one of {', '.join(LEGS)}, not {working_leg!r}")
            if exercise != "single-leg":
                raise ValueError("a working leg only applies to the single-leg squat")
        entered_load = _entered("load", load, units, allow_zero=True)
        entered_one_rm = _entered("one-rep max", one_rm, units, allow_zero=False)
        if above(entered_load, entered_one_rm):
            raise AboveOneRepMax(entered_load, entered_one_rm, units)
        # object.__setattr__ because the dataclass is frozen.
        for name, value in (("entered_load", entered_load), ("entered_one_rm", entered_one_rm), ("units", units),
                            ("exercise", exercise), ("working_leg", working_leg)):
            object.__setattr__(self, name, value)

    def but(self, *, load: Weight | float | None = _UNSET, one_rm: Weight | float | None = _UNSET,
            units: str = _UNSET, exercise: str = _UNSET, working_leg: str | None = _UNSET) -> LifterSettings:
        """These settings with some changed (numbers in the units the result has); the others kept as entered."""
        def kept(new: Any, old: Any) -> Any:
            return old if new is _UNSET else new
        return LifterSettings(load=kept(load, self.entered_load), one_rm=kept(one_rm, self.entered_one_rm),
                              units=kept(units, self.units), exercise=kept(exercise, self.exercise),
                              working_leg=kept(working_leg, self.working_leg))

    @property
    def load(self) -> float | None:
        return None if self.entered_load is None else self.entered_load.to(self.units)

    @property
    def one_rm(self) -> float | None:
        return None if self.entered_one_rm is None else self.entered_one_rm.to(self.units)

    @property
    def plate_step(self) -> float:
        return PLATE_STEP[self.units]

    @property
    def max_load(self) -> float:
        return MAX_LOAD[self.units]

    @property
    def percent_of_max(self) -> float | None:
        """The load as a percentage of the one-rep max (of the masses, whatever units each was entered in);
        ``None`` while either is unknown."""
        if self.entered_load is None or self.entered_one_rm is None:
            return None
        return float(100 * self.entered_load.kg / self.entered_one_rm.kg)

    def in_units(self, units: str) -> LifterSettings:
        """The same settings shown in other units: the weights stay as entered, so nothing is rounded."""
        return self.but(units=_check_units(units))

    def load_info(self) -> Load | None:
        """The ``load`` object that rep, set and state events carry, in the lifter's units to
        :data:`EVENT_DECIMALS` decimals; ``None`` when no load was entered."""
        if self.load is None:
            return None
        one_rm = self.one_rm
        return Load(value=round(self.load, EVENT_DECIMALS), units=self.units,
                    one_rm=None if one_rm is None else round(one_rm, EVENT_DECIMALS),
                    percent_1rm=self.percent_of_max)

    def to_dict(self) -> dict[str, Any]:
        """What ``settings.json`` holds: the weights in ``units`` (what older racks read), and as entered."""
        def entered(weight: Weight | None) -> dict[str, Any] | None:
            return None if weight is None else {"value": weight.value, "units": weight.units}
        return {"load": self.load, "one_rm": self.one_rm, "units": self.units, "exercise": self.exercise,
                "working_leg": self.working_leg,
                "entered": {"load": entered(self.entered_load), "one_rm": entered(self.entered_one_rm)}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LifterSettings:
        """Settings from :meth:`to_dict` output; unknown keys are ignored, missing ones take the defaults.

        The weights as entered are used when they agree with the numbers in ``units`` beside them (a file an
        older rackwatch wrote has none; a hand edit of the numbers wins over stale entered ones).
        """
        if not isinstance(data, dict):
            raise ValueError(f"settings must be a JSON object, not {type(data).__name__}")
        known = {name: data[name] for name in ("load", "one_rm", "units", "exercise", "working_leg") if name in data}
        entered = data.get("entered")
        if isinstance(entered, dict):
            units = known.get("units", "kg")
            for name in ("load", "one_rm"):
                weight = _weight_from(entered.get(name))
                shown = known.get(name)
                if weight is not None and isinstance(shown, (int, float)) and units in UNITS \
                        and math.isclose(weight.to(units), shown, rel_tol=1e-9, abs_tol=1e-9):
                    known[name] = weight
        return cls(**known)


def _weight_from(data: Any) -> Weight | None:
    if not isinstance(data, dict) or data.get("units") not in UNITS:
        return None
    value = data.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return Weight(value, data["units"])


def why_unchanged(settings: LifterSettings, what: str, steps: int) -> tuple[str | None, str]:
    """Why ``steps`` plate steps on ``what`` (``load`` or ``one_rm``) left ``settings`` as they were, for the panel
    to say: ``(stopped_by, reason)``, where ``stopped_by`` names the other number when it is what stopped the
    press (``one_rm`` stops the load going up, ``load`` stops the max going down), else ``None``."""
    units = settings.units
    if what == "load":
        if steps > 0 and settings.entered_one_rm is not None:
            return "one_rm", (f"the load is at the one-rep max ({format_weight(settings.one_rm, units)}): raise the "
                              "one-rep max first for a new best")
        if steps > 0:
            return None, f"the heaviest load the rack accepts is {format_weight(MAX_LOAD[units], units)}"
        return None, "the load is already 0"
    if settings.entered_one_rm is None:
        return None, "no one-rep max to lower" if steps < 0 else "no change"
    if steps < 0:
        return "load", (f"the one-rep max is at the load on the bar ({format_weight(settings.load or 0, units)}): "
                        "lower the load first")
    return None, f"the heaviest one-rep max the rack accepts is {format_weight(MAX_LOAD[units], units)}"


Listener = Callable[[LifterSettings], None]


def _in_units(name: str, value: Any, units: str | None, settings: LifterSettings, *,
              allow_zero: bool) -> Weight | float | None:
    """A value a sender gave in ``units`` (else in the settings' units), kept in the sender's units."""
    if units is None or value is None:
        return value
    # Checked in the sender's units, so a mistake is reported in the numbers the sender typed.
    return _entered(name, value, _check_units(units), allow_zero=allow_zero)


def _saying(changed: str, make: Callable[[], LifterSettings]) -> LifterSettings:
    """``make()``, with a load-above-max refusal reworded for the one of the two just ``changed``."""
    try:
        return make()
    except AboveOneRepMax as exc:
        raise AboveOneRepMax(exc.load, exc.one_rm, exc.units, changed) from None


class SettingsStore:
    """The one place the rack's settings live, shared by the panel and remote commands.

    With a ``state_dir`` the settings survive restarts in ``state_dir/settings.json``; without one they live in
    memory only (handy for analysing a recording, and in tests). Every change is written to disk before the
    listeners hear of it, so what a listener shows is what a restart will bring back.

    All methods are safe to call from several threads at once (button callbacks and the MQTT client each run in
    their own). Each setter returns the settings after the change, or raises :exc:`ValueError` (for a load
    above the one-rep max, :class:`AboveOneRepMax`) and changes nothing.

    A settings file that cannot be read (corrupt, hand-edited into nonsense) is moved aside to
    ``settings.json.bad`` and the defaults are used, with a warning in the log: a rack that refuses to start
    over a load setting is worse than one that asks for the load again. A file with a load above its one-rep max
    (older racks allowed it) keeps everything but the one-rep max, with a warning: the reps are then judged as
    measured, never as a near-max single.
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
        value in the other units is kept as sent and shown converted: the rack keeps showing the lifter's units.
        A load above the one-rep max raises :class:`AboveOneRepMax`.
        """
        def change(s: LifterSettings) -> LifterSettings:
            load = _in_units("load", value, units, s, allow_zero=True)
            return _saying("load", lambda: s.but(load=load))
        return self._change(change)

    def set_one_rm(self, value: float | None, units: str | None = None) -> LifterSettings:
        """Set the one-rep max; ``None`` clears it. ``units`` as for :meth:`set_load`; a max below the load
        raises :class:`AboveOneRepMax`."""
        def change(s: LifterSettings) -> LifterSettings:
            one_rm = _in_units("one-rep max", value, units, s, allow_zero=False)
            return _saying("one_rm", lambda: s.but(one_rm=one_rm))
        return self._change(change)

    def update(self, *, load: float | None = _UNSET, one_rm: float | None = _UNSET, units: str | None = None,
               exercise: str | None = None) -> LifterSettings:
        """Change several settings at once, checked together (``rackwatch run --load 120 --one-rm 130`` over a
        saved max of 100 is fine); numbers are in ``units`` if given, else in the current units. Only what is
        given changes."""
        changes: dict[str, Any] = {"load": load, "one_rm": one_rm}
        if units is not None:
            changes["units"] = units
        if exercise is not None:
            changes.update(exercise=exercise, working_leg=None)
        return self._change(lambda s: s.but(**changes))

    def set_units(self, units: str) -> LifterSettings:
        """Show the weights in ``kg`` or ``lb``; the weights themselves stay as entered (no rounding, no drift)."""
        return self._change(lambda s: s.in_units(units))

    def set_exercise(self, exercise: str, working_leg: str | None = None) -> LifterSettings:
        """Set the exercise: ``squat`` or ``single-leg``, the latter optionally with its ``working_leg``."""
        return self._change(lambda s: s.but(exercise=exercise, working_leg=working_leg))

    def step_load(self, steps: int) -> LifterSettings:
        """Move the load by ``steps`` plate steps of the current units (negative for lighter), stopping at 0, at
        the limit and at the one-rep max (it lands on the max itself: a new best needs the max raised first)."""
        def stepped(s: LifterSettings) -> LifterSettings:
            moved = Weight(step_weight(s.load, steps, s.units), s.units)
            if steps > 0 and above(moved, s.entered_one_rm):
                if s.entered_load is not None and s.entered_load.kg >= s.entered_one_rm.kg:
                    return s   # already at the max: nothing changes, the panel says so
                moved = s.entered_one_rm
            return s.but(load=moved)
        return self._change(stepped)

    def step_one_rm(self, steps: int) -> LifterSettings:
        """Move the one-rep max by ``steps`` plate steps, never below the load.

        With no one-rep max yet, a step up starts from the current load (the max is never below it) and a step
        down does nothing. Stepping down past the smallest plate step clears it, which is how a lifter removes
        a one-rep max from the panel (with a load of 0 or none: the max stops at the load).
        """
        def stepped(s: LifterSettings) -> LifterSettings:
            if s.entered_one_rm is None:
                if steps <= 0:
                    return s
                start = s.entered_load if s.load else Weight(s.plate_step, s.units)
                if steps == 1:
                    return s.but(one_rm=start)
                return s.but(one_rm=step_weight(start.to(s.units), steps - 1, s.units))
            moved = step_weight(s.one_rm, steps, s.units)
            if steps < 0 and s.load and above(s.entered_load, Weight(moved, s.units)):
                if s.entered_one_rm.kg <= s.entered_load.kg:
                    return s   # already at the load
                return s.but(one_rm=s.entered_load)
            return s.but(one_rm=moved if moved > 0 else None)
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
            data = json.loads(self._path.read_text(encoding="utf-8"))
            try:
                return LifterSettings.from_dict(data)
            except AboveOneRepMax as exc:
                kept = LifterSettings.from_dict({**data, "one_rm": None, "entered": None})
                log.warning("rack settings in %s: %s. Older racks allowed this; the one-rep max is cleared so that "
                            "no rep is judged as a near-max single. Enter the lifter's one-rep max again.",
                            self._path, exc)
                self._write(kept)
                return kept
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
