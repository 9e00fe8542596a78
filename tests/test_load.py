"""The lifter's settings: validation, unit switching, and the store the panel and remote commands share."""

from __future__ import annotations

import json
import logging
import math
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rackwatch.load import MAX_LOAD, PLATE_STEP, LifterSettings, SettingsStore, step_weight


def on_plate_step(value: float, units: str) -> bool:
    steps = value / PLATE_STEP[units]
    return math.isclose(steps, round(steps), abs_tol=1e-9)


# -- LifterSettings --------------------------------------------------------------------------------------------

def test_defaults_mean_nothing_entered_yet():
    settings = LifterSettings()
    assert (settings.load, settings.one_rm, settings.units, settings.exercise) == (None, None, "kg", "squat")
    assert settings.load_info() is None


def test_zero_is_a_real_load_and_the_max_may_be_below_the_load():
    assert LifterSettings(load=0).load == 0
    assert LifterSettings(load=150, one_rm=140).one_rm == 140  # attempting a new best


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


@pytest.mark.parametrize("kg, lb", [(100, 220), (140, 310), (60, 130), (20, 45), (0, 0)])
def test_switching_to_pounds_converts_and_rounds_to_5_lb(kg, lb):
    assert LifterSettings(load=kg, units="kg").in_units("lb").load == lb


@pytest.mark.parametrize("lb, kg", [(225, 102.5), (315, 142.5), (135, 60), (45, 20)])
def test_switching_to_kilos_converts_and_rounds_to_2_5_kg(lb, kg):
    assert LifterSettings(load=lb, units="lb").in_units("kg").load == kg


def test_switching_units_converts_the_max_too_and_keeps_within_limits():
    switched = LifterSettings(load=1000, one_rm=1000, units="kg").in_units("lb")
    assert (switched.load, switched.one_rm, switched.units) == (2200, 2200, "lb")  # 2204.6 would be over
    assert LifterSettings(one_rm=1, units="lb").in_units("kg").one_rm == 2.5  # never rounds down to 0


weights = {units: st.one_of(st.none(), st.floats(0, MAX_LOAD[units])) for units in ("kg", "lb")}


@given(units=st.sampled_from(["kg", "lb"]), data=st.data())
def test_any_valid_settings_convert_to_valid_settings_on_the_plate_steps(units, data):
    load = data.draw(weights[units])
    one_rm = data.draw(st.one_of(st.none(), st.floats(0.1, MAX_LOAD[units])))
    other = "lb" if units == "kg" else "kg"
    switched = LifterSettings(load=load, one_rm=one_rm, units=units).in_units(other)
    for value in (switched.load, switched.one_rm):
        assert value is None or (0 <= value <= MAX_LOAD[other] and on_plate_step(value, other))


def test_load_info_is_the_event_load_object():
    assert LifterSettings(load=100, one_rm=125).load_info().to_wire() == {
        "value": 100.0, "units": "kg", "one_rm": 125.0, "percent_1rm": 80.0}


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
    assert [(s.load, s.one_rm, s.units, s.exercise) for s in heard] == [
        (100, None, "kg", "squat"),
        (100, 140, "kg", "squat"),
        (220, 310, "lb", "squat"),
        (220, 310, "lb", "single-leg"),
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
    assert again.settings == LifterSettings(load=220, one_rm=310, units="lb", exercise="single-leg",
                                            working_leg="right")
    assert json.loads((tmp_path / "settings.json").read_text())["load"] == 220
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


def test_a_remote_value_in_the_other_units_is_converted_to_the_lifters_units():
    store = SettingsStore()
    assert store.set_load(225, units="lb").load == 102.5  # the rack stays in kg, on its plate steps
    assert store.set_one_rm(140, units="kg").one_rm == 140
    assert store.settings.units == "kg"
    with pytest.raises(ValueError, match="2400 lb"):
        store.set_load(2400, units="lb")  # refused in the sender's own numbers


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
    store.set_one_rm(2.5)
    assert store.step_one_rm(-1).one_rm is None


def test_steps_from_several_threads_all_count():
    # Button callbacks and the MQTT client run in different threads; no step may be lost between them.
    store = SettingsStore()
    threads = [threading.Thread(target=lambda: [store.step_load(+1) for _ in range(50)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.settings.load == 200 * 2.5
