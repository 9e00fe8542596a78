"""The events a rack produces: typed values inside the program, one JSON form on the wire.

Every consumer (``rackwatch analyze --json``, the MQTT topics, the dashboard) sees the same events, defined here
and nowhere else. An event is a frozen pydantic model: :class:`RepEvent`, :class:`NotCountedEvent`,
:class:`SetEvent`, :class:`StateEvent`, :class:`HealthEvent` or :class:`ReplyEvent`. Each carries the envelope that
every event shares:

``type``
    ``rep``, ``not_counted``, ``set``, ``state``, ``health`` or ``reply``.
``schema``
    :data:`SCHEMA_VERSION`; bumped whenever a field changes meaning or disappears (adding fields does not bump it).
``id``
    unique per event, so that consumers can drop the duplicates QoS 1 may deliver.
``rack``
    the rack id, or ``None`` when a recording is analysed on its own.
``time``
    wall-clock UTC time the event was made, ISO 8601 with milliseconds on the wire.

Inside the program the numbers keep their full precision (the judge sums a set up from them); they are rounded
only when an event is serialised at the edge, by :meth:`Wire.to_wire` (a ``dict`` ready for ``json.dumps``) or
:meth:`Wire.to_json`. :func:`parse_event` reads the wire form back, for consumers such as the dashboard.

The JSON Schemas in ``contract/`` are generated from these classes (``python -m rackwatch.contract``), so the
types, the schemas and the parser cannot drift apart.

This module does no I/O: the transport (stdout, MQTT) is someone else's business.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, field_serializer,
                      model_serializer, model_validator)
from typing_extensions import TypedDict   # (pydantic needs this one, not typing's, on Python < 3.12)

SCHEMA_VERSION = 1

SEVERITIES = ("none", "minor", "moderate", "severe")
LEGS = ("left", "right")
EXERCISES = ("squat", "single-leg")
UNITS = ("kg", "lb")

Severity = Literal["none", "minor", "moderate", "severe"]
Leg = Literal["left", "right"]
Exercise = Literal["squat", "single-leg"]
Units = Literal["kg", "lb"]
Phase = Literal["standing", "descent", "bottom", "ascent"]
Verdict = Literal["clean", "note", "cave", "unjudged"]
CommandName = Literal["load", "one_rm", "units", "exercise", "identify"]
UnjudgedWhy = Literal["side_view", "turned", "leg_hidden", "feet_hidden"]
NotCountedWhy = Literal["jump", "jumping_jacks", "step", "walking", "walking_in_out", "start_unseen"]

#: Why a leg that should have been judged was not, in words for the lifter, the coach and the installer.
UNJUDGED_WHY: dict[str, str] = {
    "side_view": "the camera sees the lifter too far from the side; mount it square to the front of the rack",
    "turned": "the lifter was turned away from the camera on this rep (knees and hips moved sideways in "
              "opposite directions); face the camera square",
    "leg_hidden": "this leg was hidden or not seen clearly enough during the rep",
    "feet_hidden": "this foot was out of view or not seen clearly enough during the rep; the feet must be in the "
                   "picture",
}

#: Why a movement that looked like a rep was not counted, in a few words for the lifter and the gym's board (the
#: event's ``reason`` says it in a sentence, with the measure that decided).
NOT_COUNTED_WHY: dict[str, str] = {
    "jump": "a jump, not a squat",
    "jumping_jacks": "jumping jacks or a shuffle, not a squat",
    "step": "a lunge or a step, not a squat",
    "walking": "walking, not a squat",
    "walking_in_out": "walking toward or away from the camera, not a squat",
    "start_unseen": "the rep's start was not seen",
}


def not_counted_words(why: str) -> str:
    """A movement not counted in a few words, as the board's tile and the overlay show it."""
    return f"not counted: {NOT_COUNTED_WHY[why]}"

#: What the wire's ``time`` looks like (the rack writes milliseconds and ``Z``; others may write an offset).
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"


@dataclass(frozen=True)
class Decimals:
    """Marks a number field that is rounded to this many decimals on the wire (and only there)."""

    places: int


def new_id() -> str:
    """A fresh event id (a random UUID, text form)."""
    return str(uuid.uuid4())


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def severity_rank(severity: str | None) -> int:
    """0 for ``none`` (or no judgement) up to 3 for ``severe``; handy for max() and comparisons."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


class Wire(BaseModel):
    """A frozen value with one JSON form: unknown fields are refused, NaN and infinity cannot exist."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True,
                              json_schema_serialization_defaults_required=True)

    #: Fields added later that stay off the wire while empty: a consumer older than the field refuses fields it
    #: does not know, so it then still takes the event (it misses only what it could not have shown).
    _unsent_when_empty: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _rounded_on_the_wire(self, handler, info):   # (no return annotation: the schema stays the fields')
        data = handler(self)
        for key in self._unsent_when_empty:
            if not data.get(key):
                data.pop(key, None)
        if info.mode == "json":
            for name, spec in type(self).model_fields.items():
                key = spec.alias or name
                places = next((m.places for m in spec.metadata if isinstance(m, Decimals)), None)
                if places is not None and data.get(key) is not None:
                    data[key] = round(data[key], places)
        return data

    def to_wire(self) -> dict[str, Any]:
        """The JSON form as a ``dict`` (numbers rounded, ``time`` as text), ready for ``json.dumps``."""
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        """The JSON text, as ``rackwatch analyze --json`` prints it."""
        return json.dumps(self.to_wire(), allow_nan=False)


class Load(Wire):
    """The ``load`` object of rep, set and state events: the bar load entered, in the lifter's units."""

    value: float = Field(ge=0)
    units: Units
    one_rm: float | None = Field(default=None, gt=0)
    percent_1rm: Annotated[float | None, Decimals(1), Field(ge=0)] = None
    """The load as a percentage of the one-rep max; ``None`` while the one-rep max is unknown."""


def load_info(value: float | None, units: str, one_rm: float | None) -> Load | None:
    """The :class:`Load` of rep, set and state events; ``None`` when no load was entered."""
    if value is None:
        return None
    return Load(value=value, units=units, one_rm=one_rm, percent_1rm=100.0 * value / one_rm if one_rm else None)


class Event(Wire):
    """The envelope every event carries; see the module docstring."""

    type: str
    schema_version: Literal[1] = Field(
        default=SCHEMA_VERSION, alias="schema",
        description="Payload schema version; bumped when a field changes meaning or disappears.")
    id: str = Field(default_factory=new_id, min_length=1, max_length=64,
                    description="Unique per event: QoS 1 may deliver an event twice, consumers drop repeats by id.")
    rack: str | None = Field(description="Rack id; null only for a recording analysed on its own.")
    time: AwareDatetime = Field(default_factory=utc_now, json_schema_extra={"format": "date-time", "pattern": TIME_PATTERN},
                                description="When the event was made, UTC, ISO 8601.")

    @field_serializer("time", when_used="json")
    def _time_text(self, time: datetime) -> str:
        return time.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def for_rack(self, rack: str) -> Event:
        """This event with ``rack`` filled in (the MQTT link does this for events made without a rack id)."""
        return self.model_copy(update={"rack": rack})


def added_later(**field: Any) -> Any:
    """A field that came after the first racks (pydantic ``Field`` arguments, with its default): left out of the
    JSON Schema's ``required`` (by ``_optional_fields``), and read as its default when an older rack leaves it
    out."""
    return Field(**field, json_schema_extra={"optional": True})


def _optional_fields(schema: dict[str, Any]) -> None:
    """Leave out of ``required`` the properties marked ``optional`` (fields older racks may not send)."""
    optional = [name for name, prop in schema["properties"].items() if prop.pop("optional", False)]
    schema["required"] = [name for name in schema.get("required", []) if name not in optional]


class LegValgus(Wire):
    """One judged leg of a rep."""

    severity: Severity = Field(description="The judgement, after taking the load into account.")
    measured: Severity = Field(description="The grade of the measured cave alone, before the load.")
    cave: Annotated[float, Decimals(3)] = Field(
        description="How far the knee moved inside the ankle below it, from the lifter's standing posture, in "
                    "standing leg lengths (+ = inward), at the rep's worst moment (90th percentile).")
    peak_phase: Literal["descent", "bottom", "ascent"] = Field(description="Where in the rep the cave peaked.")
    t_peak: Annotated[float, Decimals(3)] = Field(
        description="Seconds from the start of the source to the frame where the cave peaked.")
    fppa_change_deg: Annotated[float | None, Decimals(1)] = Field(
        default=None, description="Frontal plane projection angle, change from standing, degrees (+ = valgus).")
    medial_shift: Annotated[float | None, Decimals(3)] = Field(
        default=None,
        description="Knee's distance from the hip-ankle line, change from standing, in leg lengths (+ = medial).")


class Valgus(Wire):
    """Both legs of a rep; ``None`` for a leg that was not judged: the free leg of a single-leg squat, or a leg
    that could not be judged, whose reason is then in ``unjudged``."""

    model_config = ConfigDict(json_schema_extra=_optional_fields)

    left: LegValgus | None
    right: LegValgus | None
    unjudged: dict[Leg, UnjudgedWhy] = added_later(
        default_factory=dict,
        description="Each leg that should have been judged but could not be, and why: side_view (camera too far "
                    "to the side), turned (the lifter turned away on this rep), leg_hidden, feet_hidden. (Added in "
                    "schema 1; may be absent from older racks.)")

    def leg(self, side: str) -> LegValgus | None:
        """The leg called ``side`` (``left`` or ``right``)."""
        return self.left if side == "left" else self.right

    def judged(self) -> list[LegValgus]:
        """The legs that were judged, left first."""
        return [v for v in (self.left, self.right) if v is not None]

    def why_unjudged(self, side: str) -> str | None:
        """In words, why the leg called ``side`` could not be judged; ``None`` if it was (or was not meant to be)."""
        code = self.unjudged.get(side)
        return UNJUDGED_WHY[code] if code else None


class RepEvent(Event):
    """One rep.

    ``severity`` is the worst judged leg's severity after the load has been taken into account (``None`` when no
    leg was judged); ``verdict`` is what the rack's LEDs show: ``clean`` (every leg that should be judged was, and
    none caved), ``note`` (a cave tolerated because the load is near the lifter's max), ``cave`` (a judged leg
    caved), or ``unjudged`` (no cave seen, but a leg could not be judged: ``valgus.unjudged`` says which and
    why, ``unjudged_reason`` in a sentence).
    """

    model_config = ConfigDict(json_schema_extra=_optional_fields)

    type: Literal["rep"] = "rep"
    set_id: str = Field(min_length=1)
    rep: int = Field(ge=1, description="Rep number within the set, from 1.")
    exercise: Exercise
    working_leg: Literal["left", "right", "both"] = Field(
        description="both for a squat; the working leg of a single-leg squat.")
    t_start: Annotated[float, Decimals(3)]
    t_bottom: Annotated[float, Decimals(3)]
    t_end: Annotated[float, Decimals(3)]
    load: Load | None = Field(description="The bar load entered on the panel, or null when none was entered.")
    valgus: Valgus
    severity: Severity | None = Field(
        description="Worst judged leg, after taking the load into account; null when no leg could be judged.")
    verdict: Verdict = Field(
        description="What the rack's lights showed: clean (every leg judged, none caved), note (a cave tolerated "
                    "near the lifter's max), cave (a judged leg caved), or unjudged (no cave seen, but a leg could "
                    "not be judged: see valgus.unjudged).")
    depth: Annotated[float, Decimals(3)]
    descent_s: Annotated[float, Decimals(3), Field(ge=0)]
    ascent_s: Annotated[float, Decimals(3), Field(ge=0)]
    ascent_speed: Annotated[float, Decimals(3)]
    stance_ratio: Annotated[float | None, Decimals(3)]
    hip_shift: Annotated[float | None, Decimals(3)]
    unjudged_reason: str | None = added_later(
        default=None, description="Why the rep could not be judged; null when it was. (Added in schema 1; may be "
                                  "absent from older racks.)")


class NotCountedEvent(Event):
    """A movement that looked like a rep but was not counted, and why.

    The hips dropped and came back up as in a rep, but the feet did not stay planted (a jump, jumping jacks, a
    lunge or a step, walking), or the lifter was found part way down (the rep's start was not seen). Sent when the
    rep would have been (``plant_after_s`` after its end), whether or not a set is under way: a lifter doing only
    jumping jacks opens no set, and still sees why nothing counted. ``set_id`` is the set under way, if any (its
    summary counts it in ``not_counted``).
    """

    type: Literal["not_counted"] = "not_counted"
    set_id: str | None = Field(min_length=1, description="The set under way, or null when none is.")
    exercise: Exercise
    t_start: Annotated[float, Decimals(3)]
    t_end: Annotated[float, Decimals(3)]
    why: NotCountedWhy = Field(
        description="Why it was not counted: jump, jumping_jacks (the feet moved apart or together), step (a lunge "
                    "or a step: one foot moved), walking (both feet moved), walking_in_out (toward or away from "
                    "the camera), start_unseen (the lifter was found part way down).")
    reason: str = Field(min_length=1, max_length=500,
                        description="Why, in a sentence for the lifter and the staff, with the measure that decided.")


class Advice(Wire):
    """What to do next time: ``add`` weight, ``hold`` it, or ``reduce`` it, with the suggested next load (in the
    set's units; ``None`` when no load was entered) and a sentence for the lifter."""

    action: Literal["add", "hold", "reduce"]
    next_load: float | None = Field(default=None, ge=0, description="The suggested next load, in the set's units.")
    text: str


class SetEvent(Event):
    """The summary of a finished set."""

    model_config = ConfigDict(json_schema_extra=_optional_fields)
    _unsent_when_empty = ("not_counted",)

    type: Literal["set"] = "set"
    set_id: str = Field(min_length=1)
    exercise: Exercise
    load: Load | None
    reps: int = Field(ge=0)
    clean_reps: int = Field(ge=0)
    worst_rep: int | None = Field(ge=1)
    cave_onset_rep: int | None = Field(ge=1)
    weaker_side: Leg | None
    velocity_loss_pct: Annotated[float | None, Decimals(1)]
    remarks: tuple[str, ...]
    cues: tuple[str, ...]
    advice: Advice
    not_counted: dict[NotCountedWhy, Annotated[int, Field(ge=1)]] = added_later(
        default_factory=dict,
        description="Movements during the set that looked like reps but were not counted, how many for each why "
                    "(see the not_counted event); empty when every one counted. (Added in schema 1; may be absent "
                    "from older racks.)")


class StateEvent(Event):
    """The rack's current state (retained on MQTT, so a new dashboard sees it at once).

    ``camera`` says whether the camera is aimed well enough to judge (``ready``) or ``needs attention``, and
    ``camera_reason`` why, in the words of ``rackwatch aim``; both null until the rack has seen a lifter stand
    still (and absent from racks older than these fields). ``idle`` is true while the rack rests with nobody at
    it (see :class:`rackwatch.service.IdleMode`).
    """

    model_config = ConfigDict(json_schema_extra=_optional_fields)

    type: Literal["state"] = "state"
    phase: Phase
    lifter_seen: bool
    load: Load | None
    exercise: Exercise
    set_id: str | None
    reps_in_set: int = Field(ge=0)
    camera: Literal["ready", "needs attention"] | None = added_later(
        default=None, description="Whether the camera's aim lets the rack judge: ready or needs attention; null "
                                  "until a lifter has stood at the rack. (Added in schema 1; may be absent from "
                                  "older racks.)")
    camera_reason: str | None = added_later(
        default=None, description="Why the camera needs attention (or that it is ready), in words an installer "
                                  "can act on; null with camera. (Added in schema 1; may be absent.)")
    idle: bool | None = added_later(
        default=None, description="True while the rack rests (nobody seen for a while: the model runs at a frame "
                                  "or two a second until a lifter steps in); null where the rack never idles (a "
                                  "recording judged frame by frame). (Added in schema 1; may be absent.)")


class HealthEvent(Event):
    """How the rack itself is doing.

    The loss fields let a dashboard alert on every event the rack could not deliver (see docs/mqtt.md). The counts
    are cumulative since the outbox file was made (``pump_failures``: since the process started), so an alert
    fires when one grows; ``disk_full`` and ``events_in_memory`` say how things stand now. They and
    ``software_version`` came after the first racks: absent from an older rack's report, they read as their defaults.
    """

    model_config = ConfigDict(json_schema_extra=_optional_fields)

    type: Literal["health"] = "health"
    fps: Annotated[float, Decimals(2), Field(ge=0)]
    inference_ms: Annotated[float, Decimals(2), Field(ge=0)]
    dropped_frames: int = Field(ge=0)
    cpu_temp_c: float | None
    throttled: bool | None
    outbox_depth: int = Field(ge=0)
    # The loss fields and the version came after the first racks.
    events_dropped: int = added_later(
        default=0, ge=0,
        description="Reps, sets, replies or movements not counted dropped because the outbox was full.")
    events_unreadable: int = added_later(
        default=0, ge=0, description="Events lost to a damaged outbox or that no broker takes.")
    events_refused: int = added_later(default=0, ge=0, description="Events the broker refused for good (its ACL).")
    outbox_damaged: int = added_later(default=0, ge=0, description="Damaged outbox files set aside (kept, renamed).")
    snapshots_skipped: int = added_later(
        default=0, ge=0, description="State and health snapshots skipped for a full disk.")
    pump_failures: int = added_later(
        default=0, ge=0, description="Times sending from the outbox failed since the start.")
    disk_full: bool = added_later(default=False, description="The state folder's disk refuses writes right now.")
    events_in_memory: int = added_later(
        default=0, ge=0, description="Events waiting in memory for the disk to take them.")
    # No default from this program's own version: a dashboard reading an older rack's report must not fill in its
    # own; the rack fills it in where it makes the report (service.py).
    software_version: str | None = added_later(
        default=None, max_length=64,
        description="The rackwatch version the rack runs (as `rackwatch --version` prints it); null from racks "
                    "older than this field. (Added in schema 1; may be absent.)")


class ReplyEvent(Event):
    """The rack's answer to one command: the command's id, ``ok`` or ``rejected`` and, when rejected, why.

    ``command_id`` is ``None`` only when the command was so broken that no id could be read from it.
    """

    model_config = ConfigDict(json_schema_extra={
        "if": {"properties": {"status": {"const": "rejected"}}},
        "then": {"properties": {"reason": {"type": "string"}}},
        "else": {"properties": {"reason": {"type": "null"}}}})

    type: Literal["reply"] = "reply"
    command_id: str | None = Field(
        description="The id of the command answered; null only when none could be read from it.")
    command: CommandName | None
    status: Literal["ok", "rejected"]
    reason: str | None = Field(default=None, description="Why it was rejected, in words for the sender; null when ok.")

    @model_validator(mode="after")
    def _reason_only_when_rejected(self) -> ReplyEvent:
        if (self.status == "rejected") != (self.reason is not None):
            raise ValueError("a rejected reply needs a reason, and an ok reply has none")
        return self

    @classmethod
    def answer(cls, rack: str | None, *, command_id: str | None, command: str | None, ok: bool,
               reason: str | None = None) -> ReplyEvent:
        """The reply ``ok`` or ``rejected`` (with ``reason``, or a bare "rejected" when none was given)."""
        return cls(rack=rack, command_id=command_id, command=command, status="ok" if ok else "rejected",
                   reason=None if ok else (reason or "rejected"))


#: Every event type, by the name in its ``type`` field.
EVENT_TYPES: dict[str, type[Event]] = {
    "rep": RepEvent, "not_counted": NotCountedEvent, "set": SetEvent, "state": StateEvent, "health": HealthEvent,
    "reply": ReplyEvent}

AnyEvent = Annotated[Union[RepEvent, NotCountedEvent, SetEvent, StateEvent, HealthEvent, ReplyEvent],
                     Field(discriminator="type")]
_ANY_EVENT = TypeAdapter(AnyEvent)


class _WireEnvelope(TypedDict):
    """What every event on the wire carries (the types fill these in by default; the wire must not leave them out)."""

    type: str
    schema: int
    id: str
    time: str


_WIRE_ENVELOPE = TypeAdapter(_WireEnvelope)


def parse_event(data: bytes | str | dict[str, Any]) -> Event:
    """The typed event in a wire payload (JSON bytes or text, or an already decoded ``dict``).

    Read as strictly as the JSON Schemas: the whole envelope must be there, ``"yes"`` is not a boolean nor ``"3"``
    a number. Raises ``pydantic.ValidationError`` (a ``ValueError``) for a payload that is not a valid event.
    """
    if isinstance(data, dict):
        data = json.dumps(data)
    _WIRE_ENVELOPE.validate_json(data, strict=True)
    return _ANY_EVENT.validate_json(data, strict=True)
