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
A weight in the other units than the rack shows is kept exactly as sent (225 lb stays 225 lb, shown as 102.1 kg:
never rounded to a plate on the way, so switching the rack to lb shows 225 again). What a command may not do
depends on the rack's settings as well, so the rack answers it, not :func:`parse_command`: a ``load`` above the
lifter's one-rep max, or a ``one_rm`` below the load on the bar, is ``rejected`` with a reason that gives both
numbers and what to send instead (:class:`rackwatch.load.AboveOneRepMax`), e.g. ``a load of 340 lb is above the
one-rep max of 330 lb: lower the load to 330 lb or less, or raise the one-rep max first (for a new best)``. To
enter a new best, send ``one_rm`` first, then ``load``.
The JSON Schema of these payloads is ``contract/command.schema.json``, generated from the models; a test checks
that both agree on fuzzed payloads.

:class:`CommandLog` is the rack's memory of the commands it answered: a QoS 1 redelivery of a command is answered
again but not carried out twice, an id reused for *another* command is refused, and commands arriving faster than
:data:`RATE_BURST` at once and :data:`RATE_PER_S` a second after that are refused until the pace drops.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from typing import Annotated, Any, Callable, ClassVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError,
                      model_validator)

from .events import Exercise, Leg, ReplyEvent, Units
from .load import MAX_LOAD

MAX_PAYLOAD_BYTES = 4096
IDENTIFY_DEFAULT_S = 10
IDENTIFY_MAX_S = 60
ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
#: How many commands a rack takes at once, and how many a second after that (see :class:`CommandLog`).
RATE_BURST = 20
RATE_PER_S = 1.0


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


def _json_number(value: Any) -> Any:
    # bool is an int in Python but not a number in JSON terms, and "10" is text: refuse both before pydantic's
    # lax integer conversion (which keeps 10.0 == 10, as JSON does) could accept them.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a JSON number")
    return value


CommandId = Annotated[str, Strict(),
                      Field(pattern=ID_PATTERN, description="Chosen by the sender, echoed in the reply.")]
#: A load in the command's units, or ``None`` to clear it. Strict: ``true`` and ``"100"`` are not numbers; any
#: integer is accepted, and one too big for a float is refused like infinity.
LoadValue = Annotated[float | None, Strict()]
_ID = TypeAdapter(CommandId)


def _is_id(value: Any) -> bool:
    try:
        _ID.validate_python(value)
        return True
    except ValidationError:
        return False


def _load_range(*, exclusive_low: bool) -> dict[str, Any]:
    """The JSON Schema form of the unit-dependent range that :meth:`_LoadCommand._in_range` checks."""
    low = {"exclusiveMinimum": 0} if exclusive_low else {"minimum": 0}
    return {"allOf": [{"if": {"properties": {"value": {"type": "number"}, "units": {"const": units}}},
                       "then": {"properties": {"value": {**low, "maximum": MAX_LOAD[units]}}}}
                      for units in MAX_LOAD]}


class Command(BaseModel):
    """Something a rack has been asked to do. ``id`` comes from the sender and is echoed in the reply."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: ClassVar[str] = ""
    id: CommandId


class _LoadCommand(Command):
    """A weight in kg or lb, or ``None`` to clear it; within 0 (or above it) and :data:`MAX_LOAD`."""

    what: ClassVar[str] = "load"
    allow_zero: ClassVar[bool] = True
    value: LoadValue
    units: Units

    @model_validator(mode="after")
    def _in_range(self) -> _LoadCommand:
        value, units = self.value, self.units
        if value is not None:
            low_ok = value >= 0 if self.allow_zero else value > 0
            if not low_ok or value > MAX_LOAD[units]:
                low = "0" if self.allow_zero else "above 0"
                raise ValueError(f"a {self.what} of {value:g} {units} is out of range; "
                                 f"it must be {low} and at most {MAX_LOAD[units]:g} {units}")
        return self


class SetLoad(_LoadCommand):
    """The load on the bar (``None``: no load entered). 0-1000 kg or 0-2200 lb."""

    model_config = ConfigDict(json_schema_extra=_load_range(exclusive_low=False))
    name: ClassVar[str] = "load"


class SetOneRepMax(_LoadCommand):
    """The lifter's one-rep max, used to judge each rep relative to the load (``None``: unknown). Above 0, at most
    1000 kg or 2200 lb."""

    model_config = ConfigDict(json_schema_extra=_load_range(exclusive_low=True))
    name: ClassVar[str] = "one_rm"
    what: ClassVar[str] = "one-rep max"
    allow_zero: ClassVar[bool] = False


class SetUnits(Command):
    """Units shown on the panel and used in events."""

    name: ClassVar[str] = "units"
    units: Units


class SetExercise(Command):
    """Squat on both legs, or single-leg squat (optionally saying which leg works); working_leg only with
    single-leg."""

    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"exercise": {"const": "squat"}}}, "then": {"not": {"required": ["working_leg"]}}})
    name: ClassVar[str] = "exercise"
    exercise: Exercise
    working_leg: Leg = Field(default=None, json_schema_extra=lambda schema: schema.pop("default", None))
    """Left out (``None`` here) when not given; an explicit ``null`` is refused, as the schema says."""

    @model_validator(mode="after")
    def _leg_only_on_one_leg(self) -> SetExercise:
        if self.working_leg is not None and self.exercise != "single-leg":
            raise ValueError('"working_leg" only applies to the "single-leg" exercise; leave it out')
        return self


class Identify(Command):
    """Blink the rack's panel for ``seconds`` so staff can find it (default 10 s)."""

    name: ClassVar[str] = "identify"
    seconds: Annotated[int, BeforeValidator(_json_number)] = Field(default=IDENTIFY_DEFAULT_S, ge=1, le=IDENTIFY_MAX_S)


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
    command_id = command_id if _is_id(command_id) else None

    def reject(reason: str) -> CommandRejected:
        return CommandRejected(reason, command_id=command_id, name=name if name in COMMANDS else None)

    if name not in COMMANDS:
        raise reject(f"unknown command {name[:40]!r}; this rack understands: {', '.join(COMMANDS)}")
    model = COMMANDS[name]
    try:
        return model.model_validate(fields)
    except ValidationError as err:
        raise reject(_reason(model, fields, err.errors())) from None


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


# -- pydantic's errors in words for the sender ----------------------------------------------------------------------

#: What each field must be, completed with "not <the value sent>".
_RULES = {
    "value": '"value" must be a number or null',
    "units": '"units" must be "kg" or "lb"',
    "exercise": '"exercise" must be "squat" or "single-leg"',
    "working_leg": '"working_leg" must be "left" or "right"',
    "seconds": f'"seconds" must be a whole number from 1 to {IDENTIFY_MAX_S}',
}
_BAD_ID = '"id" must be a string of 1 to 64 letters, digits or . _ : -'
_MISSING = {
    "id": 'the command has no "id"; add a unique "id" string so the reply can be matched to it',
    "value": '"value" is missing: give the {what} as a number, or null to clear it',
    "units": '"units" is missing: say "kg" or "lb"',
    "exercise": '"exercise" is missing: say "squat" or "single-leg"',
}


def _reason(model: type[Command], fields: dict[str, Any], errors: list[dict[str, Any]]) -> str:
    """One reason for the first thing wrong, in the order a sender should fix them: the id, unknown fields, the
    rest."""
    def where(e: dict[str, Any]) -> str:
        return str(e["loc"][0]) if e["loc"] else ""

    for e in errors:
        if where(e) == "id":
            return _MISSING["id"] if e["type"] == "missing" else _BAD_ID
    unknown = sorted(where(e) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        allowed = ", ".join(sorted(model.model_fields))
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        return f"unknown field(s) {shown} for command {model.name!r}; allowed: {allowed}"
    e = errors[0]
    field = where(e)
    if e["type"] == "missing":
        return _MISSING.get(field, f'"{field}" is missing').format(what=getattr(model, "what", ""))
    if field not in _RULES:   # a rule across fields (a model validator): its message is already in words
        return str(e["ctx"]["error"]) if "error" in e.get("ctx", {}) else e["msg"]
    return f"{_RULES[field]}, not {_show(fields.get(field))}"


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message (never echo a huge payload back)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 20:
        return f"a number of {len(str(abs(value)))} digits"
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the memory of commands answered ------------------------------------------------------------------

class CommandLog:
    """The commands a rack has answered lately, and the pace they arrive at.

    :meth:`check` each parsed command before carrying it out, and :meth:`answered` it with the reply sent. The
    sender picks the ids, so the log only trusts an id together with the command it came with: the very same
    command again is a QoS 1 redelivery (answer with the same reply, do not act twice); the same id with another
    command is refused, never answered with the first command's reply. New commands beyond ``burst`` at once and
    ``per_s`` a second after that are refused (a token bucket), so a flood cannot keep the rack busy.
    """

    def __init__(self, *, remember: int = 256, burst: int = RATE_BURST, per_s: float = RATE_PER_S,
                 clock: Callable[[], float] = time.monotonic):
        self.remember = remember
        self.burst = burst
        self.per_s = per_s
        self._clock = clock
        self._answered: OrderedDict[str, tuple[Command, ReplyEvent]] = OrderedDict()
        self._tokens = float(burst)
        self._refilled = clock()

    def check(self, command: Command) -> ReplyEvent | None:
        """The reply already sent if ``command`` is a redelivery, else ``None`` (a new command to carry out).

        Raises :class:`CommandRejected` for an id already used by another command, or when commands arrive too fast.
        """
        earlier = self._answered.get(command.id)
        if earlier is not None:
            if earlier[0] == command:
                return earlier[1]
            raise CommandRejected(f"the id {command.id!r} was already used for another command; give every command "
                                  "a new id", command_id=command.id, name=command.name)
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._refilled) * self.per_s)
        self._refilled = now
        if self._tokens < 1.0:
            wait = math.ceil((1.0 - self._tokens) / self.per_s)
            raise CommandRejected(f"too many commands: this rack takes {self.burst} at once and {self.per_s:g} a "
                                  f"second after that; send it again in {wait} s", command_id=command.id,
                                  name=command.name)
        self._tokens -= 1.0
        return None

    def answered(self, command: Command, reply: ReplyEvent) -> None:
        """Remember the reply sent to ``command`` (only the newest ``remember`` commands are kept)."""
        self._answered[command.id] = (command, reply)
        while len(self._answered) > self.remember:
            self._answered.popitem(last=False)
