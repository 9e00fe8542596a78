"""Commands are untrusted input: the parser accepts exactly the documented payloads and explains every refusal;
over a real broker, hostile payloads get a "rejected" reply with the reason and the link carries on."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtt_broker import Subscriber
from rackwatch import contract
from rackwatch.commands import (RATE_BURST, CommandLog, CommandRejected, Identify, SetExercise, SetLoad,
                                SetOneRepMax, SetUnits, parse_command)
from rackwatch.mqtt import LinkSettings, RackLink


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


# -- the parser ----------------------------------------------------------------------------------------------------

def test_each_command_parses_into_its_typed_form():
    assert parse_command("rackwatch/rack01/cmd/load", payload(id="c1", value=102.5, units="kg")) == \
        SetLoad(id="c1", value=102.5, units="kg")
    assert parse_command("load", payload(id="c2", value=None, units="lb")) == SetLoad(id="c2", value=None, units="lb")
    assert parse_command("one_rm", payload(id="c3", value=315, units="lb")) == SetOneRepMax(id="c3", value=315.0, units="lb")
    assert parse_command("units", payload(id="c4", units="lb")) == SetUnits(id="c4", units="lb")
    assert parse_command("exercise", payload(id="c5", exercise="single-leg", working_leg="left")) == \
        SetExercise(id="c5", exercise="single-leg", working_leg="left")
    assert parse_command("exercise", payload(id="c6", exercise="squat")) == SetExercise(id="c6", exercise="squat")
    assert parse_command("identify", payload(id="c7")) == Identify(id="c7", seconds=10)
    assert parse_command("identify", payload(id="c8", seconds=30)) == Identify(id="c8", seconds=30)
    assert parse_command("load", payload(id="c9", value=0, units="kg")).value == 0.0   # an empty bar
    assert parse_command("load", payload(id="c10", value=2200, units="lb")).value == 2200.0


HOSTILE = [
    # (name, payload, words the reason must contain)
    ("load", b"\xff\xfe\x00{", "UTF-8"),
    ("load", b"not json at all", "not valid JSON"),
    ("load", b"", "not valid JSON"),
    ("load", b"[1, 2, 3]", "JSON object"),
    ("load", b"42", "JSON object"),
    ("load", b'{"id": "a", "value": NaN, "units": "kg"}', "NaN"),
    ("load", b'{"id": "a", "value": 1e999, "units": "kg"}', '"value" must be a number'),
    ("load", b'{"id": "a", "value": 10, "value": 2000, "units": "kg"}', "repeated field"),
    ("load", b"[" * 3000 + b"]" * 3000, "bytes"),                       # oversize (and absurdly deep)
    ("load", b"[" * 2000 + b"]" * 2000, "not valid JSON"),              # deep nesting under the size limit
    ("load", payload(id="a", value="100", units="kg"), '"value" must be a number'),
    ("load", payload(id="a", value=True, units="kg"), '"value" must be a number'),
    ("load", payload(id="a", value=-5, units="kg"), "out of range"),
    ("load", payload(id="a", value=1000.5, units="kg"), "at most 1000 kg"),
    ("load", payload(id="a", value=2201, units="lb"), "at most 2200 lb"),
    ("load", payload(id="a", value=100, units="stone"), '"units" must be "kg" or "lb"'),
    ("load", payload(id="a", value=100), '"units" is missing'),
    ("load", payload(id="a", units="kg"), '"value" is missing'),
    ("load", payload(id="a", value=100, units="kg", admin=True), "unknown field"),
    ("load", payload(value=100, units="kg"), 'no "id"'),
    ("load", payload(id="", value=100, units="kg"), '"id" must be'),
    ("load", payload(id="a/b#", value=100, units="kg"), '"id" must be'),
    ("load", payload(id=7, value=100, units="kg"), '"id" must be'),
    ("load", b'{"id": "a", "value": 100, "units": "kg", "pad": "' + b"x" * 5000 + b'"}', "at most 4096 bytes"),
    ("one_rm", payload(id="a", value=0, units="kg"), "above 0"),
    ("units", payload(id="a", units=["kg"]), '"units" must be'),
    ("exercise", payload(id="a", exercise="deadlift"), '"exercise" must be'),
    ("exercise", payload(id="a", exercise="squat", working_leg="left"), "only applies"),
    ("exercise", payload(id="a", exercise="single-leg", working_leg="middle"), '"working_leg" must be'),
    ("identify", payload(id="a", seconds=0), '"seconds" must be'),
    ("identify", payload(id="a", seconds=2.5), '"seconds" must be'),
    ("identify", payload(id="a", seconds=10 ** 30), '"seconds" must be'),
    ("identify", payload(id="a", seconds=True), '"seconds" must be'),
    ("identify", payload(id="a", seconds="10"), '"seconds" must be'),
    # numbers of any size: a 400-digit value once raised OverflowError and got no reply at all
    ("load", b'{"id": "a", "value": ' + b"9" * 400 + b', "units": "kg"}', '"value" must be a number'),
    ("load", b'{"id": "a", "value": -' + b"9" * 400 + b', "units": "kg"}', '"value" must be a number'),
    ("one_rm", b'{"id": "a", "value": ' + b"9" * 4000 + b', "units": "lb"}', '"value" must be a number'),
    ("load", b'{"id": "a", "value": 1e400, "units": "kg"}', '"value" must be a number'),
    ("load", b'{"id": "a", "value": 1' + b"0" * 400 + b'.5, "units": "kg"}', '"value" must be a number'),
    ("identify", b'{"id": "a", "seconds": ' + b"9" * 400 + b"}", '"seconds" must be'),
    ("identify", b'{"id": "a", "seconds": 1e300}', '"seconds" must be'),
    ("identify", b'{"id": "a", "seconds": 1e999}', '"seconds" must be'),
    ("exercise", payload(id="a", exercise="single-leg", working_leg=None), '"working_leg" must be'),
    ("exercise", payload(id="a"), '"exercise" is missing'),
    ("reboot", payload(id="a"), "unknown command"),
    ("rackwatch/rack01/cmd/", payload(id="a"), "unknown command"),
]


@pytest.mark.parametrize("name, raw, reason", HOSTILE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(HOSTILE)])
def test_hostile_payloads_are_rejected_with_a_reason(name, raw, reason):
    with pytest.raises(CommandRejected) as caught:
        parse_command(name, raw)
    assert isinstance(caught.value, ValueError)
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 300        # never echoes a huge payload back


def test_a_rejection_keeps_the_command_id_when_it_could_be_read():
    with pytest.raises(CommandRejected) as caught:
        parse_command("rackwatch/rack01/cmd/load", payload(id="staff-7", value=-1, units="kg"))
    assert (caught.value.command_id, caught.value.name) == ("staff-7", "load")
    with pytest.raises(CommandRejected) as caught:
        parse_command("load", b"\x00\x01")
    assert caught.value.command_id is None


# Numbers of every size: unbounded integers (hundreds of digits), floats up to the largest there is.
big_integers = st.integers() | st.integers(10 ** 300, 10 ** 1200) | st.integers(-10 ** 1200, -10 ** 300)
huge_floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: abs(x) > 1e300 or abs(x) < 1e-300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | big_integers | huge_floats
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)
names = st.sampled_from(["load", "one_rm", "units", "exercise", "identify", "reboot", "rackwatch/r/cmd/load", ""])
likely_fields = {
    "id": st.text(max_size=70) | st.sampled_from(["c1", "x" * 64, "x" * 65]) | json_values,
    "value": st.floats(-10, 3000, allow_nan=False) | st.integers(-10, 3000) | big_integers | huge_floats | json_values,
    "units": st.sampled_from(["kg", "lb", "KG", ""]) | json_values,
    "exercise": st.sampled_from(["squat", "single-leg", "lunge"]) | json_values,
    "working_leg": st.sampled_from(["left", "right", "both"]) | json_values,
    "seconds": st.integers(-5, 100) | st.floats(0, 70, allow_nan=False) | big_integers | huge_floats | json_values,
    "extra": json_values,
}
command_objects = st.fixed_dictionaries({}, optional=likely_fields)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, raw=st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8")))
def test_fuzz_the_parser_never_fails_in_any_other_way(name, raw):
    try:
        parse_command(name, raw)
    except CommandRejected as err:
        assert err.reason
    # anything else propagates and fails the test


#: JSON number literals of any size, as a sender could type them: 600 digits, exponents far beyond a float's.
number_literals = st.from_regex(r"-?(0|[1-9][0-9]{0,600})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,6})?", fullmatch=True)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["load", "one_rm", "identify"]), number=number_literals,
       where=st.sampled_from(["value", "seconds", "id", "units"]))
def test_fuzz_numbers_of_any_size_are_parsed_or_refused_in_words(name, number, where):
    fields = {"id": '"n1"', "value": "100", "units": '"kg"'} if name != "identify" else {"id": '"n1"'}
    fields[where] = number
    raw = ("{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}").encode()
    try:
        command = parse_command(name, raw)
    except CommandRejected as err:
        assert err.reason and len(err.reason) < 300
        return
    # accepted: only a number that is a sensible load or duration
    value = getattr(command, "value", None) if where == "value" else getattr(command, "seconds", None)
    assert value is None or 0 <= value <= 2200


def assert_parser_agrees_with_schema(name: str, fields: dict) -> None:
    schema_ok = contract.validator("command").evolve(
        schema={"$ref": f"{contract.BASE_URI}command.schema.json#/$defs/{name}"}).is_valid(fields)
    try:
        parse_command(name, json.dumps(fields).encode())
        parser_ok = True
    except CommandRejected:
        parser_ok = False
    assert parser_ok == schema_ok, f"{name} {fields}"


@settings(max_examples=600, deadline=None)
@given(name=st.sampled_from(["load", "one_rm", "units", "exercise", "identify"]), fields=command_objects)
def test_fuzz_the_parser_and_the_published_schema_agree(name, fields):
    """Staff tools validate with contract/command.schema.json; the rack parses with parse_command: same verdict."""
    assert_parser_agrees_with_schema(name, fields)


#: The fields each command may carry, for payloads that are nearly right (a valid id, no stray field), where
#: the parser and the schema must agree on every value.
OWN_FIELDS = {"load": ("value", "units"), "one_rm": ("value", "units"), "units": ("units",),
              "exercise": ("exercise", "working_leg"), "identify": ("seconds",)}


@settings(max_examples=800, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(OWN_FIELDS)))
def test_fuzz_nearly_valid_commands_the_parser_and_the_schema_agree_on_every_value(data, name):
    own = {key: likely_fields[key] for key in OWN_FIELDS[name]}
    fields = {"id": data.draw(st.sampled_from(["c1", "x" * 64, "a.b:c-d_e"]))} | data.draw(
        st.fixed_dictionaries({}, optional=own))
    assert_parser_agrees_with_schema(name, fields)


# -- the rack's memory of commands ----------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def answer(command, ok=True):
    from rackwatch.events import ReplyEvent
    return ReplyEvent.answer("rack01", command_id=command.id, command=command.name, ok=ok,
                             reason=None if ok else "refused")


def test_a_redelivered_command_gets_its_first_reply_and_a_reused_id_is_refused():
    log = CommandLog(clock=Clock())
    first = parse_command("load", payload(id="c1", value=100, units="kg"))
    assert log.check(first) is None                                   # new: carry it out
    reply = answer(first)
    log.answered(first, reply)
    again = parse_command("load", payload(units="kg", value=100.0, id="c1"))   # the same command, other spelling
    assert log.check(again) is reply                                  # answered again, not carried out twice
    for other in (parse_command("load", payload(id="c1", value=140, units="kg")),
                  parse_command("units", payload(id="c1", units="lb"))):
        with pytest.raises(CommandRejected, match="already used for another command") as caught:
            log.check(other)
        assert (caught.value.command_id, caught.value.name) == ("c1", other.name)
    assert log.check(again) is reply                                  # the refusal did not replace the memory


def test_a_flood_of_commands_is_refused_until_the_pace_drops():
    clock = Clock()
    log = CommandLog(clock=clock)
    commands = [parse_command("identify", payload(id=f"f{i}")) for i in range(RATE_BURST + 5)]
    for command in commands[:RATE_BURST]:
        assert log.check(command) is None
        log.answered(command, answer(command))
    with pytest.raises(CommandRejected, match="too many commands") as caught:
        log.check(commands[RATE_BURST])
    assert "send it again in 1 s" in caught.value.reason and caught.value.command_id == f"f{RATE_BURST}"
    assert log.check(commands[0]) is not None                         # a redelivery is still answered
    clock.now += 1.0                                                  # one more a second
    assert log.check(commands[RATE_BURST]) is None
    with pytest.raises(CommandRejected, match="too many"):
        log.check(commands[RATE_BURST + 1])
    clock.now += 60                                                   # a quiet minute refills the burst, no more
    fresh = [parse_command("identify", payload(id=f"q{i}")) for i in range(RATE_BURST + 1)]
    for command in fresh[:RATE_BURST]:
        assert log.check(command) is None
    with pytest.raises(CommandRejected, match="too many"):
        log.check(fresh[-1])


def test_the_memory_is_bounded():
    log = CommandLog(remember=3, clock=Clock())
    commands = [parse_command("identify", payload(id=f"m{i}")) for i in range(5)]
    for command in commands:
        log.check(command)
        log.answered(command, answer(command))
    assert log.check(commands[0]) is None and log.check(commands[4]) is not None


# -- over a real broker --------------------------------------------------------------------------------------------

class Rack:
    """Stands in for the service: applies commands, refusing a load above what the bar can hold here."""

    def __init__(self):
        self.applied = []

    def __call__(self, command):
        if isinstance(command, SetLoad) and command.value is not None and command.value > 300:
            raise CommandRejected("this rack's bar is rated for 300 kg at most")
        if isinstance(command, Identify) and command.seconds == 13:
            raise RuntimeError("panel LED driver crashed")
        self.applied.append(command)


def test_hostile_commands_over_mqtt_get_rejected_replies_and_the_link_carries_on(broker, tmp_path):
    rack = Rack()
    link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=tmp_path / "state",
                                 ha_discovery=False), on_command=rack).start()
    sub = Subscriber(broker, "rackwatch/rack01/reply")
    staff = Subscriber(broker, "nothing/here", client_id="staff")
    try:
        assert link.wait_connected(10)
        sends = [
            ("load", b"\xff\xfe garbage", None, "UTF-8"),
            ("load", payload(id="h2", value="heavy", units="kg"), "h2", "must be a number"),
            ("load", payload(id="h3", value=50, units="kg", sudo=True), "h3", "unknown field"),
            ("load", b"{" + b'"a":1,' * 1000 + b'"id":"h4"}', None, "at most 4096 bytes"),
            ("selfdestruct", payload(id="h5"), "h5", "unknown command"),
            ("load", payload(id="h6", value=400, units="kg"), "h6", "rated for 300 kg"),   # refused by the rack
            ("identify", payload(id="h7", seconds=13), "h7", "could not carry out"),      # the rack's code failed
            ("load", payload(id="ok1", value=100, units="kg"), "ok1", None),
            ("load", payload(id="ok1", value=100, units="kg"), "ok1", None),              # QoS 1 redelivery
        ]
        for name, raw, _, _ in sends:
            staff.client.publish(f"rackwatch/rack01/cmd/{name}", raw, qos=1)
        sub.wait_for(lambda s: len(s.received()) >= len(sends), what="a reply to every command")

        replies = sub.events()
        for reply in replies:
            contract.validate(reply)
        for (_, _, command_id, reason), reply in zip(sends, replies):
            assert reply["command_id"] == command_id
            if reason is None:
                assert reply["status"] == "ok" and reply["reason"] is None
            else:
                assert reply["status"] == "rejected" and reason in reply["reason"]
        assert replies[-1] == replies[-2]                  # the repeat is answered with the same reply...
        assert rack.applied == [SetLoad(id="ok1", value=100.0, units="kg")]   # ...but carried out once

        # The same id for another command: refused, and not answered with the first command's reply.
        staff.client.publish("rackwatch/rack01/cmd/load", payload(id="ok1", value=150, units="kg"), qos=1)
        sub.wait_for(lambda s: len(s.received()) >= len(sends) + 1, what="the reply to the reused id")
        reused = sub.events()[-1]
        assert (reused["command_id"], reused["status"]) == ("ok1", "rejected")
        assert "already used for another command" in reused["reason"]
        assert rack.applied == [SetLoad(id="ok1", value=100.0, units="kg")]
        assert link.connected

        # A command published with the retain flag is carried out once, and not again when the rack reconnects.
        staff.client.publish("rackwatch/rack01/cmd/units", payload(id="r1", units="lb"), qos=1, retain=True)
        sub.wait_for(lambda s: any(e["command_id"] == "r1" for e in s.events()), what="reply to a retained command")
        assert rack.applied[-1] == SetUnits(id="r1", units="lb")
        link.close()
        link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port,
                                     state_dir=tmp_path / "state", ha_discovery=False), on_command=rack).start()
        assert link.wait_connected(10)
        staff.client.publish("rackwatch/rack01/cmd/identify", payload(id="after"), qos=1)
        sub.wait_for(lambda s: any(e["command_id"] == "after" for e in s.events()), what="reply after reconnect")
        assert [c.id for c in rack.applied] == ["ok1", "r1", "after"]

        # A command sent while the rack is away waits in its broker session and is carried out on return.
        link.close()
        staff.client.publish("rackwatch/rack01/cmd/units", payload(id="while-away", units="kg"), qos=1)
        link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port,
                                     state_dir=tmp_path / "state", ha_discovery=False), on_command=rack).start()
        sub.wait_for(lambda s: any(e["command_id"] == "while-away" for e in s.events()), what="the queued command")
        assert rack.applied[-1] == SetUnits(id="while-away", units="kg")
        staff.client.publish("rackwatch/rack01/cmd/units", b"", qos=1, retain=True)   # clear it again
    finally:
        sub.close()
        staff.close()
        link.close()
