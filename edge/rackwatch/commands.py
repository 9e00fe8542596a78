"""Commands sent to a rack over MQTT, and the replies it sends back.

Staff (or Home Assistant) change a rack's settings by publishing a small JSON object on the rack's command topic
``<root>/<rack>/cmd/<name>``; the rack answers on ``<root>/<rack>/reply`` with the command's id, ``ok`` or
``rejected`` and, when rejected, a reason a person can act on.

Everything that arrives on a command topic is **untrusted input**: anyone with write access to the topic (or a
buggy dashboard) can send anything. :func:`parse_command` is therefore a pure function that either returns one of
the typed commands below or raises :class:`CommandRejected` (a ``ValueError``) -- never anything else -- so the
MQTT link can turn every bad payload into a reply instead of a crash.

The commands (payloads are JSON objects; ``id`` is required in all of them, 1-64 characters of
``A-Z a-z 0-9 . _ : -``, and no other fields than those listed are allowed):

========== ====================================================== ==============================================
name       payload                                                meaning
========== ====================================================== ==============================================
load       ``{"id", "value": number|null, "units": "kg"|"lb"}``   bar load; ``null`` clears it
one_rm     ``{"id", "value": number|null, "units": "kg"|"lb"}``   the lifter's one-rep max; ``null`` clears it
units      ``{"id", "units": "kg"|"lb"}``                         units shown on the panel and in events
exercise   ``{"id", "exercise": "squat"|"single-leg",             exercise mode; ``working_leg`` only for
           "working_leg"?: "left"|"right"}``                      single-leg
identify   ``{"id", "seconds"?: 1..60}``                          blink the panel so staff find the rack
========== ====================================================== ==============================================

Loads are limited to 0-1000 kg or 0-2200 lb (a one-rep max must be above 0): anything else is a typo or an attack.
The JSON Schema of these payloads is ``contract/command.schema.json``; a test checks that both agree.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from . import events
from .load import MAX_LOAD

MAX_PAYLOAD_BYTES = 4096
IDENTIFY_DEFAULT_S = 10
IDENTIFY_MAX_S = 60
_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class CommandRejected(ValueError):
    """A command payload the rack will not act on. ``reason`` says what is wrong, in words for the sender.

    ``command_id`` and ``name`` are filled in when they could be read, so the reply can still be matched to the
    command that caused it.
    """

    def __init__(self, reason: str, *, command_id: str | None = None, name: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.command_id = command_id
        self.name = name


@dataclass(frozen=True)
class Command:
    """Something a rack has been asked to do. ``id`` comes from the sender and is echoed in the reply."""

    id: str
    name: ClassVar[str] = ""


@dataclass(frozen=True)
class SetLoad(Command):
    """The load on the bar (``None``: no load entered)."""

    value: float | None = None
    units: str = "kg"
    name: ClassVar[str] = "load"


@dataclass(frozen=True)
class SetOneRepMax(Command):
    """The lifter's one-rep max, used to judge each rep relative to the load (``None``: unknown)."""

    value: float | None = None
    units: str = "kg"
    name: ClassVar[str] = "one_rm"


@dataclass(frozen=True)
class SetUnits(Command):
    units: str = "kg"
    name: ClassVar[str] = "units"


@dataclass(frozen=True)
class SetExercise(Command):
    """Squat on both legs, or single-leg squat (optionally saying which leg works)."""

    exercise: str = "squat"
    working_leg: str | None = None
    name: ClassVar[str] = "exercise"


@dataclass(frozen=True)
class Identify(Command):
    """Blink the rack's panel for ``seconds`` so staff can find it."""

    seconds: int = IDENTIFY_DEFAULT_S
    name: ClassVar[str] = "identify"


COMMANDS: dict[str, type[Command]] = {c.name: c for c in (SetLoad, SetOneRepMax, SetUnits, SetExercise, Identify)}


def command_name(topic_or_name: str) -> str:
    """``rackwatch/rack01/cmd/load`` -> ``load``; a bare name is returned as it is."""
    return topic_or_name.rsplit("/", 1)[-1]


def parse_command(topic_or_name: str, payload: bytes | bytearray | memoryview | str) -> Command:
    """Check one command payload and return the typed command, or raise :class:`CommandRejected` saying why.

    ``topic_or_name`` is the full command topic or just the command's name (its last level).
    """
    name = command_name(topic_or_name) if isinstance(topic_or_name, str) else ""
    fields = _decode(name, payload)
    command_id = fields.get("id")
    command_id = command_id if isinstance(command_id, str) and _ID_PATTERN.fullmatch(command_id) else None

    def reject(reason: str) -> CommandRejected:
        return CommandRejected(reason, command_id=command_id, name=name if name in COMMANDS else None)

    if name not in COMMANDS:
        raise reject(f"unknown command {name[:40]!r}; this rack understands: {', '.join(COMMANDS)}")
    if "id" not in fields:
        raise reject('the command has no "id"; add a unique "id" string so the reply can be matched to it')
    if command_id is None:
        raise reject('"id" must be a string of 1 to 64 letters, digits or . _ : -')

    allowed = {"id", *_FIELDS[name]}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise reject(f"unknown field(s) {shown} for command {name!r}; allowed: {', '.join(sorted(allowed))}")
    try:
        return _BUILDERS[name](command_id, fields)
    except CommandRejected as err:
        raise reject(err.reason) from None


# -- decoding ----------------------------------------------------------------------------------------------------

def _decode(name: str, payload: Any) -> dict[str, Any]:
    """Bytes -> a JSON object, refusing anything oversize, non-UTF-8, non-JSON or not an object."""
    known = name if name in COMMANDS else None
    if isinstance(payload, str):
        payload = payload.encode("utf-8", errors="surrogatepass")
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise CommandRejected("the command payload must be bytes of UTF-8 JSON", name=known)
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise CommandRejected(f"the command is {len(payload)} bytes; commands are at most {MAX_PAYLOAD_BYTES} bytes",
                              name=known)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandRejected("the command is not valid UTF-8 text; send a UTF-8 JSON object", name=known) from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except (ValueError, RecursionError) as err:
        detail = err.args[0] if isinstance(err, CommandRejected) else "not valid JSON"
        raise CommandRejected(f"the command is {detail}; send a JSON object such as "
                              '{"id": "abc1", "value": 100, "units": "kg"}', name=known) from None
    if not isinstance(value, dict):
        raise CommandRejected(f"the command must be a JSON object, not a JSON {_json_type(value)}", name=known)
    return value


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise CommandRejected("JSON with a repeated field name")
    return dict(pairs)


def _no_constant(token: str) -> Any:
    raise CommandRejected(f"JSON with {token}, which is not a number")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- the fields of each command ------------------------------------------------------------------------------------

def _units(fields: dict[str, Any]) -> str:
    units = fields.get("units")
    if units not in events.UNITS:
        raise CommandRejected(f'"units" must be "kg" or "lb", not {_show(units)}')
    return units


def _number(fields: dict[str, Any], key: str) -> float | None:
    value = fields.get(key)
    if value is None:
        return None
    # bool is an int in Python but not a number in JSON terms; reject it like any other non-number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CommandRejected(f'"{key}" must be a number or null, not {_show(value)}')
    return float(value)


def _load_value(fields: dict[str, Any], *, allow_zero: bool, what: str) -> tuple[float | None, str]:
    if "value" not in fields:
        raise CommandRejected(f'"value" is missing: give the {what} as a number, or null to clear it')
    if "units" not in fields:
        raise CommandRejected('"units" is missing: say "kg" or "lb"')
    value, units = _number(fields, "value"), _units(fields)
    if value is not None:
        low_ok = value >= 0 if allow_zero else value > 0
        if not low_ok or value > MAX_LOAD[units]:
            low = "0" if allow_zero else "above 0"
            raise CommandRejected(f"a {what} of {value:g} {units} is out of range; "
                                  f"it must be {low} and at most {MAX_LOAD[units]:g} {units}")
    return value, units


def _set_load(command_id: str, fields: dict[str, Any]) -> SetLoad:
    value, units = _load_value(fields, allow_zero=True, what="load")
    return SetLoad(command_id, value=value, units=units)


def _set_one_rm(command_id: str, fields: dict[str, Any]) -> SetOneRepMax:
    value, units = _load_value(fields, allow_zero=False, what="one-rep max")
    return SetOneRepMax(command_id, value=value, units=units)


def _set_units(command_id: str, fields: dict[str, Any]) -> SetUnits:
    if "units" not in fields:
        raise CommandRejected('"units" is missing: say "kg" or "lb"')
    return SetUnits(command_id, units=_units(fields))


def _set_exercise(command_id: str, fields: dict[str, Any]) -> SetExercise:
    exercise = fields.get("exercise")
    if exercise not in events.EXERCISES:
        raise CommandRejected(f'"exercise" must be "squat" or "single-leg", not {_show(exercise)}')
    leg = fields.get("working_leg")
    if "working_leg" in fields:
        if exercise != "single-leg":
            raise CommandRejected('"working_leg" only applies to the "single-leg" exercise; leave it out')
        if leg not in events.LEGS:
            raise CommandRejected(f'"working_leg" must be "left" or "right", not {_show(leg)}')
    return SetExercise(command_id, exercise=exercise, working_leg=leg)


def _identify(command_id: str, fields: dict[str, Any]) -> Identify:
    seconds = fields.get("seconds", IDENTIFY_DEFAULT_S)
    # 10 and 10.0 are the same JSON number; anything fractional, boolean or out of range is not.
    whole = isinstance(seconds, int) or (isinstance(seconds, float) and seconds.is_integer())
    if isinstance(seconds, bool) or not whole or not 1 <= seconds <= IDENTIFY_MAX_S:
        raise CommandRejected(f'"seconds" must be a whole number from 1 to {IDENTIFY_MAX_S}, not {_show(seconds)}')
    return Identify(command_id, seconds=int(seconds))


_FIELDS = {"load": ("value", "units"), "one_rm": ("value", "units"), "units": ("units",),
           "exercise": ("exercise", "working_leg"), "identify": ("seconds",)}
_BUILDERS = {"load": _set_load, "one_rm": _set_one_rm, "units": _set_units, "exercise": _set_exercise,
             "identify": _identify}


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message (never echo a huge payload back)."""
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- replies -------------------------------------------------------------------------------------------------------

def reply_event(rack: str | None, *, command_id: str | None, command: str | None, ok: bool,
                reason: str | None = None) -> dict[str, Any]:
    """The reply to one command: the usual event envelope plus the command's id, ``ok``/``rejected`` and a reason.

    ``command_id`` is ``None`` only when the command was so broken that no id could be read from it.
    """
    return events.envelope("reply", rack, command_id=command_id, command=command,
                           status="ok" if ok else "rejected", reason=None if ok else (reason or "rejected"))
