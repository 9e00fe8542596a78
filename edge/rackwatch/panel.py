"""The panel at the rack: three buttons to enter the load, lights and a buzzer to judge each rep.

The lifter uses three buttons:

* **up** and **down** change the number being entered by one plate step per press (2.5 kg or 5 lb). Held down,
  they repeat, and after a couple of seconds they jump four steps at a time, so 140 kg is a few seconds away.
  The load stops at the one-rep max, and the max at the load (a load above the max would be judged as a near-max
  single): a press beyond gets the limit's low buzz and the display names what is in the way (``1REP``/``LOAD``).
* **mode** chooses what up and down change: the bar load, the one-rep max, the units, the exercise, and round
  to the load again. After a quiet spell the panel goes back to the load by itself, so the next lifter's first
  press always changes the bar load.

After each rep one light shows the verdict and the buzzer plays its tune (see :data:`FEEDBACK`); a movement that
looked like a rep but was not counted (a jump, a lunge, a rep whose start was not seen) puts the lights out and
plays a tune of its own (:data:`NOT_COUNTED`); a fourth,
the status light, tells whether the rack is ready (see :func:`status_for`). An optional 4-digit 7-segment
display shows the number being entered.

The module has three layers, each usable on its own:

:data:`FEEDBACK`, :func:`feedback_for`, :func:`status_for`, :func:`display_text`
    what the panel shows and plays, as plain data. The virtual panel (:mod:`rackwatch.virtual_panel`) prints
    the very same table, so a verdict means the same thing in a terminal and at the rack.
:class:`PanelControls`
    what the buttons do, without any hardware: which mode is active and how up/down change the settings.
:class:`RackPanel`
    the gpiozero devices, wired to the two above.

Settings changes go through :class:`~rackwatch.load.SettingsStore`, like remote commands do; the panel redraws
when the store announces a change, whoever made it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Iterable, Mapping, Protocol, runtime_checkable

from gpiozero import (LED, Button, CompositeOutputDevice, LEDCharDisplay, LEDMultiCharDisplay, OutputDevice,
                      TonalBuzzer)
from gpiozero.tones import Tone
from pydantic import Field, field_validator, model_validator

from .events import EXERCISES, UNITS, NotCountedEvent, RepEvent
from .load import DISPLAY_DECIMALS, LifterSettings, SettingsStore, why_unchanged
from .load import format_weight as load_text
from .settings import Settings

log = logging.getLogger(__name__)

# -- what the panel shows and plays ------------------------------------------------------------------------

#: A tune is a sequence of ``(note, seconds)``; a note of ``None`` is a rest.
Tune = tuple[tuple[str | None, float], ...]


@dataclass(frozen=True)
class Feedback:
    """How the panel answers one verdict: which light, which tune, and what it means to the lifter."""

    verdict: str
    light: str | None
    tune: Tune
    meaning: str


#: Verdict → light and tune. The tunes differ in pitch *and* rhythm (as does :data:`NOT_COUNTED`), so they can
#: be told apart in a noisy gym without looking, by lifters who cannot tell red from green, and by rhythm alone.
FEEDBACK: dict[str, Feedback] = {
    "clean": Feedback("clean", "green", (("A6", 0.08),),
                      "clean rep: the knees stayed over the feet"),
    "note": Feedback("note", "amber", (("A5", 0.1), (None, 0.08), ("A5", 0.1)),
                     "the knees moved in, accepted because the load is close to your max"),
    "cave": Feedback("cave", "red", (("A4", 0.6),),
                     "the knees caved in at a load well below your max"),
    # A rep counted whose knees could not be judged (camera too far to the side, a leg hidden): its own state,
    # never a green. No verdict light (all three go out, so the last rep's green cannot linger as if this one
    # were clean) and a tune of its own, rising like a question, so a lifter who is not looking knows the rep
    # counted but was not judged.
    "unjudged": Feedback("unjudged", None, (("E5", 0.08), (None, 0.04), ("B5", 0.12)),
                         "rep counted but not judged"),
}

#: What a rep gets whose verdict is not one we know (a newer judge): the same as ``unjudged``.
UNJUDGED = FEEDBACK["unjudged"]


#: A movement that looked like a rep but was not counted (a jump, a lunge, a rep whose start was not seen): no
#: light (the last rep's goes out, so its green cannot be taken for this one's) and three quick low notes. It
#: is the only tune of three notes, so it differs from every verdict's tune by its rhythm alone, for a lifter who
#: cannot hear which way a pitch moves (the unjudged tune shares its lights-out); short and soft-pitched, above
#: the cave's long low tone, so it does not sound like an alarm.
NOT_COUNTED = Feedback("not_counted", None,
                       (("C5", 0.06), (None, 0.05), ("C5", 0.06), (None, 0.05), ("C5", 0.06)), "not counted")


def feedback_for(verdict: str | None) -> Feedback:
    """The light and tune for a rep's ``verdict`` (``clean``, ``note``, ``cave`` or ``unjudged``)."""
    return FEEDBACK.get(verdict or "", UNJUDGED)


#: Sounds for the buttons: a tick for each step, a low buzz when a limit stops the change, one short beep per
#: position for the mode button (load 1, one-rep max 2, units 3, exercise 4) so it can be used without display.
TICK: Tune = (("E6", 0.03),)
LIMIT: Tune = (("A4", 0.15),)
MODE_BEEP: Tune = (("C6", 0.06), (None, 0.08))

#: Status light patterns: (seconds on, seconds off), or ``None`` for steadily on.
STATUS_PATTERNS: dict[str, tuple[float, float] | None] = {
    "fault": (0.1, 0.1),        # fast blink: the rack cannot judge (camera or model failed)
    "no-broker": (1.0, 1.0),    # slow blink: judging works, but results are queued until the broker is back
    "ready": None,              # steady: all well and the camera sees the lifter
    "waiting": (0.05, 2.95),    # a short blip every 3 s: all well, nobody in view
}


def status_for(lifter_seen: bool, broker_ok: bool, fault: bool) -> str:
    """The status light's pattern name; the most urgent condition wins."""
    if fault:
        return "fault"
    if not broker_ok:
        return "no-broker"
    return "ready" if lifter_seen else "waiting"


# -- what the buttons do -----------------------------------------------------------------------------------

#: What up/down edit, in the order the mode button steps through them.
MODES = ("load", "one_rm", "units", "exercise")
MODE_NAMES = {"load": "bar load", "one_rm": "one-rep max", "units": "units", "exercise": "exercise"}
#: Shown for a moment when the mode changes, spelt with letters a 7-segment digit can draw.
MODE_LABELS = {"load": "LOAD", "one_rm": "1REP", "units": "UNIT", "exercise": "TYPE"}
_EXERCISE_TEXT = {"squat": "2LEG", "single-leg": "1LEG"}


def format_weight(value: float | None) -> str:
    """A weight as the display shows it: ``----`` when not entered, else as :func:`rackwatch.load.format_weight`
    (to 0.1 kg or lb: 100 kg is ``220.5`` lb), whole from 1000 up, where four digits hold no decimal."""
    if value is None:
        return "----"
    if round(value, DISPLAY_DECIMALS) >= 1000:
        return f"{value:.0f}"
    return load_text(value)


def display_text(settings: LifterSettings, mode: str) -> str:
    """The text for a 4-digit display showing ``mode``'s value, e.g. ``102.5``, ``KG`` or ``1LEG``."""
    if mode == "load":
        return format_weight(settings.load)
    if mode == "one_rm":
        return format_weight(settings.one_rm)
    if mode == "units":
        return settings.units.upper()
    return _EXERCISE_TEXT[settings.exercise]


def _next(options: tuple[str, ...], current: str, direction: int) -> str:
    return options[(options.index(current) + direction) % len(options)]


@dataclass(frozen=True)
class Press:
    """What a press of up or down did: ``changed``, or why not (``reason``, in words), and whether the other
    number stopped it (``stopped_by``: ``one_rm`` when the load is at the one-rep max, ``load`` when the max is at
    the load; the rack's display then shows that number's label for a moment)."""

    changed: bool
    stopped_by: str | None = None
    reason: str | None = None


class PanelControls:
    """What the up, down and mode buttons do, independent of how they are pressed.

    :param store: where the settings live.
    :param mode_timeout: seconds without a press after which the mode returns to ``load``; ``None`` never.
    :param on_mode_change: called with the new mode whenever it changes (by a press or by the timeout).
    """

    def __init__(self, store: SettingsStore, *, mode_timeout: float | None = None,
                 on_mode_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.mode_timeout = mode_timeout
        self.on_mode_change = on_mode_change
        self._mode = "load"
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    @property
    def mode(self) -> str:
        """What up/down edit now: one of :data:`MODES`."""
        return self._mode

    def next_mode(self) -> str:
        """Move on to the next mode (after the last, back to the load); returns it."""
        with self._lock:
            self._mode = _next(MODES, self._mode, +1)
            mode = self._mode
        self._pressed()
        if self.on_mode_change:
            self.on_mode_change(mode)
        return mode

    def adjust(self, direction: int, steps: int = 1) -> Press:
        """Change the current mode's value up (``direction`` +1) or down (-1) by ``steps`` plate steps.

        Units and exercise have no steps: any press switches to the other option. Says whether anything changed
        and, when a limit stopped the press (a load of 0, the heaviest load allowed, no one-rep max to lower, the
        load at the one-rep max or the max at the load), why: the panel answers it with a different sound.
        """
        self._pressed()
        before = self.store.settings
        if self._mode == "load":
            after = self.store.step_load(direction * steps)
        elif self._mode == "one_rm":
            after = self.store.step_one_rm(direction * steps)
        elif self._mode == "units":
            after = self.store.set_units(_next(UNITS, before.units, direction))
        else:
            after = self.store.set_exercise(_next(EXERCISES, before.exercise, direction))
        if after != before:
            return Press(True)
        return Press(False, *why_unchanged(after, self._mode, direction * steps))

    def display_text(self) -> str:
        return display_text(self.store.settings, self._mode)

    def close(self) -> None:
        with self._lock:
            if self._timer:
                self._timer.cancel()
            self._timer = None
            self.mode_timeout = None

    def _pressed(self) -> None:
        # Every press restarts the quiet-spell countdown.
        with self._lock:
            if self._timer:
                self._timer.cancel()
                self._timer = None
            if self.mode_timeout is not None and self._mode != "load":
                self._timer = threading.Timer(self.mode_timeout, self._time_out)
                self._timer.daemon = True
                self._timer.start()

    def _time_out(self) -> None:
        with self._lock:
            if self._mode == "load":
                return
            self._mode = "load"
            self._timer = None
        if self.on_mode_change:
            self.on_mode_change("load")


# -- the hardware ------------------------------------------------------------------------------------------

def _not_fitted(value: Any) -> Any:
    """TOML has no "nothing": ``"none"`` or ``""`` (and ``[]`` for a list of pins) mean a part not fitted."""
    if isinstance(value, str) and value.strip().lower() in ("", "none"):
        return None
    if isinstance(value, list):   # TOML arrays arrive as lists; the settings keep tuples
        return tuple(value) or None
    return value


GPIO = Annotated[int, Field(ge=0, le=27)]
"""A BCM GPIO number on the Pi's 40-pin header."""


class PanelPins(Settings):
    """Where each part is wired, as BCM GPIO numbers: the ``[panel.pins]`` table (docs/panel.md has the wiring).

    Buttons connect the GPIO to ground (the Pi's internal pull-ups are used). LEDs connect GPIO → resistor →
    LED → ground. The buzzer and the display are optional: set ``buzzer`` to ``None``, or ``segments`` and
    ``digits`` to ``None``, when they are not fitted (``"none"`` in the config file).

    ``segments`` are the display's segments a–g in that order, ``dp`` its decimal point, and ``digits`` the
    transistors switching each digit's common cathode, left to right.
    """

    up: GPIO = 5
    down: GPIO = 6
    mode: GPIO = 13
    green: GPIO = 17
    amber: GPIO = 27
    red: GPIO = 22
    status: GPIO = 4
    buzzer: GPIO | None = 18
    segments: tuple[GPIO, ...] | None = (23, 24, 25, 12, 16, 20, 21)
    dp: GPIO | None = 26
    digits: tuple[GPIO, ...] | None = (19, 10, 9, 11)

    _none_means_not_fitted = field_validator("buzzer", "segments", "dp", "digits", mode="before")(_not_fitted)

    @model_validator(mode="after")
    def _wiring(self) -> PanelPins:
        if self.has_display:
            if len(self.segments) != 7 or len(self.digits) != 4 or self.dp is None:
                raise ValueError("the display needs 7 segment pins (a-g), a decimal point pin and 4 digit pins")
        used = [pin for pin in self._all() if pin is not None]
        repeated = sorted({pin for pin in used if used.count(pin) > 1})
        if repeated:
            raise ValueError(f"GPIO {', '.join(map(str, repeated))} assigned to more than one part")
        return self

    @property
    def has_display(self) -> bool:
        return self.segments is not None and self.digits is not None

    def _all(self) -> Iterable[int | None]:
        yield from (self.up, self.down, self.mode, self.green, self.amber, self.red, self.status, self.buzzer)
        if self.has_display:
            yield from (*self.segments, self.dp, *self.digits)


Seconds = Annotated[float, Field(ge=0, le=3600)]


class PanelTiming(Settings):
    """How the panel reacts over time, in seconds: the ``[panel.timing]`` table. Tests shorten these; the
    defaults suit a lifter's thumb."""

    hold_delay: Seconds = 0.5          # holding a button this long starts repeating...
    repeat_every: Seconds = 0.25       # ...one step this often...
    accelerate_after: Seconds = 2.0    # ...and from this long after the press,
    fast_steps: int = Field(4, ge=1, le=100)   # ...this many steps at a time
    bounce_time: Seconds | None = 0.02  # ignore contact chatter shorter than this (None: no debouncing)
    verdict_time: Seconds = 4.0        # a rep's light stays on this long (or until the next rep or not-counted)
    label_time: Seconds = 0.8          # the mode's name stays on the display this long
    mode_timeout: Seconds | None = 15.0  # back to editing the load after this long without a press
    identify_time: Seconds = 5.0       # identify() blinks for this long

    _none_turns_it_off = field_validator("bounce_time", "mode_timeout", mode="before")(_not_fitted)


class PanelSettings(Settings):
    """The ``[panel]`` table of the config file (see docs/panel.md)::

        [panel]
        enabled = true        # false: no panel fitted, settings come by MQTT only
        buzzer = true         # false: lights only

        [panel.pins]          # BCM numbers; "none" for a part not fitted
        buzzer = 18

        [panel.timing]        # seconds
        mode_timeout = 15
    """

    enabled: bool = True
    buzzer: bool = True
    pins: PanelPins = PanelPins()
    timing: PanelTiming = PanelTiming()


class TunePlayer:
    """Plays tunes on a :class:`~gpiozero.TonalBuzzer` in the background; a new tune cuts the last one short."""

    def __init__(self, buzzer: TonalBuzzer) -> None:
        self.buzzer = buzzer
        self._lock = threading.Lock()
        self._playing: tuple[threading.Thread, threading.Event] | None = None

    def play(self, tune: Tune) -> None:
        with self._lock:
            self._stop()
            if not tune:
                return
            stop = threading.Event()
            thread = threading.Thread(target=self._run, args=(tune, stop), name="rackwatch-buzzer", daemon=True)
            self._playing = (thread, stop)
            thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop()

    @property
    def is_playing(self) -> bool:
        playing = self._playing
        return playing is not None and playing[0].is_alive()

    def _stop(self) -> None:
        if self._playing:
            thread, stop = self._playing
            stop.set()
            thread.join(timeout=1.0)  # so the old tune's final silence cannot cut into the new tune
        self._playing = None

    def _run(self, tune: Tune, stop: threading.Event) -> None:
        try:
            for note, seconds in tune:
                if note is None:
                    self.buzzer.stop()
                else:
                    self.buzzer.play(Tone(note))
                if stop.wait(seconds):
                    break
        finally:
            self.buzzer.stop()


class MultiCharDisplay(LEDMultiCharDisplay):
    """:class:`~gpiozero.LEDMultiCharDisplay` that hands its pin factory to every part it builds.

    gpiozero 2.0.1 builds the group of digit-select outputs without the ``pin_factory`` it was given
    (gpiozero issue #1213, fixed upstream by pull request #1225), so with an injected factory on a machine
    that has no GPIO (tests, a laptop) construction fails. This repeats the upstream constructor with the fix;
    it can go once a gpiozero release carries it.
    """

    def __init__(self, char: LEDCharDisplay, *pins: int, active_high: bool = True,
                 pin_factory: Any = None) -> None:
        if not isinstance(char, LEDCharDisplay):
            raise ValueError("char must be an LEDCharDisplay")
        if pin_factory is None:
            pin_factory = char.pin_factory
        self._plex_thread = None
        self._plex_delay = 0.005
        plex = CompositeOutputDevice(
            *(OutputDevice(pin, active_high=active_high, initial_value=None, pin_factory=pin_factory)
              for pin in pins),
            pin_factory=pin_factory)
        CompositeOutputDevice.__init__(self, plex=plex, char=char, pin_factory=pin_factory)
        self.value = (char.value,) * len(pins)


def _seven_segment_display(pins: PanelPins, pin_factory: Any) -> MultiCharDisplay:
    char = LEDCharDisplay(*pins.segments, dp=pins.dp, pin_factory=pin_factory)
    try:
        # gpiozero's 7-segment font lacks these two; segments in the order a, b, c, d, e, f, g.
        char.font["K"] = (1, 0, 1, 0, 1, 1, 1)
        char.font["-"] = (0, 0, 0, 0, 0, 0, 1)
        return MultiCharDisplay(char, *pins.digits, pin_factory=pin_factory)
    except BaseException:
        char.close()
        raise


def display_chars(text: str) -> tuple[str, ...]:
    """``text`` split into display positions, each decimal point riding on the digit before it.

    >>> display_chars("102.5")
    ('1', '0', '2.', '5')
    """
    chars: list[str] = []
    for ch in text:
        if ch == "." and chars:
            chars[-1] += "."
        else:
            chars.append(ch)
    return tuple(chars)


@runtime_checkable
class Panel(Protocol):
    """What the service drives at the rack, whatever the panel is made of: :class:`RackPanel` (gpiozero pins)
    and :class:`~rackwatch.virtual_panel.VirtualPanel` (a terminal) both are one.

    The buttons are not part of it: a panel changes the :class:`~rackwatch.load.SettingsStore` it was given,
    and the service hears of it from the store, as it does of remote commands.
    """

    def show_rep(self, rep_event: Mapping[str, Any]) -> Feedback:
        """Show a rep's verdict (light, tune); returns the feedback given."""

    def show_not_counted(self, event: NotCountedEvent) -> Feedback:
        """Show that a movement was not counted (:data:`NOT_COUNTED`); returns the feedback given."""

    def set_status(self, lifter_seen: bool, broker_ok: bool, fault: bool) -> str:
        """Show the rack's condition on the status light; cheap to call every frame. Returns the pattern."""

    @property
    def status(self) -> str:
        """The status light's current pattern (a key of :data:`STATUS_PATTERNS`, or ``""`` before the first)."""

    def identify(self, seconds: float | None = None) -> None:
        """Blink and beep for a few seconds, so an installer can find this rack."""

    def close(self) -> None:
        """Let go of the pins or the terminal. Safe twice."""


class RackPanel:
    """The rack's buttons, lights, buzzer and (optional) display, driven through gpiozero.

    :param store: the settings the buttons change and the display shows.
    :param pins: where the parts are wired (:class:`PanelPins`).
    :param pin_factory: passed to every gpiozero device; ``None`` uses gpiozero's default (real pins on a Pi),
        tests pass a :class:`gpiozero.pins.mock.MockFactory`.
    :param buzzer_enabled: ``False`` keeps the buzzer quiet (also settable later via :attr:`buzzer_enabled`).
    :param timing: hold, repeat and display timings (:class:`PanelTiming`).

    The devices are public attributes (``up_button``, ``down_button``, ``mode_button``, ``lights`` keyed by
    ``green``/``amber``/``red``, ``status_light``, ``buzzer``, ``display``) so a test or a diagnostics
    command can look at them; ``buzzer``, ``tune_player`` and ``display`` are ``None`` when not fitted.
    """

    def __init__(self, store: SettingsStore, pins: PanelPins = PanelPins(), pin_factory: Any = None,
                 buzzer_enabled: bool = True, timing: PanelTiming = PanelTiming()) -> None:
        self.store = store
        self.pins = pins
        self.timing = timing
        self.controls = PanelControls(store, mode_timeout=timing.mode_timeout, on_mode_change=self._mode_changed)
        self._buzzer_enabled = buzzer_enabled
        self._display_lock = threading.RLock()
        self._label_timer: threading.Timer | None = None
        self._identify_timer: threading.Timer | None = None
        self._status = ""
        self._closed = False
        self._devices: list[Any] = []
        self.buzzer: TonalBuzzer | None = None
        self.display: MultiCharDisplay | None = None
        self.tune_player: TunePlayer | None = None
        try:
            def button(pin: int) -> Button:
                return self._own(Button(pin, bounce_time=timing.bounce_time, hold_time=timing.hold_delay,
                                        hold_repeat=True, pin_factory=pin_factory))
            self.up_button = button(pins.up)
            self.down_button = button(pins.down)
            self.mode_button = button(pins.mode)
            self.lights = {name: self._own(LED(getattr(pins, name), pin_factory=pin_factory))
                           for name in ("green", "amber", "red")}
            self.status_light = self._own(LED(pins.status, pin_factory=pin_factory))
            if pins.buzzer is not None:
                # Centred on A5 (880 Hz) with two octaves either side: a piezo is loud up there, and the verdict
                # tunes span A4 to A6.
                self.buzzer = self._own(TonalBuzzer(pins.buzzer, mid_tone=Tone("A5"), octaves=2,
                                                    pin_factory=pin_factory))
                self.tune_player = TunePlayer(self.buzzer)
            if pins.has_display:
                self.display = self._own(_seven_segment_display(pins, pin_factory))
        except BaseException:
            self.close()
            raise

        self.up_button.when_pressed = lambda: self._press(+1)
        self.down_button.when_pressed = lambda: self._press(-1)
        self.up_button.when_held = lambda: self._held(self.up_button, +1)
        self.down_button.when_held = lambda: self._held(self.down_button, -1)
        self.mode_button.when_pressed = self.controls.next_mode
        store.add_listener(self._settings_changed)
        self._show(self.controls.display_text())
        self.set_status(lifter_seen=False, broker_ok=True, fault=False)

    @classmethod
    def from_settings(cls, store: SettingsStore, settings: PanelSettings, pin_factory: Any = None) -> RackPanel:
        """A panel as the ``[panel]`` table of the config file describes it."""
        return cls(store, pins=settings.pins, pin_factory=pin_factory, buzzer_enabled=settings.buzzer,
                   timing=settings.timing)

    def _own(self, device: Any) -> Any:
        self._devices.append(device)
        return device

    # -- what the service calls ----------------------------------------------------------------------------

    def show_rep(self, rep_event: RepEvent) -> Feedback:
        """Light the verdict's light for a few seconds and play its tune; returns the feedback given."""
        return self._give(feedback_for(rep_event.verdict))

    def show_not_counted(self, event: NotCountedEvent) -> Feedback:
        """Every verdict light out, and the not-counted tune; returns the feedback given."""
        return self._give(NOT_COUNTED)

    def _give(self, feedback: Feedback) -> Feedback:
        for name, light in self.lights.items():
            if name == feedback.light:
                # One long blink: on for verdict_time, then off by itself, in gpiozero's background thread.
                light.blink(on_time=self.timing.verdict_time, off_time=0, n=1)
            else:
                light.off()
        self._play(feedback.tune)
        return feedback

    def set_status(self, lifter_seen: bool, broker_ok: bool, fault: bool) -> str:
        """Show the rack's condition on the status light (see :data:`STATUS_PATTERNS`); returns the pattern.

        Cheap to call every frame: the light is only touched when the pattern changes, so a blink keeps its
        rhythm.
        """
        status = status_for(lifter_seen, broker_ok, fault)
        if status != self._status:
            self._status = status
            self._apply_status()
        return status

    @property
    def status(self) -> str:
        """The status light's current pattern name (a key of :data:`STATUS_PATTERNS`)."""
        return self._status

    def identify(self, seconds: float | None = None) -> None:
        """Blink every light, show ``8.8.8.8.`` and beep for a few seconds, so an installer can find this rack."""
        seconds = self.timing.identify_time if seconds is None else seconds
        half = 0.25
        blinks = max(1, round(seconds / (2 * half)))
        for light in (*self.lights.values(), self.status_light):
            light.blink(on_time=half, off_time=half, n=blinks)
        self._show("8.8.8.8.")
        self._play((("A6", 0.1), (None, 2 * half - 0.1)) * blinks)
        self._cancel_timer("_identify_timer")
        self._identify_timer = self._start_timer(seconds, self._identified)

    @property
    def buzzer_enabled(self) -> bool:
        return self._buzzer_enabled

    @buzzer_enabled.setter
    def buzzer_enabled(self, value: bool) -> None:
        self._buzzer_enabled = bool(value)
        if not value and self.tune_player:
            self.tune_player.stop()

    def close(self) -> None:
        """Switch everything off and release the pins. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.store.remove_listener(self._settings_changed)
        self.controls.close()
        self._cancel_timer("_label_timer")
        self._cancel_timer("_identify_timer")
        if self.tune_player:
            self.tune_player.stop()
        for device in reversed(self._devices):
            device.close()
        self._devices.clear()

    def __enter__(self) -> RackPanel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the buttons ---------------------------------------------------------------------------------------

    def _press(self, direction: int) -> None:
        button = self.up_button if direction > 0 else self.down_button
        # gpiozero waits hold_time before the first when_held and between repeats; _held shortens it once
        # repeating starts, so each new press restores the longer first wait.
        button.hold_time = self.timing.hold_delay
        self._step(direction, 1)

    def _held(self, button: Button, direction: int) -> None:
        button.hold_time = self.timing.repeat_every
        pressed_for = button.pressed_time or 0.0
        self._step(direction, self.timing.fast_steps if pressed_for >= self.timing.accelerate_after else 1)

    def _step(self, direction: int, steps: int) -> None:
        try:
            press = self.controls.adjust(direction, steps)
        except ValueError:
            log.exception("the panel could not change the settings")
            press = Press(False)
        self._play(TICK if press.changed else LIMIT)
        if press.stopped_by is not None:
            # A 4-digit display cannot say "raise the one-rep max first"; it names what is in the way.
            self._flash(MODE_LABELS[press.stopped_by])

    def _mode_changed(self, mode: str) -> None:
        self._play(MODE_BEEP * (MODES.index(mode) + 1))
        self._flash(MODE_LABELS[mode])

    def _flash(self, label: str) -> None:
        """Show ``label`` for ``label_time``, then the value again."""
        if self.display is not None:
            self._show(label)
            self._cancel_timer("_label_timer")
            self._label_timer = self._start_timer(self.timing.label_time, self._show_value)

    def _settings_changed(self, settings: LifterSettings) -> None:
        self._show_value()

    # -- output helpers ------------------------------------------------------------------------------------

    def _show_value(self) -> None:
        self._show(self.controls.display_text())

    def _show(self, text: str) -> None:
        if self.display is None or self._closed:
            return
        with self._display_lock:
            self.display.value = display_chars(text)

    def _play(self, tune: Tune) -> None:
        if self.tune_player and self._buzzer_enabled and not self._closed:
            self.tune_player.play(tune)

    def _apply_status(self) -> None:
        pattern = STATUS_PATTERNS[self._status]
        if pattern is None:
            self.status_light.on()
        else:
            self.status_light.blink(on_time=pattern[0], off_time=pattern[1])

    def _identified(self) -> None:
        if self._closed:
            return
        self._apply_status()
        self._show_value()

    def _start_timer(self, seconds: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(seconds, action)
        timer.daemon = True
        timer.start()
        return timer

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        setattr(self, name, None)
