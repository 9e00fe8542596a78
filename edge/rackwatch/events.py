"""The events a rack produces, and their one JSON form.

Every consumer (``rackwatch analyze --json``, the MQTT topics, the dashboard) sees the same objects, built here
and nowhere else. An event is a plain ``dict`` ready for ``json.dumps``; the builders below fill in the envelope
that every event shares:

``type``
    ``rep``, ``set``, ``state`` or ``health``.
``schema``
    :data:`SCHEMA_VERSION`; bumped whenever a field changes meaning or disappears (adding fields does not bump it).
``id``
    unique per event, so that consumers can drop the duplicates QoS 1 may deliver.
``rack``
    the rack id, or ``None`` when a recording is analysed on its own.
``time``
    wall-clock UTC time the event was made, ISO 8601.

This module does no I/O: the transport (stdout, MQTT) is someone else's business.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 1

SEVERITIES = ("none", "minor", "moderate", "severe")
LEGS = ("left", "right")
EXERCISES = ("squat", "single-leg")
UNITS = ("kg", "lb")


def new_id() -> str:
    """A fresh event id (a random UUID, text form)."""
    return str(uuid.uuid4())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(kind: str, rack: str | None, **fields: Any) -> dict[str, Any]:
    """The fields every event carries, followed by ``fields``."""
    return {"type": kind, "schema": SCHEMA_VERSION, "id": new_id(), "rack": rack, "time": utc_now(), **fields}


def severity_rank(severity: str | None) -> int:
    """0 for ``none`` (or no judgement) up to 3 for ``severe``; handy for max() and comparisons."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


def rep_event(rack: str | None, *, set_id: str, rep: int, exercise: str, working_leg: str,
              t_start: float, t_bottom: float, t_end: float, load: dict[str, Any] | None,
              valgus: dict[str, dict[str, Any] | None], severity: str, verdict: str,
              depth: float, descent_s: float, ascent_s: float, ascent_speed: float,
              stance_ratio: float | None, hip_shift: float | None,
              unjudged_reason: str | None = None) -> dict[str, Any]:
    """One rep.

    ``valgus`` maps ``left``/``right`` to the leg's measurements and ``severity`` (``None`` for a leg that was
    not judged, e.g. the free leg of a single-leg squat). ``severity`` is the worst leg's severity after the
    load has been taken into account; ``verdict`` is what the rack's LEDs show: ``clean``, ``note`` (a cave
    tolerated because the load is near the lifter's max) or ``cave``; when the knees could not be judged at all
    (camera too far to the side) both legs are ``None``, ``severity`` is ``None``, ``verdict`` is ``unjudged``
    and ``unjudged_reason`` says why.
    """
    return envelope("rep", rack, set_id=set_id, rep=rep, exercise=exercise, working_leg=working_leg,
                    t_start=round(t_start, 3), t_bottom=round(t_bottom, 3), t_end=round(t_end, 3),
                    load=load, valgus=valgus, severity=severity, verdict=verdict,
                    depth=round(depth, 3), descent_s=round(descent_s, 3), ascent_s=round(ascent_s, 3),
                    ascent_speed=round(ascent_speed, 3),
                    stance_ratio=None if stance_ratio is None else round(stance_ratio, 3),
                    hip_shift=None if hip_shift is None else round(hip_shift, 3),
                    unjudged_reason=unjudged_reason)


def leg_valgus(*, severity: str, measured: str, cave: float, peak_phase: str, t_peak: float,
               fppa_change_deg: float | None = None, medial_shift: float | None = None) -> dict[str, Any]:
    """One judged leg of a rep event: ``severity`` after the load, ``measured`` before it, the knee cave in
    standing leg lengths (+ = inward), where and when it peaked, and the secondary measures."""
    return {"severity": severity, "measured": measured, "cave": round(cave, 3), "peak_phase": peak_phase,
            "t_peak": round(t_peak, 3),
            "fppa_change_deg": None if fppa_change_deg is None else round(fppa_change_deg, 1),
            "medial_shift": None if medial_shift is None else round(medial_shift, 3)}


def set_event(rack: str | None, *, set_id: str, exercise: str, load: dict[str, Any] | None, reps: int,
              clean_reps: int, worst_rep: int | None, cave_onset_rep: int | None, weaker_side: str | None,
              velocity_loss_pct: float | None, remarks: list[str], cues: list[str],
              advice: dict[str, Any]) -> dict[str, Any]:
    """The summary of a finished set; ``advice`` is ``{"action": "add"|"hold"|"reduce", "next_load": …, "text": …}``."""
    return envelope("set", rack, set_id=set_id, exercise=exercise, load=load, reps=reps, clean_reps=clean_reps,
                    worst_rep=worst_rep, cave_onset_rep=cave_onset_rep, weaker_side=weaker_side,
                    velocity_loss_pct=None if velocity_loss_pct is None else round(velocity_loss_pct, 1),
                    remarks=remarks, cues=cues, advice=advice)


def state_event(rack: str | None, *, phase: str, lifter_seen: bool, load: dict[str, Any] | None,
                exercise: str, set_id: str | None, reps_in_set: int) -> dict[str, Any]:
    """The rack's current state (retained on MQTT, so a new dashboard sees it at once)."""
    return envelope("state", rack, phase=phase, lifter_seen=lifter_seen, load=load, exercise=exercise,
                    set_id=set_id, reps_in_set=reps_in_set)


def health_event(rack: str | None, *, fps: float, inference_ms: float, dropped_frames: int,
                 cpu_temp_c: float | None, throttled: bool | None, outbox_depth: int,
                 events_dropped: int = 0, events_unreadable: int = 0, events_refused: int = 0,
                 outbox_damaged: int = 0, snapshots_skipped: int = 0, pump_failures: int = 0,
                 disk_full: bool = False, events_in_memory: int = 0) -> dict[str, Any]:
    """How the rack itself is doing.

    The loss fields let a dashboard alert on every event the rack could not deliver (see docs/mqtt.md); the
    counts are cumulative since the outbox file was made (``pump_failures``: since the process started), so an
    alert fires when one grows: ``events_dropped`` (outbox full), ``events_unreadable`` (damaged outbox),
    ``events_refused`` (broker ACL), ``outbox_damaged``, ``snapshots_skipped`` (full disk), ``pump_failures``;
    ``disk_full`` and ``events_in_memory`` say how things stand now.
    """
    return envelope("health", rack, fps=round(fps, 2), inference_ms=round(inference_ms, 2),
                    dropped_frames=dropped_frames, cpu_temp_c=cpu_temp_c, throttled=throttled,
                    outbox_depth=outbox_depth, events_dropped=events_dropped, events_unreadable=events_unreadable,
                    events_refused=events_refused, outbox_damaged=outbox_damaged,
                    snapshots_skipped=snapshots_skipped, pump_failures=pump_failures, disk_full=disk_full,
                    events_in_memory=events_in_memory)


def load_info(value: float | None, units: str, one_rm: float | None) -> dict[str, Any] | None:
    """The ``load`` object of rep, set and state events; ``None`` when no load was entered."""
    if value is None:
        return None
    percent = round(100.0 * value / one_rm, 1) if one_rm else None
    return {"value": value, "units": units, "one_rm": one_rm, "percent_1rm": percent}
