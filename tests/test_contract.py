"""The published contract (contract/*.schema.json, asyncapi.yaml) matches what the code really sends."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import real_parts
from mqtt_broker import sample_health, sample_rep, sample_set, sample_state
from rackwatch import contract, events
from rackwatch.commands import reply_event
from rackwatch.mqtt import ROUTES, LinkSettings, discovery_configs


def is_valid(payload, name=None) -> bool:
    try:
        contract.validate(payload, name)
        return True
    except jsonschema.ValidationError:
        return False


@pytest.mark.parametrize("name", [*contract.SCHEMAS, "common"])
def test_every_schema_is_a_valid_draft_2020_12_schema(name):
    schema = contract.load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_the_sample_events_built_with_the_real_builders_are_valid():
    for event in (sample_rep("rack01"), sample_rep("rack01", 3, load=False), sample_set("rack01"),
                  sample_state("rack01"), sample_state(None), sample_health("rack01")):
        contract.validate(event)


def test_edge_cases_the_builders_allow_are_valid():
    single_leg = events.rep_event(
        "rack01", set_id="s", rep=1, exercise="single-leg", working_leg="left", t_start=0, t_bottom=1, t_end=2,
        load=None, valgus={"left": events.leg_valgus(severity="moderate", measured="moderate", cave=0.08,
                                                     peak_phase="bottom", t_peak=1.0), "right": None},
        severity="moderate", verdict="cave",
        depth=0.3, descent_s=1, ascent_s=1, ascent_speed=0.2, stance_ratio=None, hip_shift=0.01)
    contract.validate(single_leg)
    unjudged = events.rep_event(
        "rack01", set_id="s", rep=2, exercise="squat", working_leg="both", t_start=0, t_bottom=1, t_end=2,
        load=events.load_info(60, "lb", None), valgus={"left": None, "right": None}, severity=None,
        verdict="unjudged", depth=0.3, descent_s=1, ascent_s=1, ascent_speed=0.2, stance_ratio=1.1, hip_shift=None,
        unjudged_reason="the camera is too far to the side to judge the knees")
    contract.validate(unjudged)
    empty_set = events.set_event("rack01", set_id="s", exercise="squat", load=None, reps=0, clean_reps=0,
                                 worst_rep=None, cave_onset_rep=None, weaker_side=None, velocity_loss_pct=None,
                                 remarks=[], cues=[], advice={"action": "hold", "next_load": None, "text": ""})
    contract.validate(empty_set)
    idle = events.state_event("rack01", phase="standing", lifter_seen=False, load=None, exercise="single-leg",
                              set_id=None, reps_in_set=0)
    contract.validate(idle)
    cold = events.health_event("rack01", fps=0, inference_ms=0, dropped_frames=0, cpu_temp_c=None, throttled=None,
                               outbox_depth=0)
    contract.validate(cold)
    for reply in (reply_event("rack01", command_id="c1", command="load", ok=True),
                  reply_event("rack01", command_id=None, command=None, ok=False, reason="not JSON")):
        contract.validate(reply)


@pytest.mark.parametrize("breakage", [
    lambda e: e.pop("id"),
    lambda e: e.update(schema=2),
    lambda e: e.update(time="yesterday"),
    lambda e: e.update(severity="catastrophic"),
    lambda e: e.update(rep=0),
    lambda e: e["valgus"]["left"].pop("severity"),                           # a judged leg needs its severity
    lambda e: e["valgus"]["left"].update(peak_phase="warm-up"),
    lambda e: e.update(load={"value": -20, "units": "kg", "one_rm": None, "percent_1rm": None}),
    lambda e: e.update(load={"value": 20, "units": "stone", "one_rm": None, "percent_1rm": None}),
    lambda e: e.update(selfie="base64..."),                                   # no undeclared fields, ever
], ids=["no-id", "schema-2", "bad-time", "bad-severity", "rep-0", "leg-without-severity", "bad-phase", "negative-load",
        "bad-units", "extra-field"])
def test_the_rep_schema_rejects_what_a_dashboard_could_not_use(breakage):
    event = sample_rep("rack01")
    breakage(event)
    assert not is_valid(event, "rep")


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
maybe = lambda s: st.none() | s  # noqa: E731
loads = maybe(st.builds(events.load_info, positive, st.sampled_from(events.UNITS),
                        maybe(st.floats(1, 1e4, allow_nan=False))))
leg = maybe(st.builds(events.leg_valgus, severity=st.sampled_from(events.SEVERITIES),
                      measured=st.sampled_from(events.SEVERITIES), cave=finite,
                      peak_phase=st.sampled_from(["descent", "bottom", "ascent"]), t_peak=finite,
                      fppa_change_deg=maybe(finite), medial_shift=maybe(finite)))


@settings(max_examples=150, deadline=None)
@given(rep=st.integers(1, 50), exercise=st.sampled_from(events.EXERCISES),
       working_leg=st.sampled_from(["left", "right", "both"]), times=st.tuples(finite, finite, finite),
       load=loads, left=leg, right=leg, severity=st.sampled_from(events.SEVERITIES),
       verdict=st.sampled_from(["clean", "note", "cave"]), depth=finite, durations=st.tuples(positive, positive),
       speed=finite, stance=maybe(finite), shift=maybe(finite))
def test_any_rep_the_builder_makes_from_sensible_inputs_is_valid(rep, exercise, working_leg, times, load, left,
                                                                  right, severity, verdict, depth, durations,
                                                                  speed, stance, shift):
    event = events.rep_event("rack01", set_id="s1", rep=rep, exercise=exercise, working_leg=working_leg,
                             t_start=times[0], t_bottom=times[1], t_end=times[2], load=load,
                             valgus={"left": left, "right": right}, severity=severity, verdict=verdict,
                             depth=depth, descent_s=durations[0], ascent_s=durations[1], ascent_speed=speed,
                             stance_ratio=stance, hip_shift=shift)
    contract.validate(json.loads(json.dumps(event)))   # as a consumer sees it, after the wire


def test_the_asyncapi_document_describes_the_topics_and_qos_the_link_uses():
    text = contract.asyncapi_text()
    assert re.search(r"^asyncapi: 3\.0\.0$", text, re.M)
    for leaf, (_, qos, retain) in ROUTES.items():
        assert f"'{{root}}/{{rack}}/{leaf}'" in text, leaf
        assert f"payload: {{$ref: './{leaf}.schema.json'}}" in text, leaf
    assert "'{root}/{rack}/availability'" in text and "'{root}/{rack}/cmd/{name}'" in text
    # the QoS/retain bindings, in the order the channels are listed: availability, state, rep, set, health
    bindings = re.findall(r"bindings: \{mqtt: \{qos: (\d), retain: (true|false)\}\}", text)[:5]
    expected = [(1, True)] + [(ROUTES[k][1], ROUTES[k][2]) for k in ("state", "rep", "set", "health")]
    assert [(int(q), r == "true") for q, r in bindings] == expected
    for name in contract.SCHEMAS:
        assert f"./{name}.schema.json" in text


def test_the_asyncapi_document_parses_as_yaml():
    yaml = real_parts.module("yaml", "pip install -e '.[test]' (PyYAML is a test extra, not a dependency)")
    document = yaml.safe_load(contract.asyncapi_text())
    assert set(document["channels"]) >= {"availability", "state", "rep", "set", "health", "command", "reply"}


def test_home_assistant_templates_only_read_fields_the_contract_has():
    settings = LinkSettings(rack="rack01")
    schemas = {leaf: contract.load_schema(leaf)["properties"] for leaf in ("state", "rep", "health")}
    for topic, config in discovery_configs(settings):
        leaf = config["state_topic"].rsplit("/", 1)[1]
        for field in re.findall(r"value_json\.(\w+)", config["value_template"]):
            assert field in schemas[leaf], f"{topic} reads {field!r}, which {leaf} events do not have"
