"""The rack panel on gpiozero's mock pins, and its terminal stand-in.

Buttons are pressed the way gpiozero's own tests do it: the mock pin of a pulled-up button is driven low
(pressed) and high again (released). Lights are checked on their pins; the buzzer's pin remembers every
frequency it was asked to play.
"""

from __future__ import annotations

import io
import itertools
import os
import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from gpiozero.pins.mock import MockFactory, MockPWMPin
from gpiozero.tones import Tone

import real_parts
from mqtt_broker import sample_not_counted, sample_rep
from rackwatch.load import LifterSettings, SettingsStore
from rackwatch.panel import (FEEDBACK, LIMIT, MODES, NOT_COUNTED, TICK, PanelPins, PanelSettings, PanelTiming,
                             RackPanel, display_chars, feedback_for)
from rackwatch.virtual_panel import VirtualPanel

PINS = PanelPins()

# Quick lights and labels for tests. Presses keep the default hold delay: a mock press lasts as long as the
# panel takes to react, and on a busy machine that must never count as a hold.
FAST = PanelTiming(bounce_time=None, verdict_time=0.3, label_time=0.1, mode_timeout=None, identify_time=0.5)
# Quick holds, slow enough for the repeat timings to be told apart.
QUICK_HOLD = PanelTiming(hold_delay=0.1, repeat_every=0.05, accelerate_after=0.5, fast_steps=4, bounce_time=None)


class RecordingPWMPin(MockPWMPin):
    """A PWM mock pin that remembers every frequency set on it (``None`` = silence)."""

    def __init__(self, factory, info):
        super().__init__(factory, info)
        self.frequencies = []

    def _set_frequency(self, value):
        super()._set_frequency(value)
        self.frequencies.append(value)


def rep_showing(verdict: str, rep: int = 3):
    """A real rep event with ``verdict`` (the rest of it does not matter to a panel)."""
    return sample_rep("rack01", rep).model_copy(update={"verdict": verdict})


def eventually(check, timeout=3.0):
    """Poll ``check`` until it is true; threads (hold repeats, blinks, tunes) need a moment."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return True


@pytest.fixture
def factory():
    factory = MockFactory(pin_class=RecordingPWMPin)
    yield factory
    factory.reset()


@pytest.fixture
def store():
    return SettingsStore()


@pytest.fixture
def panel(store, factory):
    panel = RackPanel(store, pin_factory=factory, timing=FAST)
    silence(factory)
    yield panel
    panel.close()


def press(factory, pin):
    factory.pin(pin).drive_low()
    factory.pin(pin).drive_high()


def shown(panel):
    return "".join(panel.display.value).strip()


def lit(panel):
    return {name for name, light in panel.lights.items() if light.is_lit}


def notes(factory):
    """The notes the buzzer played since the last call: note names, ``None`` for silence between them."""
    pin = factory.pin(PINS.buzzer)
    played, pin.frequencies = pin.frequencies, []
    names = [None if f is None else Tone.from_frequency(f).note for f in played]
    tidy = [n for i, n in enumerate(names) if i == 0 or n != names[i - 1]]
    return tidy[1:] if tidy and tidy[0] is None else tidy


def played(factory, note):
    """How many times the buzzer started ``note`` since the last :func:`silence`."""
    return sum(1 for f in factory.pin(PINS.buzzer).frequencies if f is not None and Tone.from_frequency(f).note == note)


def tune_finished(panel):
    return not panel.tune_player.is_playing


def silence(factory):
    """Forget what the buzzer pin was set to so far (its set-up sets a frequency too)."""
    factory.pin(PINS.buzzer).frequencies.clear()


# -- entering the load ---------------------------------------------------------------------------------------

def test_each_press_is_one_plate_step(panel, store, factory):
    assert shown(panel) == "----"  # nothing entered yet
    press(factory, PINS.up)
    press(factory, PINS.up)
    assert store.settings.load == 5 and shown(panel) == "5"
    press(factory, PINS.down)
    assert store.settings.load == 2.5 and panel.display.value == (" ", " ", "2.", "5")


def test_down_at_zero_stays_at_zero_with_a_low_buzz(panel, store, factory):
    store.set_load(0)
    press(factory, PINS.down)
    assert store.settings.load == 0
    eventually(lambda: tune_finished(panel))
    assert notes(factory) == ["A4", None]


def test_up_stops_at_the_heaviest_load(store, factory):
    with RackPanel(store, pin_factory=factory, timing=QUICK_HOLD) as panel:
        store.set_load(995)
        factory.pin(PINS.up).drive_low()
        eventually(lambda: store.settings.load == 1000)
        silence(factory)
        eventually(lambda: played(factory, "A4") >= 2)   # still held, still repeating: refused twice, low buzz
        factory.pin(PINS.up).drive_high()
        assert store.settings.load == 1000 and shown(panel) == "1000"


def test_holding_repeats_then_speeds_up(store, factory):
    with RackPanel(store, pin_factory=factory, timing=QUICK_HOLD):
        check_holding(store, factory)


def check_holding(store, factory):
    loads, times = [], []
    store.add_listener(lambda s: (loads.append(s.load), times.append(time.monotonic())))
    pressed = time.monotonic()
    factory.pin(PINS.up).drive_low()   # the mock pin calls the panel at once: the press steps before this returns
    assert loads == [2.5]
    eventually(lambda: len(loads) >= 3)  # repeating
    assert times[1] - pressed >= QUICK_HOLD.hold_delay - 0.005   # held for less than hold_delay: just the press
    eventually(lambda: len(loads) >= 2 and loads[-1] - loads[-2] == 10)  # four steps at a time
    factory.pin(PINS.up).drive_high()
    steps = [b - a for a, b in zip([0.0] + loads, loads)]
    assert steps[:3] == [2.5, 2.5, 2.5]
    assert set(steps) == {2.5, 10} and steps == sorted(steps)  # never slows down again while held

    # Letting go stops the repeat (a repeat already under way may still land), and the next press starts slowly.
    settled = settles(store, quiet=4 * QUICK_HOLD.repeat_every)
    factory.pin(PINS.down).drive_low()
    assert store.settings.load == settled - 2.5
    factory.pin(PINS.down).drive_high()


def settles(store, quiet, timeout=5.0):
    """The load once it has stayed the same for ``quiet`` seconds; fails if it keeps changing for ``timeout``."""
    deadline = time.monotonic() + timeout
    last, since = store.settings.load, time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"the load kept changing after the button was let go (now {last})")
        time.sleep(0.01)
        if store.settings.load != last:
            last, since = store.settings.load, time.monotonic()
    return last


# -- modes ---------------------------------------------------------------------------------------------------

def test_mode_button_cycles_through_what_up_and_down_edit(panel, store, factory):
    store.set_load(100)
    assert panel.controls.mode == "load"

    press(factory, PINS.mode)
    assert panel.controls.mode == "one_rm" and shown(panel) == "1REP"  # its name first...
    eventually(lambda: shown(panel) == "----")                          # ...then its value
    for _ in range(9):
        press(factory, PINS.up)
    assert store.settings.one_rm == 120 and store.settings.load == 100 and shown(panel) == "120"

    press(factory, PINS.mode)
    assert panel.controls.mode == "units"
    eventually(lambda: shown(panel) == "KG")
    press(factory, PINS.up)
    # The same masses shown in lb to a tenth (not rounded to 5 lb plates: 100 kg is not 220 lb).
    assert store.settings.units == "lb" and store.settings.in_units("kg") == LifterSettings(load=100, one_rm=120)
    assert shown(panel) == "LB"

    press(factory, PINS.mode)
    assert panel.controls.mode == "exercise"
    eventually(lambda: shown(panel) == "2LEG")
    press(factory, PINS.down)
    assert store.settings.exercise == "single-leg" and shown(panel) == "1LEG"

    press(factory, PINS.mode)
    assert panel.controls.mode == "load"
    eventually(lambda: shown(panel) == "220.5")


def test_plate_steps_work_in_the_units_shown_and_switches_never_move_the_load(panel, store, factory):
    store.set_load(10)
    press(factory, PINS.mode)
    press(factory, PINS.mode)
    assert panel.controls.mode == "units"
    for _ in range(10):   # kg -> lb -> kg ... : 10 kg stays 10 kg, shown as 22 lb (never 20 lb)
        press(factory, PINS.up)
        assert store.settings.units == "lb" and store.settings.in_units("kg").load == 10
        press(factory, PINS.down)
        assert store.settings.units == "kg" and store.settings.load == 10
    press(factory, PINS.up)
    for _ in range(2):
        press(factory, PINS.mode)
    assert panel.controls.mode == "load"
    eventually(lambda: shown(panel) == "22")
    press(factory, PINS.up)          # 22.05 lb -> the next 5 lb plate step
    assert store.settings.load == 25 and shown(panel) == "25"
    press(factory, PINS.down)
    press(factory, PINS.down)
    assert store.settings.load == 15 and shown(panel) == "15"
    assert format(store.settings.in_units("kg").load, ".2f") == "6.80"


def test_the_load_stops_at_the_one_rep_max_with_the_low_buzz_and_names_it(panel, store, factory):
    store.set_load(97.5)
    store.set_one_rm(100)
    press(factory, PINS.up)
    assert store.settings.load == 100 and shown(panel) == "100"
    eventually(lambda: tune_finished(panel))
    silence(factory)
    press(factory, PINS.up)          # a load above the max would be judged as a near-max single: refused
    assert store.settings.load == 100 and store.settings.percent_of_max == 100
    assert shown(panel) == "1REP"    # what is in the way...
    eventually(lambda: shown(panel) == "100")   # ...then the load again
    eventually(lambda: tune_finished(panel))
    assert notes(factory) == ["A4", None]       # the limit's low buzz

    press(factory, PINS.mode)        # the max stops at the load going down, naming the load
    eventually(lambda: shown(panel) == "100")
    press(factory, PINS.down)
    assert store.settings.one_rm == 100 and shown(panel) == "LOAD"
    press(factory, PINS.up)
    assert store.settings.one_rm == 102.5   # raise the max (a new best), then the load follows
    press(factory, PINS.mode)
    press(factory, PINS.mode)
    press(factory, PINS.mode)
    assert panel.controls.mode == "load"
    press(factory, PINS.up)
    assert store.settings.load == 102.5


def test_the_mode_button_beeps_its_position(panel, factory):
    press(factory, PINS.mode)  # one-rep max: the second mode
    eventually(lambda: tune_finished(panel))
    assert [n for n in notes(factory) if n] == ["C6", "C6"]
    assert MODES.index("one_rm") == 1


def test_the_panel_returns_to_the_load_after_a_quiet_spell(store, factory):
    timing = PanelTiming(label_time=0.05, mode_timeout=0.2, bounce_time=None)
    with RackPanel(store, pin_factory=factory, timing=timing) as panel:
        press(factory, PINS.mode)
        press(factory, PINS.mode)
        assert panel.controls.mode == "units"
        eventually(lambda: panel.controls.mode == "load")
        eventually(lambda: shown(panel) == "----")


def test_a_remote_change_shows_on_the_display(panel, store):
    worker = threading.Thread(target=store.set_load, args=(142.5,))  # as the MQTT client's thread would
    worker.start()
    worker.join()
    assert shown(panel) == "142.5"


def test_a_load_entered_at_the_panel_survives_a_restart(tmp_path, factory):
    with RackPanel(SettingsStore(tmp_path), pin_factory=factory, timing=FAST):
        for _ in range(4):
            press(factory, PINS.up)
    factory.reset()
    with RackPanel(SettingsStore(tmp_path), pin_factory=factory, timing=FAST) as panel:
        assert panel.store.settings.load == 10 and shown(panel) == "10"


# -- rep feedback --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("verdict, light, tune", [
    ("clean", "green", ["A6", None]),                  # short and high
    ("note", "amber", ["A5", None, "A5", None]),       # two in the middle
    ("cave", "red", ["A4", None]),                     # low (and long)
])
def test_each_verdict_has_its_light_and_tune(panel, factory, verdict, light, tune):
    panel.show_rep(rep_showing(verdict))
    assert lit(panel) == {light}
    eventually(lambda: tune_finished(panel))
    assert notes(factory) == tune
    eventually(lambda: lit(panel) == set())  # goes out by itself after verdict_time


def test_the_cave_tone_is_the_longest(panel, factory):
    length = {verdict: sum(seconds for _, seconds in FEEDBACK[verdict].tune) for verdict in FEEDBACK}
    assert length["cave"] > 2 * max(length["clean"], length["note"])
    # Each tune is played in full, note by note. (Only a lower bound on the time: a busy machine may stretch a
    # tune, never shorten it, so comparing the measured lengths with each other would race.)
    pin = factory.pin(PINS.buzzer)
    expected = {"clean": ["A6", None], "note": ["A5", None, "A5", None], "cave": ["A4", None]}
    for verdict in ("clean", "note", "cave"):
        silence(factory)
        pin.clear_states()
        panel.show_rep(rep_showing(verdict))
        eventually(lambda: tune_finished(panel))
        assert notes(factory) == expected[verdict]
        assert sum(state.timestamp for state in pin.states[1:]) >= length[verdict] - 0.01, verdict


def test_a_new_rep_replaces_the_last_light(panel):
    panel.show_rep(rep_showing("cave"))
    panel.show_rep(rep_showing("clean"))
    assert lit(panel) == {"green"}


def unjudged_rep(reason="knees not judged: the camera sees the lifter from the side; face it"):
    from rackwatch.events import Valgus
    return rep_showing("unjudged").model_copy(update={"valgus": Valgus(left=None, right=None), "severity": None,
                                                      "unjudged_reason": reason})


def test_an_unjudged_rep_is_its_own_state_never_a_green(panel, factory):
    panel.show_rep(rep_showing("clean"))
    eventually(lambda: tune_finished(panel))
    silence(factory)
    feedback = panel.show_rep(unjudged_rep())
    assert feedback == FEEDBACK["unjudged"] == feedback_for("unjudged") and feedback.light is None
    assert lit(panel) == set()   # the last rep's green went out: nothing says "clean"
    eventually(lambda: tune_finished(panel))
    assert notes(factory) == ["E5", None, "B5", None]   # its own tune, rising like a question
    tunes = {verdict: f.tune for verdict, f in FEEDBACK.items()}
    assert len(set(tunes.values())) == len(tunes) == 4 and tunes["unjudged"] not in (LIMIT, TICK)
    # A verdict this panel does not know (a newer judge) is shown the same way, never as clean.
    assert feedback_for("wobbly") == FEEDBACK["unjudged"] and feedback_for(None) == FEEDBACK["unjudged"]


def test_a_movement_not_counted_puts_the_lights_out_and_plays_its_own_tune(panel, factory):
    panel.show_rep(rep_showing("clean"))
    eventually(lambda: tune_finished(panel))
    silence(factory)
    feedback = panel.show_not_counted(sample_not_counted("rack01"))
    assert feedback == NOT_COUNTED and feedback.light is None
    assert lit(panel) == set()   # the last rep's green went out: nothing says this one counted
    eventually(lambda: tune_finished(panel))
    assert notes(factory) == ["C5", None, "C5", None, "C5", None]   # three quick low beeps
    assert NOT_COUNTED.tune not in {f.tune for f in FEEDBACK.values()} | {LIMIT, TICK}


def rhythm(tune):
    """A tune with its pitches left out: ``(sounding, seconds)`` for each note and rest."""
    return tuple((note is not None, seconds) for note, seconds in tune)


def heard_rhythm(pin):
    """What a buzzer pin did since ``clear_states``, pitch left out: ``(sounding, seconds)`` for each stretch of
    sound or silence but the last (a pin state's timestamp is the time since the change before it)."""
    changes = pin.states[1:]
    return tuple((bool(change.state), after.timestamp) for change, after in zip(changes, changes[1:]))


#: Every tune the buzzer can answer a movement with.
AFTER_A_MOVEMENT = {**{verdict: feedback.tune for verdict, feedback in FEEDBACK.items()},
                    "not_counted": NOT_COUNTED.tune}


def test_every_tune_after_a_movement_can_be_told_by_its_rhythm_alone(panel, factory):
    # For a lifter who cannot hear which way a pitch goes: with the pitches left out, no two tunes are the same
    # (a tune that is another one's notes in reverse, at the same lengths, is not told apart).
    for (a, tune_a), (b, tune_b) in itertools.combinations(AFTER_A_MOVEMENT.items(), 2):
        assert rhythm(tune_a) != rhythm(tune_b), f"{a} and {b} differ only in pitch"
    # Not counted, which shares its dark lights with unjudged, is the only tune of three notes: told apart by
    # counting, without judging lengths.
    count = {name: sum(sounding for sounding, _ in rhythm(tune)) for name, tune in AFTER_A_MOVEMENT.items()}
    assert count["not_counted"] == 3 and sorted(count.values()).count(3) == 1, count

    # And the buzzer pin plays each rhythm as written: the same notes and rests, none shortened. (Only a lower
    # bound on each length: a busy machine may stretch a tune, never shorten it.)
    pin = factory.pin(PINS.buzzer)
    for name, tune in AFTER_A_MOVEMENT.items():
        eventually(lambda: tune_finished(panel))
        pin.clear_states()
        if name == "not_counted":
            panel.show_not_counted(sample_not_counted("rack01"))
        else:
            panel.show_rep(rep_showing(name))
        eventually(lambda: tune_finished(panel))
        heard = heard_rhythm(pin)
        assert [sounding for sounding, _ in heard] == [sounding for sounding, _ in rhythm(tune)], name
        assert all(got >= want - 0.01 for (_, got), (_, want) in zip(heard, rhythm(tune))), (name, heard)


def test_the_virtual_panel_says_why_a_movement_was_not_counted():
    out = io.StringIO()
    with VirtualPanel(SettingsStore(), out=out) as panel:
        assert panel.show_not_counted(sample_not_counted("rack01")) == NOT_COUNTED
        assert out.getvalue().splitlines()[-1] == (
            "not counted: no light, buzzer: C5 0.06s, rest, C5 0.06s, rest, C5 0.06s - both feet left the floor "
            "(0.16 hip heights): a jump, not a squat")
        assert out.getvalue().count("not counted") == 1   # said once
    with VirtualPanel(SettingsStore(), out=out, buzzer_enabled=False) as panel:
        panel.show_not_counted(sample_not_counted("rack01"))
        assert out.getvalue().splitlines()[-1] == (
            "not counted: no light - both feet left the floor (0.16 hip heights): a jump, not a squat")


def test_the_virtual_panel_says_why_a_rep_was_not_judged():
    out = io.StringIO()
    with VirtualPanel(SettingsStore(), out=out) as panel:
        panel.show_rep(unjudged_rep())
        assert out.getvalue().splitlines()[-1] == (
            "rep 3: no light, buzzer: E5 0.08s, rest, B5 0.12s - rep counted but not judged: knees not judged: "
            "the camera sees the lifter from the side; face it")
        panel.show_rep(rep_showing("clean"))
        assert out.getvalue().splitlines()[-1].startswith("rep 3: GREEN light")


def test_the_buzzer_can_be_switched_off(store, factory):
    with RackPanel(store, pin_factory=factory, timing=FAST, buzzer_enabled=False) as panel:
        silence(factory)
        panel.show_rep(rep_showing("cave"))
        press(factory, PINS.up)
        assert not panel.tune_player.is_playing   # neither the verdict nor the press started a tune
        assert lit(panel) == {"red"} and notes(factory) == []
        panel.buzzer_enabled = True
        panel.show_rep(rep_showing("clean"))
        eventually(lambda: tune_finished(panel))
        assert notes(factory) == ["A6", None]


# -- status light --------------------------------------------------------------------------------------------

def changes_during(panel, seconds):
    pin = panel.status_light.pin
    pin.clear_states()
    time.sleep(seconds)
    return len(pin.states) - 1


def test_status_light_steady_when_the_camera_sees_the_lifter(panel):
    assert panel.set_status(lifter_seen=True, broker_ok=True, fault=False) == "ready"
    assert panel.status_light.is_lit and changes_during(panel, 0.3) == 0


def test_status_light_blips_while_nobody_is_in_view(panel):
    # The panel starts like this; calling it every frame must not restart the blink.
    pin = panel.status_light.pin
    eventually(lambda: any(s.state for s in pin.states) and not panel.status_light.is_lit)   # the first blip is over
    pin.clear_states()
    for _ in range(30):   # 30 frames, well inside the 2.95 s dark part of the blink
        assert panel.set_status(lifter_seen=False, broker_ok=True, fault=False) == "waiting"
        time.sleep(0.01)
    assert len(pin.states) == 1 and not panel.status_light.is_lit  # not lit again: lit only 0.05 s in every 3 s


def test_status_light_blinks_slowly_without_a_broker_and_fast_on_a_fault(panel):
    assert panel.set_status(lifter_seen=True, broker_ok=False, fault=False) == "no-broker"
    assert changes_during(panel, 0.4) <= 1
    assert panel.set_status(lifter_seen=True, broker_ok=False, fault=True) == "fault"  # the worst wins
    pin = panel.status_light.pin
    pin.clear_states()
    eventually(lambda: len(pin.states) >= 5)   # four changes: two blinks
    gaps = sorted(state.timestamp for state in pin.states[1:])   # seconds since the change before
    assert gaps[len(gaps) // 2] < 0.3   # 0.1 s on, 0.1 s off: far quicker than the 1 s of the slow blink


def test_identify_blinks_everything_then_goes_back(panel, factory):
    panel.set_status(lifter_seen=True, broker_ok=True, fault=False)
    green = factory.pin(PINS.green)
    green.clear_states()
    panel.identify()
    assert shown(panel) == "8.8.8.8."
    eventually(lambda: len(green.states) >= 3)
    eventually(lambda: shown(panel) == "----")
    eventually(lambda: lit(panel) == set() and panel.status_light.is_lit)


# -- fitting and wiring --------------------------------------------------------------------------------------

def test_display_and_buzzer_are_optional(store, factory):
    pins = PanelPins(buzzer=None, segments=None, dp=None, digits=None)
    with RackPanel(store, pins=pins, pin_factory=factory, timing=FAST) as panel:
        assert panel.display is None and panel.buzzer is None
        press(factory, PINS.up)
        panel.show_rep(rep_showing("note"))
        assert store.settings.load == 2.5 and lit(panel) == {"amber"}
        panel.identify(0.1)


def test_pins_from_config():
    pins = PanelPins.model_validate({"up": 3, "buzzer": "none", "digits": [2, 7, 8, 14]})
    assert (pins.up, pins.buzzer, pins.digits) == (3, None, (2, 7, 8, 14))
    with pytest.raises(ValueError, match="upp"):
        PanelPins.model_validate({"upp": 12})
    with pytest.raises(ValueError, match="GPIO 17"):
        PanelPins(up=17)  # already the green light


def test_panel_settings_from_the_config_file():
    settings = PanelSettings.model_validate({
        "buzzer": False,
        "pins": {"segments": [], "digits": "none", "dp": "none"},
        "timing": {"mode_timeout": "none", "hold_delay": 0.4},
    })
    assert not settings.buzzer and not settings.pins.has_display
    assert settings.timing.mode_timeout is None and settings.timing.hold_delay == 0.4
    assert PanelSettings.model_validate({}) == PanelSettings()
    # The messages a user sees for these are in tests/test_config.py.
    for table, kind in [({"buzer": True}, "extra_forbidden"), ({"enabled": "yes"}, "bool_type"),
                        ({"pins": {"up": "five"}}, "int_type"),
                        ({"timing": {"verdict_time": -1}}, "greater_than_equal")]:
        with pytest.raises(ValueError) as caught:
            PanelSettings.model_validate(table)
        assert [error["type"] for error in caught.value.errors()] == [kind]


def test_close_frees_the_pins(store, factory):
    RackPanel(store, pin_factory=factory, timing=FAST).close()
    RackPanel(store, pin_factory=factory, timing=FAST).close()  # would fail if a pin were still reserved


def test_display_chars_put_the_decimal_point_on_its_digit():
    assert display_chars("997.5") == ("9", "9", "7.", "5")
    assert display_chars("8.8.8.8.") == ("8.",) * 4


# -- the virtual panel ---------------------------------------------------------------------------------------

def test_virtual_keys_change_the_same_store(store):
    out = io.StringIO()
    with VirtualPanel(store, out=out) as panel:
        for key in "+++-":
            panel.handle_key(key)
        assert store.settings.load == 5
        panel.handle_key("m")
        panel.handle_key("+")
        assert store.settings.one_rm == 5
        panel.handle_key("u")
        assert store.settings.units == "lb" and store.settings.in_units("kg").load == 5
        assert out.getvalue().splitlines()[-1] == \
            "[   11] editing one-rep max  (load 11, one-rep max 11, lb, squat)"
        panel.handle_key("-")   # the max is at the load: refused, saying why
        assert out.getvalue().splitlines()[-1] == \
            "[   11] the one-rep max is at the load on the bar (11 lb): lower the load first (low buzz)"
        assert panel.handle_key("q") is False and panel.quit_requested.is_set()
    assert "[    5] editing bar load" in out.getvalue()
    assert "editing one-rep max" in out.getvalue()


def test_virtual_panel_shows_the_same_feedback_as_the_rack():
    out = io.StringIO()
    with VirtualPanel(SettingsStore(), out=out) as panel:
        for verdict in FEEDBACK:
            assert panel.show_rep(rep_showing(verdict, rep=1)) == feedback_for(verdict)
            light = FEEDBACK[verdict].light
            assert f"{light.upper() + ' light' if light else 'no light'}" in out.getvalue().splitlines()[-1]
        panel.set_status(lifter_seen=False, broker_ok=False, fault=False)
        assert "slow blink" in out.getvalue().splitlines()[-1]


def test_both_panels_are_the_panel_the_service_drives(panel, store):
    from rackwatch.panel import Panel

    with VirtualPanel(store, out=io.StringIO()) as virtual:
        for each in (panel, virtual):
            assert isinstance(each, Panel)
            assert each.set_status(lifter_seen=True, broker_ok=True, fault=False) == "ready" == each.status
            assert each.show_rep(rep_showing("cave", 1)) == FEEDBACK["cave"]


def test_virtual_panel_reads_piped_lines(store):
    quit_called = threading.Event()
    with VirtualPanel(store, out=io.StringIO(), on_quit=quit_called.set) as panel:
        panel.start(io.StringIO("++\nm+\nq\n+++\n"))
        assert panel.wait(timeout=3)
        assert quit_called.is_set()
        assert (store.settings.load, store.settings.one_rm) == (5, 5)  # nothing after q


def test_virtual_panel_reads_single_keys_from_a_terminal(store):
    termios = real_parts.module("termios", "a POSIX system (Linux, as on the rack)")
    master, slave = os.openpty()
    terminal = os.fdopen(slave, "r")
    before = termios.tcgetattr(slave)
    try:
        with VirtualPanel(store, out=io.StringIO()) as panel:
            panel.start(terminal)
            os.write(master, b"++")  # no Enter
            eventually(lambda: store.settings.load == 5)
            os.write(master, b"\x1b[A")  # arrow up
            eventually(lambda: store.settings.load == 7.5)
        assert termios.tcgetattr(slave) == before  # the terminal is left as it was found
    finally:
        terminal.close()
        os.close(master)


@pytest.mark.footage
def test_real_unjudged_reps_show_as_unjudged_on_both_panels(footage_dir, interpreter, store, factory):
    # The side-view clip: the camera cannot see the knees move in, so its reps are counted but not judged.
    from rackwatch.recording import analyze_recording

    reps = analyze_recording(footage_dir / "rohanx01" / "squat_side.mp4", interpreter).reps
    unjudged = [rep for rep in reps if rep.verdict == "unjudged"]
    assert unjudged and all(rep.unjudged_reason for rep in unjudged)
    out = io.StringIO()
    with RackPanel(store, pin_factory=factory, timing=FAST) as rack, VirtualPanel(store, out=out) as virtual:
        for rep in unjudged:
            rack.show_rep(rep_showing("clean"))
            assert rack.show_rep(rep) == FEEDBACK["unjudged"] and lit(rack) == set()
            virtual.show_rep(rep)
            assert out.getvalue().splitlines()[-1].endswith(f"rep counted but not judged: {rep.unjudged_reason}")


@given(presses=st.lists(st.sampled_from(["mode", "up", "down", "up4", "down4"]), max_size=40))
def test_any_presses_show_the_exact_mass_and_units_switches_never_move_it(presses):
    # The panel's controls without hardware: every press through the same PanelControls as the buttons.
    from fractions import Fraction

    from rackwatch.load import above
    from rackwatch.panel import PanelControls, display_text

    store = SettingsStore()
    controls = PanelControls(store)
    for press_ in presses:
        before = store.settings
        if press_ == "mode":
            controls.next_mode()
            continue
        result = controls.adjust(+1 if press_.startswith("up") else -1, 4 if press_.endswith("4") else 1)
        after = store.settings
        assert result.changed == (after != before)
        assert not above(after.entered_load, after.entered_one_rm)
        if controls.mode == "units":
            assert after.units != before.units
            assert after.in_units(before.units) == before   # the very weights entered, not rounded
        if after.load is not None:
            # Shown: the mass entered, in the units shown, to a tenth (whole from 1000 up).
            exact = after.entered_load.kg / (Fraction("0.45359237") if after.units == "lb" else 1)
            shown = float(display_text(after, "load"))
            assert abs(shown - float(exact)) <= (0.5 if shown >= 1000 else 0.05 + 1e-9)
    controls.close()
