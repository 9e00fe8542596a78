"""The published contract (contract/*.schema.json, asyncapi.yaml) matches what the code really sends.

The schemas are generated from the typed events and commands; these tests check that the committed files are
what the types generate, that what the rack sends passes them, that they refuse what a dashboard could not use,
and that the wire form reads back into the same types (:func:`rackwatch.events.parse_event`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import jsonschema
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import real_parts
from mqtt_broker import sample_health, sample_not_counted, sample_rep, sample_set, sample_state
from rackwatch import contract, events
from rackwatch.events import (Advice, HealthEvent, LegValgus, ReplyEvent, RepEvent, SetEvent, StateEvent, Valgus,
                              load_info, parse_event)
from rackwatch.discovery import discovery_configs
from rackwatch.mqtt import ROUTES, LinkSettings


def is_valid(payload, name=None) -> bool:
    try:
        contract.validate(payload, name)
        return True
    except jsonschema.ValidationError:
        return False


def parses(payload) -> bool:
    try:
        parse_event(payload)
        return True
    except pydantic.ValidationError:
        return False


@pytest.mark.parametrize("name", contract.SCHEMAS)
def test_every_schema_is_a_valid_draft_2020_12_schema(name):
    schema = contract.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_committed_schemas_are_what_the_types_generate():
    assert contract.stale_files() == [], "run: python -m rackwatch.contract, and commit the schema files"
    # the same check as a command, for CI and for people
    done = subprocess.run([sys.executable, "-m", "rackwatch.contract", "--check"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


KEYWORDS = {"$schema", "$id", "$ref", "$defs", "title", "description", "default", "type", "enum", "const",
            "properties", "required", "additionalProperties", "items", "anyOf", "oneOf", "allOf", "not", "if", "then",
            "else", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
            "pattern", "format", "propertyNames"}


@pytest.mark.parametrize("name", contract.SCHEMAS)
def test_the_generated_schemas_use_only_keywords_json_schema_knows(name):
    """A constraint pydantic writes in its own words (``ge``, ``le``) would be silently ignored by validators."""
    def walk(node, where):
        if isinstance(node, list):
            for item in node:
                walk(item, where)
        elif isinstance(node, dict):
            for key, value in node.items():
                assert key in KEYWORDS, f"{name}: unknown keyword {key!r} at {where}"
                if key in ("properties", "$defs"):
                    for child, schema in value.items():
                        walk(schema, f"{where}/{key}/{child}")
                elif key not in ("enum", "const", "default", "required"):
                    walk(value, f"{where}/{key}")
    walk(contract.load_schema(name), "#")


def test_the_check_notices_a_schema_edited_by_hand(tmp_path, monkeypatch):
    for path in contract.FOLDER.glob("*.schema.json"):
        (tmp_path / path.name).write_text(path.read_text())
    rep = tmp_path / "rep.schema.json"
    rep.write_text(rep.read_text().replace('"minimum": 1', '"minimum": 0'))
    monkeypatch.setattr(contract, "FOLDER", tmp_path)
    assert contract.stale_files() == [rep]
    assert contract.write_schemas() == [rep] and contract.stale_files() == []


def test_the_sample_events_built_with_the_real_types_are_valid():
    for event in (sample_rep("rack01"), sample_rep("rack01", 3, load=False), sample_set("rack01"),
                  sample_not_counted("rack01"), sample_not_counted("rack01", set_id="set-1"), sample_state("rack01"),
                  sample_state(None), sample_health("rack01")):
        contract.validate(event)
        contract.validate(json.loads(event.to_json()))


def test_the_wire_form_is_todays_json():
    """Same keys in the same order, numbers rounded as before, ``schema`` spelt so, time in UTC milliseconds."""
    event = sample_rep("rack01").model_copy(update={"t_bottom": 14.123456, "depth": 0.4166666})
    wire = json.loads(event.to_json())
    assert list(wire) == ["type", "schema", "id", "rack", "time", "set_id", "rep", "exercise", "working_leg",
                          "t_start", "t_bottom", "t_end", "load", "valgus", "severity", "verdict", "depth",
                          "descent_s", "ascent_s", "ascent_speed", "stance_ratio", "hip_shift", "unjudged_reason"]
    assert (wire["type"], wire["schema"], wire["t_bottom"], wire["depth"]) == ("rep", 1, 14.123, 0.417)
    assert event.depth == 0.4166666                          # inside the program: full precision
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", wire["time"])
    assert wire["load"] == {"value": 100.0, "units": "kg", "one_rm": 140.0, "percent_1rm": 71.4}
    assert list(wire["valgus"]["right"]) == ["severity", "measured", "cave", "peak_phase", "t_peak",
                                             "fppa_change_deg", "medial_shift"]
    health = json.loads(HealthEvent(rack="r", fps=14.8765, inference_ms=41.333, dropped_frames=0, cpu_temp_c=None,
                                    throttled=None, outbox_depth=0).to_json())
    assert (health["fps"], health["inference_ms"]) == (14.88, 41.33)


def test_the_wire_reads_back_into_the_same_types():
    for event in (sample_rep("rack01"), sample_not_counted("rack01"), sample_set("rack01"), sample_state("rack01"),
                  sample_health("rack01"),
                  ReplyEvent.answer("rack01", command_id="c1", command="load", ok=False, reason="too heavy")):
        for wire in (event.to_json(), event.to_json().encode(), event.to_wire()):
            back = parse_event(wire)
            assert type(back) is type(event) and back.id == event.id and back.time == event.time.replace(
                microsecond=event.time.microsecond // 1000 * 1000)
            assert back.to_wire() == event.to_wire()


def test_edge_cases_the_types_allow_are_valid():
    single_leg = RepEvent(
        rack="rack01", set_id="s", rep=1, exercise="single-leg", working_leg="left", t_start=0, t_bottom=1, t_end=2,
        load=None, valgus=Valgus(left=LegValgus(severity="moderate", measured="moderate", cave=0.08,
                                                peak_phase="bottom", t_peak=1.0), right=None),
        severity="moderate", verdict="cave",
        depth=0.3, descent_s=1, ascent_s=1, ascent_speed=0.2, stance_ratio=None, hip_shift=0.01)
    unjudged = RepEvent(
        rack="rack01", set_id="s", rep=2, exercise="squat", working_leg="both", t_start=0, t_bottom=1, t_end=2,
        load=load_info(60, "lb", None), valgus=Valgus(left=None, right=None), severity=None,
        verdict="unjudged", depth=0.3, descent_s=1, ascent_s=1, ascent_speed=0.2, stance_ratio=1.1, hip_shift=None,
        unjudged_reason="the camera is too far to the side to judge the knees")
    empty_set = SetEvent(rack="rack01", set_id="s", exercise="squat", load=None, reps=0, clean_reps=0,
                         worst_rep=None, cave_onset_rep=None, weaker_side=None, velocity_loss_pct=None,
                         remarks=[], cues=[], advice=Advice(action="hold", next_load=None, text=""))
    idle = StateEvent(rack="rack01", phase="standing", lifter_seen=False, load=None, exercise="single-leg",
                      set_id=None, reps_in_set=0)
    cold = HealthEvent(rack="rack01", fps=0, inference_ms=0, dropped_frames=0, cpu_temp_c=None, throttled=None,
                       outbox_depth=0)
    ok = ReplyEvent.answer("rack01", command_id="c1", command="load", ok=True)
    broken = ReplyEvent.answer("rack01", command_id=None, command=None, ok=False, reason="not JSON")
    for event in (single_leg, unjudged, empty_set, idle, cold, ok, broken):
        contract.validate(event)
        assert parse_event(event.to_json()).to_wire() == event.to_wire()


def test_an_older_rack_without_unjudged_reason_is_still_valid():
    wire = sample_rep("rack01").to_wire()
    del wire["unjudged_reason"]
    assert is_valid(wire, "rep") and parses(wire)


def test_an_older_racks_health_and_state_without_the_later_fields_are_still_valid():
    """One rule for fields added after the first racks: the schema does not require them, the parser defaults them."""
    health = sample_health("rack01").model_copy(update={"software_version": "0.1.0"}).to_wire()
    later = ("events_dropped", "events_unreadable", "events_refused", "outbox_damaged", "snapshots_skipped",
             "pump_failures", "disk_full", "events_in_memory", "software_version")
    assert set(later) <= set(health) and is_valid(health, "health")
    older = {k: v for k, v in health.items() if k not in later}
    assert is_valid(older, "health") and parses(older)
    back = parse_event(older)
    assert back.software_version is None and back.events_dropped == 0 and back.disk_full is False
    state = sample_state("rack01").to_wire()
    older_state = {k: v for k, v in state.items() if k not in ("camera", "camera_reason", "idle")}
    assert is_valid(older_state, "state") and parses(older_state)
    # The fields every rack has always sent stay required.
    for name, wire, field in (("health", health, "outbox_depth"), ("state", state, "reps_in_set")):
        del wire[field]
        assert not is_valid(wire, name) and not parses(wire)


def test_a_set_counts_what_was_not_counted_and_an_older_racks_set_without_it_is_still_valid():
    counted = sample_set("rack01").model_copy(update={"not_counted": {"jump": 2, "start_unseen": 1}}).to_wire()
    assert counted["not_counted"] == {"jump": 2, "start_unseen": 1} and is_valid(counted, "set") and parses(counted)
    # Every movement counted: the field stays off the wire, so a dashboard older than it still takes the set.
    older = sample_set("rack01").to_wire()
    assert "not_counted" not in older and "not_counted" not in json.loads(sample_set("rack01").to_json())
    assert is_valid(older, "set") and parse_event(older).not_counted == {}


def test_the_types_refuse_what_cannot_be_sent():
    with pytest.raises(pydantic.ValidationError):
        HealthEvent.model_validate({**sample_health("rack01").to_wire(), "fps": float("nan")})
    with pytest.raises(pydantic.ValidationError):
        HealthEvent(rack="r", fps=float("inf"), inference_ms=1, dropped_frames=0, cpu_temp_c=None, throttled=None,
                    outbox_depth=0)
    with pytest.raises(pydantic.ValidationError):                   # frozen: an event is a value
        sample_rep("rack01").rep = 2
    with pytest.raises(pydantic.ValidationError):                   # extra fields forbidden
        StateEvent(rack="r", phase="standing", lifter_seen=True, load=None, exercise="squat", set_id=None,
                   reps_in_set=0, selfie="...")
    with pytest.raises(pydantic.ValidationError):                   # a rejection says why
        ReplyEvent(rack="r", command_id="c1", command="load", status="rejected", reason=None)


BREAKAGES = {
    "rep": [
        ("no-id", lambda e: e.pop("id")),
        ("no-time", lambda e: e.pop("time")),
        ("schema-2", lambda e: e.update(schema=2)),
        ("bad-time", lambda e: e.update(time="yesterday")),
        ("bad-type", lambda e: e.update(type="set")),
        ("bad-severity", lambda e: e.update(severity="catastrophic")),
        ("bad-verdict", lambda e: e.update(verdict="meh")),
        ("rep-0", lambda e: e.update(rep=0)),
        ("empty-set-id", lambda e: e.update(set_id="")),
        ("negative-descent", lambda e: e.update(descent_s=-1)),
        ("bad-working-leg", lambda e: e.update(working_leg="middle")),
        ("leg-without-severity", lambda e: e["valgus"]["left"].pop("severity")),   # a judged leg needs it
        ("bad-phase", lambda e: e["valgus"]["left"].update(peak_phase="warm-up")),
        ("one-leg-missing", lambda e: e["valgus"].pop("right")),
        ("negative-load", lambda e: e.update(load={"value": -20, "units": "kg", "one_rm": None, "percent_1rm": None})),
        ("bad-units", lambda e: e.update(load={"value": 20, "units": "stone", "one_rm": None, "percent_1rm": None})),
        ("zero-one-rm", lambda e: e["load"].update(one_rm=0)),
        ("depth-as-text", lambda e: e.update(depth="deep")),
        ("extra-field", lambda e: e.update(selfie="base64...")),                # no undeclared fields, ever
        ("extra-leg-field", lambda e: e["valgus"]["left"].update(pixels=[1, 2])),
    ],
    "set": [
        ("negative-reps", lambda e: e.update(reps=-1)),
        ("worst-rep-0", lambda e: e.update(worst_rep=0)),
        ("bad-side", lambda e: e.update(weaker_side="both")),
        ("bad-action", lambda e: e["advice"].update(action="double")),
        ("advice-without-text", lambda e: e["advice"].pop("text")),
        ("negative-next-load", lambda e: e["advice"].update(next_load=-5)),
        ("remark-not-text", lambda e: e.update(remarks=[3])),
        ("no-advice", lambda e: e.pop("advice")),
        ("not-counted-unknown-why", lambda e: e.update(not_counted={"cartwheel": 1})),
        ("not-counted-zero", lambda e: e.update(not_counted={"jump": 0})),
    ],
    "not_counted": [
        ("unknown-why", lambda e: e.update(why="cartwheel")),
        ("no-why", lambda e: e.pop("why")),
        ("no-reason", lambda e: e.pop("reason")),
        ("empty-reason", lambda e: e.update(reason="")),
        ("reason-not-text", lambda e: e.update(reason=3)),
        ("no-set-id", lambda e: e.pop("set_id")),
        ("empty-set-id", lambda e: e.update(set_id="")),
        ("end-as-text", lambda e: e.update(t_end="later")),
        ("bad-exercise", lambda e: e.update(exercise="burpee")),
        ("extra-field", lambda e: e.update(video="base64...")),
    ],
    "state": [
        ("bad-phase", lambda e: e.update(phase="resting")),
        ("seen-as-text", lambda e: e.update(lifter_seen="yes")),
        ("bad-exercise", lambda e: e.update(exercise="deadlift")),
        ("negative-reps", lambda e: e.update(reps_in_set=-1)),
        ("no-load", lambda e: e.pop("load")),
    ],
    "health": [
        ("negative-fps", lambda e: e.update(fps=-1)),
        ("fractional-drops", lambda e: e.update(dropped_frames=1.5)),
        ("negative-outbox", lambda e: e.update(outbox_depth=-1)),
        ("throttled-as-text", lambda e: e.update(throttled="no")),
    ],
    "reply": [
        ("bad-status", lambda e: e.update(status="maybe")),
        ("rejected-without-reason", lambda e: e.update(reason=None)),
        ("ok-with-reason", lambda e: e.update(status="ok")),
        ("unknown-command", lambda e: e.update(command="reboot")),
    ],
}
SAMPLES = {"rep": lambda: sample_rep("rack01"), "set": lambda: sample_set("rack01"),
           "not_counted": lambda: sample_not_counted("rack01"),
           "state": lambda: sample_state("rack01"), "health": lambda: sample_health("rack01"),
           "reply": lambda: ReplyEvent.answer("rack01", command_id="c1", command="load", ok=False, reason="no")}


@pytest.mark.parametrize("kind, breakage", [(k, b) for k, bs in BREAKAGES.items() for _, b in bs],
                         ids=[f"{k}-{name}" for k, bs in BREAKAGES.items() for name, _ in bs])
def test_the_schemas_and_the_parser_refuse_what_a_dashboard_could_not_use(kind, breakage):
    event = SAMPLES[kind]().to_wire()
    assert is_valid(event, kind) and parses(event)
    breakage(event)
    assert not is_valid(event, kind)
    assert not parses(event)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
maybe = lambda s: st.none() | s  # noqa: E731
loads = maybe(st.builds(load_info, positive, st.sampled_from(events.UNITS),
                        maybe(st.floats(1, 1e4, allow_nan=False))))
leg = maybe(st.builds(LegValgus, severity=st.sampled_from(events.SEVERITIES),
                      measured=st.sampled_from(events.SEVERITIES), cave=finite,
                      peak_phase=st.sampled_from(["descent", "bottom", "ascent"]), t_peak=finite,
                      fppa_change_deg=maybe(finite), medial_shift=maybe(finite)))


@settings(max_examples=150, deadline=None)
@given(rep=st.integers(1, 50), exercise=st.sampled_from(events.EXERCISES),
       working_leg=st.sampled_from(["left", "right", "both"]), times=st.tuples(finite, finite, finite),
       load=loads, left=leg, right=leg, severity=st.sampled_from(events.SEVERITIES),
       verdict=st.sampled_from(["clean", "note", "cave"]), depth=finite, durations=st.tuples(positive, positive),
       speed=finite, stance=maybe(finite), shift=maybe(finite))
def test_any_rep_the_types_accept_is_valid_on_the_wire_and_reads_back(rep, exercise, working_leg, times, load, left,
                                                                      right, severity, verdict, depth, durations,
                                                                      speed, stance, shift):
    event = RepEvent(rack="rack01", set_id="s1", rep=rep, exercise=exercise, working_leg=working_leg,
                     t_start=times[0], t_bottom=times[1], t_end=times[2], load=load,
                     valgus=Valgus(left=left, right=right), severity=severity, verdict=verdict,
                     depth=depth, descent_s=durations[0], ascent_s=durations[1], ascent_speed=speed,
                     stance_ratio=stance, hip_shift=shift)
    wire = json.loads(event.to_json())     # as a consumer sees it, after the wire
    contract.validate(wire)
    assert parse_event(wire).to_wire() == wire


def test_the_asyncapi_document_describes_the_topics_and_qos_the_link_uses():
    text = contract.asyncapi_text()
    assert re.search(r"^asyncapi: 3\.0\.0$", text, re.M)
    for leaf, (_, qos, retain) in ROUTES.items():
        assert f"'{{root}}/{{rack}}/{leaf}'" in text, leaf
        assert f"payload: {{$ref: './{leaf}.schema.json'}}" in text, leaf
    assert "'{root}/{rack}/availability'" in text and "'{root}/{rack}/cmd/{name}'" in text
    # the QoS/retain bindings, in the order the channels are listed: availability, state, rep, not_counted, set,
    # health
    bindings = re.findall(r"bindings: \{mqtt: \{qos: (\d), retain: (true|false)\}\}", text)[:6]
    expected = [(1, True)] + [(ROUTES[k][1], ROUTES[k][2]) for k in ("state", "rep", "not_counted", "set", "health")]
    assert [(int(q), r == "true") for q, r in bindings] == expected
    for name in contract.SCHEMAS:
        assert f"./{name}.schema.json" in text


def test_the_asyncapi_document_parses_as_yaml():
    yaml = real_parts.module("yaml", "pip install -e '.[test]' (PyYAML is a test extra, not a dependency)")
    document = yaml.safe_load(contract.asyncapi_text())
    assert set(document["channels"]) >= {"availability", "state", "rep", "not_counted", "set", "health", "command",
                                         "reply"}
    # the example is a valid event
    contract.validate(document["components"]["messages"]["not_counted"]["examples"][0]["payload"])


def test_home_assistant_templates_only_read_fields_the_contract_has():
    settings = LinkSettings(rack="rack01")
    schemas = {leaf: contract.load_schema(leaf)["properties"] for leaf in ("state", "rep", "health")}
    for topic, config in discovery_configs(settings):
        leaf = config["state_topic"].rsplit("/", 1)[1]
        for field in re.findall(r"value_json\.(\w+)", config["value_template"]):
            assert field in schemas[leaf], f"{topic} reads {field!r}, which {leaf} events do not have"
