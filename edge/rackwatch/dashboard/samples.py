"""Realistic rack events for the dashboard's tests, ``rackwatch loadtest`` and nothing else.

:func:`make_event` is the ONE place here that calls the rack's event code (``rackwatch.events``), so the events
are the real ones; the functions below only choose the numbers. They return the wire JSON (a dict).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

VERDICT_SEVERITY = {"clean": ("none", "none"), "minor": ("minor", "minor"), "note": ("minor", "moderate"),
                    "cave": ("moderate", "moderate")}


def make_event(kind: str, rack: str, *, at: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """An event made by the rack's own typed events, as it goes on the wire: ``kind`` is rep, not_counted, set,
    state or health; nested parts (``valgus``, ``load``, ``advice``) may be given as dicts; ``at`` is its time (by
    default now, as a rack makes it)."""
    from rackwatch import events

    envelope = {"rack": rack} if at is None else {"rack": rack, "time": at}
    return events.EVENT_TYPES[kind].model_validate({**fields, **envelope}).to_wire()


def load(value: float | None, one_rm: float | None = None, units: str = "kg") -> dict[str, Any] | None:
    if value is None:
        return None
    return {"value": value, "units": units, "one_rm": one_rm,
            "percent_1rm": round(100.0 * value / one_rm, 1) if one_rm else None}


def rep(rack: str, set_id: str, number: int, verdict: str = "clean", *, load_kg: float | None = 100.0,
        one_rm_kg: float | None = 140.0, at: datetime | None = None) -> dict[str, Any]:
    """A squat rep; ``verdict`` is clean, minor (clean with a minor cave), note, cave or unjudged; ``at`` as in
    :func:`make_event` (so in every function here)."""
    t0 = 10.0 + 3.0 * number
    if verdict == "unjudged":
        legs, severity, wire_verdict = {"left": None, "right": None}, None, "unjudged"
    else:
        severity, measured = VERDICT_SEVERITY[verdict]
        cave = {"none": 0.01, "minor": 0.05, "moderate": 0.09}[measured]
        legs = {"left": {"severity": "none", "measured": "none", "cave": -0.01, "peak_phase": "ascent",
                         "t_peak": t0 + 2.0, "fppa_change_deg": -3.0, "medial_shift": -0.01},
                "right": {"severity": severity, "measured": measured, "cave": cave, "peak_phase": "bottom",
                          "t_peak": t0 + 1.2, "fppa_change_deg": 8.0, "medial_shift": 0.03}}
        wire_verdict = "clean" if verdict == "minor" else verdict
    return make_event("rep", rack, at=at, set_id=set_id, rep=number, exercise="squat", working_leg="both",
                      t_start=t0, t_bottom=t0 + 1.2, t_end=t0 + 2.6, load=load(load_kg, one_rm_kg),
                      valgus=legs, severity=severity, verdict=wire_verdict, depth=0.42, descent_s=1.2,
                      ascent_s=1.4, ascent_speed=0.6, stance_ratio=1.3, hip_shift=None,
                      unjudged_reason="the camera sees the lifter from the side" if verdict == "unjudged" else None)


def state(rack: str, *, set_id: str | None = None, reps_in_set: int = 0, lifter_seen: bool = True,
          phase: str = "standing", load_kg: float | None = 100.0, one_rm_kg: float | None = 140.0,
          camera: str | None = None, camera_reason: str | None = None, at: datetime | None = None
          ) -> dict[str, Any]:
    return make_event("state", rack, at=at, phase=phase, lifter_seen=lifter_seen, load=load(load_kg, one_rm_kg),
                      exercise="squat", set_id=set_id, reps_in_set=reps_in_set, camera=camera,
                      camera_reason=camera_reason)


NOT_COUNTED_REASONS = {
    "jump": "both feet left the floor (0.16 hip heights): a jump, not a squat",
    "step": "the left foot stepped (0.31 hip heights): a lunge or a step, not a squat",
    "start_unseen": "the lifter then stood 33% taller than ever seen before the rep: found part way down, the "
                    "rep's start was not seen",
}


def not_counted(rack: str, why: str = "jump", *, set_id: str | None = None, at: datetime | None = None
                ) -> dict[str, Any]:
    """A movement the rack did not count; ``why`` is one of :data:`NOT_COUNTED_REASONS`."""
    return make_event("not_counted", rack, at=at, set_id=set_id, exercise="squat", t_start=30.1, t_end=31.0,
                      why=why, reason=NOT_COUNTED_REASONS[why])


def set_summary(rack: str, set_id: str, reps: int, clean_reps: int, *, load_kg: float = 100.0,
                one_rm_kg: float = 140.0, at: datetime | None = None, remarks: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    return make_event("set", rack, at=at, set_id=set_id, exercise="squat", load=load(load_kg, one_rm_kg), reps=reps,
                      clean_reps=clean_reps, worst_rep=reps if clean_reps < reps else None,
                      cave_onset_rep=clean_reps + 1 if clean_reps < reps else None,
                      weaker_side="right" if clean_reps < reps else None, velocity_loss_pct=12.0, remarks=list(remarks),
                      cues=["push the knees out"] if clean_reps < reps else [],
                      advice={"action": "hold", "next_load": load_kg, "text": f"stay at {load_kg:g} kg"})


def health(rack: str, *, fps: float = 14.9, cpu_temp_c: float | None = 55.0, throttled: bool | None = False,
           outbox_depth: int = 0, dropped_frames: int = 0, at: datetime | None = None, **losses: Any
           ) -> dict[str, Any]:
    """A health report, with this rackwatch's version as a rack sends it; ``losses`` sets the loss fields
    (``events_dropped=3``, ``disk_full=True``, ...)."""
    from rackwatch import __version__

    return make_event("health", rack, at=at, fps=fps, inference_ms=41.0, dropped_frames=dropped_frames,
                      cpu_temp_c=cpu_temp_c, throttled=throttled, outbox_depth=outbox_depth,
                      software_version=__version__, **losses)
