"""The lifter's settings: validation, unit switching, and the store the panel and remote commands share."""

from __future__ import annotations

import json
import logging
import math
import threading

import pytest
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from rackwatch.events import UNITS
from rackwatch.load import (KG_PER_LB, MAX_LOAD, PLATE_STEP, AboveOneRepMax, LifterSettings, SettingsStore, Weight,
                            above, format_weight, step_weight)

KG = {"kg": Fraction(1), "lb": Fraction("0.45359237")}


def on_plate_step(value: float, units: str) -> bool:
    steps = value / PLATE_STEP[units]
    return math.isclose(steps, round(steps), abs_tol=1e-9)


# -- LifterSettings --------------------------------------------------------------------------------------------

def test_defaults_mean_nothing_entered_yet():
    settings = LifterSettings()
    assert (settings.load, settings.one_rm, settings.units, settings.exercise) == (None, None, "kg", "squat")
    assert settings.load_info() is None


def test_zero_is_a_real_load():
    assert LifterSettings(load=0).load == 0
    assert LifterSettings(load=0, one_rm=100).percent_of_max == 0


@pytest.mark.parametrize("load, one_rm, units", [(125, 100, "kg"), (150, 140, "kg"), (315, 300, "lb")])
def test_a_load_above_the_max_cannot_exist_and_the_refusal_says_what_to_do(load, one_rm, units):
    with pytest.raises(AboveOneRepMax) as refused:
        LifterSettings(load=load, one_rm=one_rm, units=units)
    assert isinstance(refused.value, ValueError)   # every entry point that handles ValueError handles this too
    text = str(refused.value)
    assert f"{load} {units}" in text and f"{one_rm} {units}" in text
    assert "raise the one-rep max" in text and "lower the load" in text


def test_a_load_at_the_max_is_a_max_single():
    assert LifterSettings(load=100, one_rm=100).percent_of_max == 100
    # What the panel shows for a max of 100 kg in lb is 220.5: typed back in, it is that max, not a new best.
    at_max = LifterSettings(load=Weight(220.5, "lb"), one_rm=Weight(100, "kg"), units="lb")
    assert at_max.percent_of_max == pytest.approx(100.0, abs=0.05)
    with pytest.raises(AboveOneRepMax):
        LifterSettings(load=Weight(220.6, "lb"), one_rm=Weight(100, "kg"))


@pytest.mark.parametrize("kwargs, words", [
    ({"load": -2.5}, "0 or more"),
    ({"load": 1000.5}, "more than the rack accepts"),
    ({"load": 2205, "units": "lb"}, "more than the rack accepts"),
    ({"one_rm": 0}, "more than 0"),
    ({"one_rm": 1200}, "more than the rack accepts"),
    ({"load": float("nan")}, "finite"),
    ({"load": True}, "number"),
    ({"load": "100"}, "number"),
    ({"units": "stone"}, "units"),
    ({"exercise": "deadlift"}, "exercise"),
])
def test_impossible_settings_are_refused_with_a_readable_reason(kwargs, words):
    with pytest.raises(ValueError, match=words):
        LifterSettings(**kwargs)


def test_limits_are_inclusive():
    assert LifterSettings(load=1000, one_rm=1000).load == 1000
    assert LifterSettings(load=2200, units="lb").load == 2200


# -- units -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kg, lb_shown", [(10, "22"), (100, "220.5"), (140, "308.6"), (20, "44.1"), (0, "0"),
                                          (102.5, "226"), (1000, "2204.6")])
def test_kilos_are_shown_in_pounds_to_a_tenth_and_come_back_exactly(kg, lb_shown):
    in_lb = LifterSettings(load=kg, units="kg").in_units("lb")
    assert in_lb.load == pytest.approx(kg / KG_PER_LB, rel=1e-12)
    assert format_weight(in_lb.load) == lb_shown
    assert in_lb.in_units("kg").load == kg   # exactly, not approximately


@pytest.mark.parametrize("lb", [225, 315, 135, 45, 22.5, 2200])
def test_pounds_switched_to_kilos_and_back_are_the_pounds_entered(lb):
    in_kg = LifterSettings(load=lb, one_rm=2200, units="lb").in_units("kg")
    assert in_kg.load == pytest.approx(lb * KG_PER_LB, rel=1e-12)
    assert in_kg.in_units("lb").load == lb and in_kg.in_units("lb").one_rm == 2200


def test_ten_kilos_never_become_twenty_pounds():
    # The bug of issue 12: a switch rounded to the new unit's plate step (10 kg -> 20 lb -> 10 kg -> 20 lb...).
    settings = LifterSettings(load=10, units="kg")
    for _ in range(20):
        settings = settings.in_units("lb")
        assert format_weight(settings.load) == "22"
        settings = settings.in_units("kg")
        assert settings.load == 10


entered = st.builds(Weight, value=st.floats(0, 997.0), units=st.sampled_from(UNITS))


@given(weight=entered, switches=st.lists(st.sampled_from(UNITS), max_size=30))
def test_any_sequence_of_unit_switches_keeps_the_mass_entered(weight, switches):
    settings = LifterSettings(load=weight, units=weight.units)
    for units in switches:
        settings = settings.in_units(units)
        # What is shown is the same mass, converted once from what was entered.
        assert settings.load == weight.to(units)
        assert float(Fraction(settings.load) * KG[units]) == pytest.approx(float(weight.kg), rel=1e-15, abs=1e-300)
    assert settings.in_units(weight.units).load == weight.value


#: What a lifter (or staff) can do, in any order: switch units, press up/down on the load or the one-rep max,
#: send a load or a one-rep max in either unit.
actions = st.one_of(
    st.tuples(st.just("units"), st.sampled_from(UNITS)),
    st.tuples(st.just("step_load"), st.integers(-8, 8).filter(bool)),
    st.tuples(st.just("step_one_rm"), st.integers(-8, 8).filter(bool)),
    st.tuples(st.just("set_load"), entered),
    st.tuples(st.just("set_one_rm"), st.builds(Weight, value=st.floats(0.5, 997.0), units=st.sampled_from(UNITS))),
)


def mass(weight):
    return None if weight is None else weight.kg


@settings(max_examples=300)
@given(actions=st.lists(actions, max_size=40))
def test_switches_steps_and_commands_never_drift_and_never_leave_a_load_above_the_max(actions):
    store = SettingsStore()
    for action, arg in actions:
        before = store.settings
        try:
            if action == "units":
                after = store.set_units(arg)
            elif action == "step_load":
                after = store.step_load(arg)
            elif action == "step_one_rm":
                after = store.step_one_rm(arg)
            elif action == "set_load":
                after = store.set_load(arg.value, arg.units)
            else:
                after = store.set_one_rm(arg.value, arg.units)
        except AboveOneRepMax:
            assert store.settings == before   # refused: nothing changed
            continue
        # Never a load above the max, whichever way it came.
        assert not above(after.entered_load, after.entered_one_rm)
        if action == "units":
            # A switch moves no weight: the masses are the very ones entered, and switching back is exact.
            assert (mass(after.entered_load), mass(after.entered_one_rm)) == \
                (mass(before.entered_load), mass(before.entered_one_rm))
            assert after.in_units(before.units) == before
        elif action.startswith("step"):
            what = "load" if action == "step_load" else "one_rm"
            value, other = getattr(after, what), getattr(after, "one_rm" if what == "load" else "load")
            # A press lands on a plate step of the units shown, or stops at the max (or the load), 0 or the limit.
            assert value is None or on_plate_step(value, after.units) or value == other \
                or value == getattr(before, what) or value == MAX_LOAD[after.units]
            assert after.units == before.units
        elif action == "set_load":
            assert after.entered_load == arg and after.in_units(arg.units).load == arg.value   # as sent, exactly
        else:
            assert after.entered_one_rm == arg and after.in_units(arg.units).one_rm == arg.value


def test_load_info_is_the_event_load_object():
    assert LifterSettings(load=100, one_rm=125).load_info().to_wire() == {
        "value": 100.0, "units": "kg", "one_rm": 125.0, "percent_1rm": 80.0}
    # In the other units: to a hundredth, with the percentage of the masses (not of the rounded numbers).
    assert LifterSettings(load=100, one_rm=125).in_units("lb").load_info().to_wire() == {
        "value": 220.46, "units": "lb", "one_rm": 275.58, "percent_1rm": 80.0}


# -- stepping ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, steps, units, expected", [
    (100, +1, "kg", 102.5),
    (100, -1, "kg", 97.5),
    (100, +4, "lb", 120),
    (101, +1, "kg", 102.5),   # typed in remotely between two steps: snaps the way it moves
    (101, -1, "kg", 100),
    (None, +1, "kg", 2.5),
    (0, -1, "kg", 0),         # never below zero
    (2.5, -4, "kg", 0),
    (997.5, +4, "kg", 1000),  # never above the limit
    (2200, +1, "lb", 2200),
    (2204.6, +1, "lb", 2204.6),   # 1000 kg shown in lb is over the lb limit: up never lowers it
    (2204.6, -1, "lb", 2200),
])
def test_step_weight(value, steps, units, expected):
    assert step_weight(value, steps, units) == expected


# -- SettingsStore -------------------------------------------------------------------------------------------

def test_every_change_reaches_the_listeners_once(tmp_path):
    store = SettingsStore(tmp_path)
    heard = []
    store.add_listener(heard.append)
    store.set_load(100)
    store.set_load(100)  # not a change
    store.set_one_rm(140)
    store.set_units("lb")
    store.set_exercise("single-leg")
    assert [(format_weight(s.load), s.one_rm and format_weight(s.one_rm), s.units, s.exercise) for s in heard] == [
        ("100", None, "kg", "squat"),
        ("100", "140", "kg", "squat"),
        ("220.5", "308.6", "lb", "squat"),
        ("220.5", "308.6", "lb", "single-leg"),
    ]


def test_a_refused_change_changes_nothing(tmp_path):
    store = SettingsStore(tmp_path)
    store.set_load(60)
    saved = store.path.read_text()
    heard = []
    store.add_listener(heard.append)
    with pytest.raises(ValueError):
        store.set_load(-5)
    with pytest.raises(ValueError):
        store.set_units("stone")
    assert store.settings.load == 60 and heard == [] and store.path.read_text() == saved


def test_settings_survive_a_restart(tmp_path):
    first = SettingsStore(tmp_path)
    first.set_load(100)
    first.set_one_rm(140)
    first.set_units("lb")
    first.set_exercise("single-leg", working_leg="right")
    again = SettingsStore(tmp_path)
    assert again.settings == LifterSettings(load=100, one_rm=140, units="kg", exercise="single-leg",
                                            working_leg="right").in_units("lb")
    assert again.settings.in_units("kg").load == 100   # as entered, not as a number rounded in lb
    saved = json.loads((tmp_path / "settings.json").read_text())
    # The number in the lifter's units, as older racks read it, and the weight as entered.
    assert saved["load"] == pytest.approx(220.462, abs=1e-3) and saved["units"] == "lb"
    assert saved["entered"]["load"] == {"value": 100.0, "units": "kg"}
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]  # no temporary files left behind


@pytest.mark.parametrize("content", ['{"load": 10', "[]", '{"load": -40}', '{"units": "stone"}', "\x00\xff"])
def test_an_unreadable_file_gives_the_defaults_and_a_warning(tmp_path, caplog, content):
    (tmp_path / "settings.json").write_text(content)
    with caplog.at_level(logging.WARNING, logger="rackwatch.load"):
        store = SettingsStore(tmp_path)
    assert store.settings == LifterSettings()
    assert "could not be read" in caplog.text and "defaults" in caplog.text
    assert (tmp_path / "settings.json.bad").read_text() == content  # kept for whoever wants to know why
    store.set_load(50)
    assert SettingsStore(tmp_path).settings.load == 50


def test_a_missing_folder_is_created_on_the_first_change(tmp_path):
    store = SettingsStore(tmp_path / "state" / "rack")
    assert store.settings == LifterSettings()
    store.set_load(20)
    assert SettingsStore(tmp_path / "state" / "rack").settings.load == 20


def test_an_unwritable_folder_keeps_the_change_for_this_run(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    store = SettingsStore(blocker)
    with caplog.at_level(logging.ERROR, logger="rackwatch.load"):
        store.set_load(80)
    assert store.settings.load == 80
    assert "could not save" in caplog.text


def test_a_store_without_a_folder_lives_in_memory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = SettingsStore()
    store.set_load(40)
    assert store.path is None and store.settings.load == 40 and list(tmp_path.iterdir()) == []


def test_a_failing_listener_does_not_stop_the_others(caplog):
    store = SettingsStore()
    heard = []

    def broken(settings):
        raise RuntimeError("display unplugged")
    store.add_listener(broken)
    store.add_listener(heard.append)
    with caplog.at_level(logging.ERROR, logger="rackwatch.load"):
        store.set_load(30)
    assert [s.load for s in heard] == [30] and "listener failed" in caplog.text
    store.remove_listener(broken)
    store.set_load(32.5)
    assert len(heard) == 2


def test_a_remote_value_in_the_other_units_is_kept_as_sent_and_shown_in_the_lifters_units():
    store = SettingsStore()
    assert store.set_load(225, units="lb").load == pytest.approx(102.058, abs=1e-3)  # shown in the rack's kg
    assert store.settings.units == "kg"
    assert store.set_one_rm(140, units="kg").one_rm == 140
    assert store.settings.in_units("lb").load == 225   # not 102.5 kg = 225.97 lb: no plate rounding on the way
    with pytest.raises(ValueError, match="2400 lb"):
        store.set_load(2400, units="lb")  # refused in the sender's own numbers


def test_a_remote_load_above_the_max_is_refused_in_the_senders_numbers():
    store = SettingsStore()
    store.set_one_rm(100)
    with pytest.raises(AboveOneRepMax, match=r"a load of 225 lb is above the one-rep max of 220\.5 lb \(100 kg\)"):
        store.set_load(225, units="lb")
    with pytest.raises(AboveOneRepMax, match="lower the load to 100 kg or less, or raise the one-rep max first"):
        store.set_load(125)
    store.set_load(90)
    with pytest.raises(AboveOneRepMax, match="a one-rep max of 80 kg is below the load on the bar, 90 kg"):
        store.set_one_rm(80)
    assert (store.settings.load, store.settings.one_rm) == (90, 100)
    assert store.set_one_rm(None).one_rm is None   # clearing the max is always possible
    assert store.set_load(125).load == 125        # and with no max, any load within the rack's range


def test_load_and_max_given_together_are_checked_together():
    # rackwatch run --load 120 --one-rm 130 on a rack whose saved max is 100: a new best, entered in one go.
    store = SettingsStore()
    store.set_load(100)
    store.set_one_rm(100)
    assert (store.update(load=120, one_rm=130).load, store.settings.one_rm) == (120, 130)
    with pytest.raises(AboveOneRepMax, match="the load of 140 kg is above the one-rep max of 130 kg"):
        store.update(load=140)
    assert store.update(units="lb", load=280).in_units("kg").one_rm == 130   # numbers in the units given
    assert store.settings.load == 280


def test_a_saved_load_above_its_max_keeps_the_load_and_drops_the_max(tmp_path, caplog):
    # Older racks allowed it (a "new best attempt"); judged as a percentage of that max it would be a 125 %
    # single, with caves tolerated. The max goes, with a warning; the load, units and exercise stay.
    (tmp_path / "settings.json").write_text('{"load": 125, "one_rm": 100, "units": "kg", "exercise": "squat"}')
    with caplog.at_level(logging.WARNING, logger="rackwatch.load"):
        store = SettingsStore(tmp_path)
    assert (store.settings.load, store.settings.one_rm, store.settings.percent_of_max) == (125, None, None)
    assert "above the one-rep max" in caplog.text and "Enter the lifter's one-rep max again" in caplog.text
    assert json.loads((tmp_path / "settings.json").read_text())["one_rm"] is None
    assert not (tmp_path / "settings.json.bad").exists()


def test_an_older_file_and_a_hand_edit_are_read_by_their_numbers(tmp_path):
    (tmp_path / "settings.json").write_text('{"load": 220, "one_rm": 310, "units": "lb"}')   # no "entered"
    assert SettingsStore(tmp_path).settings.entered_load == Weight(220, "lb")
    # Someone edited "load" by hand and left the old "entered" beside it: the number they typed wins.
    (tmp_path / "settings.json").write_text(
        '{"load": 200, "units": "lb", "entered": {"load": {"value": 100, "units": "kg"}}}')
    assert SettingsStore(tmp_path).settings.entered_load == Weight(200, "lb")


def test_working_leg_belongs_to_the_single_leg_squat():
    store = SettingsStore()
    assert store.set_exercise("single-leg", working_leg="left").working_leg == "left"
    assert store.set_exercise("squat").working_leg is None
    with pytest.raises(ValueError, match="single-leg"):
        store.set_exercise("squat", working_leg="right")
    with pytest.raises(ValueError, match="working leg"):
        store.set_exercise("single-leg", working_leg="middle")


def test_one_rep_max_steps_start_from_the_load_and_clear_below_one_step():
    store = SettingsStore()
    store.set_load(100)
    assert store.step_one_rm(-1).one_rm is None  # nothing to lower
    assert store.step_one_rm(+1).one_rm == 100
    assert store.step_one_rm(+4).one_rm == 110
    store.set_load(0)
    store.set_one_rm(2.5)
    assert store.step_one_rm(-1).one_rm is None


def test_the_first_max_step_starts_at_the_load_itself():
    store = SettingsStore()
    store.set_load(101)   # typed remotely, between plate steps
    assert store.step_one_rm(+1).one_rm == 101   # not 100: never below the load


def test_load_steps_stop_at_the_max_and_max_steps_stop_at_the_load():
    store = SettingsStore()
    store.set_one_rm(101)
    store.set_load(97.5)
    assert store.step_load(+1).load == 100
    assert store.step_load(+1).load == 101        # stops on the max itself, not on the next plate
    before = store.settings
    assert store.step_load(+4) == before          # at the max: nothing changes (the panel buzzes)
    assert store.step_one_rm(+1).one_rm == 102.5
    assert store.step_one_rm(-4).one_rm == 101    # down to the load, not below
    assert store.step_one_rm(-1).one_rm == 101
    # In pounds, with a max entered in kg: the steps are 5 lb, the last one lands on the max's own mass.
    store.set_load(95)
    store.set_one_rm(100)
    store.set_units("lb")
    assert store.step_load(+1).load == 210
    assert [store.step_load(+1).load for _ in range(3)] == [215, 220, pytest.approx(220.462, abs=1e-3)]
    assert store.settings.percent_of_max == 100


def test_steps_from_several_threads_all_count():
    # Button callbacks and the MQTT client run in different threads; no step may be lost between them.
    store = SettingsStore()
    threads = [threading.Thread(target=lambda: [store.step_load(+1) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.settings.load == 200 * 2.5
