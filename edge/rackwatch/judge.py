"""Judging reps and sets: how bad was the knee cave, given the load, and what to do next time.

The measure behind every verdict is **knee cave**: how far the knee has moved inside the ankle below it,
compared with the lifter's own standing posture, in units of their leg length, taken at its worst moment of the
rep (the 90th percentile of the rep's frames, so that one bad frame of the model is not a verdict). A knee that
tracks over or outside the toes gives zero or less; a knee that caves gives a positive number. The knee is
compared with the foot below it, not with the hip, because that is what coaches look at and because it survives
the foreshortened thighs of a front view at the bottom (see docs/valgus.md for the measurements behind the
default thresholds).

Load changes the verdict, not the measurement:

- near a true max (``near_max_percent`` of the one-rep max and up) a cave is judged one step milder and shown as
  a *note*: a small wobble on a max attempt is expected;
- at working loads (up to ``working_max_percent``) a cave that repeats on the same leg within a set is judged one
  step harsher: consistent cave at 75-85 % of max is the pattern to fix;
- with no load or no one-rep max entered the measurement is judged as it is.

Pure code: reps in, typed events out (:class:`rackwatch.events.RepEvent` and :class:`~rackwatch.events.SetEvent`),
at full precision; they are rounded only when serialised.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from . import events
from .events import (LEGS, NOT_COUNTED_WHY, SEVERITIES, UNJUDGED_WHY, Advice, LegValgus, RepEvent, SetEvent, Valgus,
                     severity_rank)
from .load import LifterSettings, round_to_plates, step_weight
from .reps import Rep
from .settings import Settings


class JudgeSettings(Settings):
    """How reps and sets are judged: the ``[analysis.judge]`` table of the config file."""

    minor_cave: float = Field(0.04, ge=0, le=1)
    """Knee cave (leg lengths) from which a rep is marked ``minor``."""
    moderate_cave: float = Field(0.07, ge=0, le=1)
    severe_cave: float = Field(0.12, ge=0, le=1)
    min_view_width: float = Field(0.12, ge=0, le=10)
    """Standing hip width ÷ hip height below this means the camera looks at the lifter too far from the side."""
    max_turn_shift: float = Field(0.11, gt=0, le=1)
    """At the bottom of a rep, knees and hips that move sideways in opposite directions by more than this together
    (the knees' common shift plus the hips', leg lengths) mean the lifter is turned to the camera (knees forward
    and hips back, seen at an angle): the rep's knees are not judged..."""
    max_knee_travel: float = Field(3.0, gt=0, le=100)
    """...the knees' shift counted up to this many times the hips': seen at an angle, the knees shift by their
    forward travel and the hips by their backward travel (× sin θ), and the knees travel at most about this many
    times as far as the hips (an upright squat). Beyond it a knee moves on its own, a cave of one knee."""
    min_leg_seen: float = Field(0.75, ge=0, le=1)
    """A leg is judged only if its hip, knee and ankle were all seen in at least this share of the rep's frames..."""
    min_leg_confidence: float = Field(0.5, ge=0, le=1)
    """...with the model's median score for them at least this."""
    near_max_percent: float = Field(90.0, gt=0, le=150)
    working_max_percent: float = Field(85.0, gt=0, le=150)
    wide_stance_ratio: float = Field(1.9, gt=0, le=10)
    """Ankle gap ÷ shoulder gap above this is a very wide stance (about twice shoulder width)."""
    hip_shift_limit: float = Field(0.05, ge=0, le=1)
    """Sideways hip shift at the bottom (leg lengths) worth a remark."""
    velocity_loss_limit: float = Field(25.0, ge=0, le=100)
    """Percent drop in ascent speed from the best early rep to the last, worth a remark."""
    weaker_side_margin: float = Field(0.03, ge=0, le=1)
    """One leg is the weaker side when its mean cave over the set exceeds the other's by this much (leg lengths)."""
    deload_after_caves: int = Field(2, ge=1, le=100)
    """This many caved reps in a set (or one severe) and the advice is to reduce the load..."""
    deload_percent: float = Field(10.0, gt=0, lt=100)
    """...by about this percent."""

    @model_validator(mode="after")
    def _consistent(self) -> JudgeSettings:
        if not self.minor_cave < self.moderate_cave < self.severe_cave:
            raise ValueError("needs minor_cave < moderate_cave < severe_cave, not "
                             f"{self.minor_cave:g}, {self.moderate_cave:g}, {self.severe_cave:g}")
        if not self.working_max_percent <= self.near_max_percent:
            raise ValueError("needs working_max_percent <= near_max_percent (a working load is below a near-max "
                             f"one), not {self.working_max_percent:g} and {self.near_max_percent:g}")
        return self


def _peak(values: list[float]) -> tuple[float, int] | None:
    """The 90th percentile of a leg's values and the index of the frame nearest it."""
    finite = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(finite) < 3:
        return None
    p90 = float(np.percentile([v for v, _ in finite], 90))
    index = min(finite, key=lambda vi: abs(vi[0] - p90))[1]
    return p90, index


@dataclass(frozen=True)
class LegMeasure:
    """The valgus numbers of one leg over one rep, before any judgement (see :class:`rackwatch.events.LegValgus`)."""

    cave: float
    peak_phase: str
    t_peak: float
    fppa_change_deg: float | None
    medial_shift: float | None


def turn_shifts(rep: Rep) -> list[float]:
    """Per frame of a two-legged rep, the sideways knee shift that comes from seeing the squat at an angle.

    In a squat the knees travel forward and the hips back. Seen square from the front, neither shows sideways;
    seen at an angle, both knees slide the same way across the picture (relative to the feet) and the hips the
    other way, so one knee looks caved and the other pushed out. A real cave moves the knees toward each other,
    and a weight shift moves knees and hips the same way; so the part of the knees' common sideways shift that
    the hips mirror is taken for the view, and removed (:func:`measure_leg`). Shifts are in leg lengths, +
    toward the lifter's left; 0 where a knee or the hips are not seen.
    """
    out = []
    for sample in rep.samples:
        left, right, hips = sample.legs["left"], sample.legs["right"], sample.hip_shift
        if left is None or right is None or hips is None:
            out.append(0.0)
            continue
        # knee_inside_ankle is + toward the midline: toward the lifter's right for the left knee, left for the right.
        knees = (right.knee_inside_ankle - left.knee_inside_ankle) / 2
        out.append(math.copysign(min(abs(knees), abs(hips)), knees) if knees * hips < 0 else 0.0)
    return out


def measure_leg(rep: Rep, side: str, turn: list[float] | None = None) -> LegMeasure | None:
    """The valgus numbers of one leg over one rep, before any judgement; ``None`` if the leg was not seen.

    ``turn`` (from :func:`turn_shifts`) is removed from the knee's position first, for a two-legged squat.
    """
    legs = [s.legs[side] for s in rep.samples]
    turn = turn or [0.0] * len(legs)
    toward_left = 1.0 if side == "left" else -1.0   # a shift toward the lifter's left is lateral for the left knee
    peak = _peak([leg.knee_inside_ankle + toward_left * shift if leg else None for leg, shift in zip(legs, turn)])
    if peak is None:
        return None
    cave, index = peak
    fppa = _peak([leg.fppa_change if leg else None for leg in legs])
    medial = _peak([leg.medial_shift if leg else None for leg in legs])
    return LegMeasure(cave=cave, peak_phase=rep.phase_of[index], t_peak=rep.samples[index].t,
                      fppa_change_deg=None if fppa is None else fppa[0],
                      medial_shift=None if medial is None else medial[0])


def grade(cave: float, settings: JudgeSettings) -> str:
    """Severity of a measured cave, before the load is considered."""
    if cave >= settings.severe_cave:
        return "severe"
    if cave >= settings.moderate_cave:
        return "moderate"
    if cave >= settings.minor_cave:
        return "minor"
    return "none"


def _shift(severity: str, steps: int) -> str:
    return SEVERITIES[min(max(severity_rank(severity) + steps, 0), len(SEVERITIES) - 1)]


def view_is_frontal(rep: Rep, settings: JudgeSettings) -> bool:
    """Whether the camera sees the lifter square enough to judge knee cave at all (from the standing posture)."""
    cal = rep.calibration
    return bool(cal.hip_width) and cal.hip_width / cal.hip_height >= settings.min_view_width


def turned_away(rep: Rep, settings: JudgeSettings) -> bool:
    """Whether the lifter squatted turned to the camera on this rep (see :func:`turn_shifts`).

    Judged per rep, since a lifter may turn between reps: at the bottom, the knees' common sideways shift and the
    hips' shift point opposite ways and add up to more than ``max_turn_shift``, the knees' counted up to
    ``max_knee_travel`` times the hips'. Seen at an angle θ, the knees shift by their forward travel × sin θ and
    the hips by their backward travel × sin θ: the sum grows with the angle whatever the squat's style (an upright
    squat moves the knees more, a hips-back squat the hips), while a cave of one knee, which the hips do not
    mirror, adds little to it.
    """
    knees, hips = [], []
    for sample, phase in zip(rep.samples, rep.phase_of):
        left, right = sample.legs["left"], sample.legs["right"]
        if phase != "bottom" or left is None or right is None or sample.hip_shift is None:
            continue
        knees.append((right.knee_inside_ankle - left.knee_inside_ankle) / 2)
        hips.append(sample.hip_shift)
    if not knees:
        return False
    knee, hip = float(np.median(knees)), float(np.median(hips))
    return knee * hip < 0 and min(abs(knee), settings.max_knee_travel * abs(hip)) + abs(hip) > settings.max_turn_shift


def leg_unseen(rep: Rep, side: str, settings: JudgeSettings) -> str | None:
    """``leg_hidden`` or ``feet_hidden`` when the model did not see this leg well enough over the rep, else ``None``.

    A leg half hidden behind the other (the far leg of a turned lifter) or a foot out of the picture is still
    given joints by the model, with low scores and wandering positions: a number from it would be a guess.
    """
    seen = [s.legs[side] for s in rep.samples if s.legs[side] is not None]
    share = len(seen) / len(rep.samples)
    leg = float(np.median([s.confidence for s in seen])) if seen else 0.0
    foot = float(np.median([s.foot_confidence for s in seen])) if seen else 0.0
    if share >= settings.min_leg_seen and min(leg, foot) >= settings.min_leg_confidence:
        return None
    return "feet_hidden" if foot < leg else "leg_hidden"


@dataclass
class SetJudge:
    """Judges the reps of one set as they come, and sums the set up at the end.

    Make a new one for every set: the lifter's settings (load, one-rep max, exercise, and the working leg of a
    single-leg squat when they entered it) belong to the set, and so does the memory of which leg caved. (Only a
    burst of changes updates ``lifter`` of the set under way; see :mod:`rackwatch.analysis`.)
    """

    rack: str | None
    lifter: LifterSettings = field(default_factory=LifterSettings)
    settings: JudgeSettings = field(default_factory=JudgeSettings)
    set_id: str = field(default_factory=events.new_id)
    reps: list[RepEvent] = field(default_factory=list)
    not_counted: Counter[str] = field(default_factory=Counter)
    """The movements of the set that looked like reps but were not counted, by why (the analysis counts them)."""
    _caved_before: dict = field(default_factory=lambda: {leg: False for leg in LEGS})

    def judge(self, rep: Rep) -> RepEvent:
        """The rep event for ``rep``, the next rep of this set."""
        s = self.settings
        working = "both"
        judged_legs = list(LEGS)
        if self.lifter.exercise == "single-leg":
            working = self.lifter.working_leg or rep.working_leg() or "left"
            judged_legs = [working]
        view = self.why_unjudged(rep)
        two_legged = self.lifter.exercise == "squat"
        turn = turn_shifts(rep) if two_legged and view is None else None
        percent = self.lifter.percent_of_max
        valgus: dict[str, LegValgus | None] = {side: None for side in LEGS}
        unjudged: dict[str, str] = {}
        for side in judged_legs:
            why = view or leg_unseen(rep, side, s)
            numbers = None if why else measure_leg(rep, side, turn)
            if numbers is None:
                unjudged[side] = why or "leg_hidden"
                continue
            measured = grade(numbers.cave, s)
            severity = measured
            if measured != "none" and percent is not None:
                if percent >= s.near_max_percent:
                    severity = _shift(measured, -1)
                elif percent <= s.working_max_percent and self._caved_before[side]:
                    severity = _shift(measured, +1)
            self._caved_before[side] = self._caved_before[side] or measured != "none"
            valgus[side] = LegValgus(severity=severity, measured=measured, cave=numbers.cave,
                                     peak_phase=numbers.peak_phase, t_peak=numbers.t_peak,
                                     fppa_change_deg=numbers.fppa_change_deg, medial_shift=numbers.medial_shift)
        judged = [v for v in valgus.values() if v is not None]
        severity = max((v.severity for v in judged), key=severity_rank, default="none")
        measured = max((v.measured for v in judged), key=severity_rank, default="none")
        # "clean" is a promise about every leg that should have been judged; a cave on a judged leg stands alone.
        if severity_rank(severity) >= severity_rank("moderate"):
            verdict = "cave"
        elif severity_rank(measured) >= severity_rank("moderate"):
            verdict = "note"
        elif unjudged:
            verdict = "unjudged"
        else:
            verdict = "clean"
        shifts = [smp.hip_shift for smp, phase in zip(rep.samples, rep.phase_of)
                  if phase == "bottom" and smp.hip_shift is not None]
        event = RepEvent(
            rack=self.rack, set_id=self.set_id, rep=len(self.reps) + 1, exercise=self.lifter.exercise,
            working_leg=working, t_start=rep.t_start, t_bottom=rep.t_bottom, t_end=rep.t_end,
            load=self.lifter.load_info(), valgus=Valgus(**valgus, unjudged=unjudged),
            severity=severity if judged else None, verdict=verdict, depth=rep.depth,
            descent_s=rep.descent_s, ascent_s=rep.ascent_s, ascent_speed=rep.ascent_speed,
            stance_ratio=rep.calibration.stance_ratio, hip_shift=float(np.median(shifts)) if shifts else None,
            unjudged_reason=_reason(unjudged) if verdict == "unjudged" else None)
        self.reps.append(event)
        return event

    def why_unjudged(self, rep: Rep) -> str | None:
        """Why no leg of this rep can be judged from where the camera sees it, or ``None`` if they can."""
        if not view_is_frontal(rep, self.settings):
            return "side_view"
        if self.lifter.exercise == "squat" and turned_away(rep, self.settings):
            return "turned"
        return None

    def summary(self) -> SetEvent | None:
        """The set event, or ``None`` for a set without reps."""
        if not self.reps:
            return None
        s = self.settings
        reps = self.reps
        clean = [r for r in reps if r.verdict == "clean"]
        cave_by_rep = [max((v.cave for v in r.valgus.judged()), default=None) for r in reps]
        worst = None
        if any(r.verdict in ("cave", "note") for r in reps):
            worst = reps[int(np.nanargmax([np.nan if c is None else c for c in cave_by_rep]))].rep
        caving = [r.rep for r in reps if r.verdict in ("cave", "note")]
        onset = caving[0] if caving else None
        weaker = _weaker_side(reps, s.weaker_side_margin)
        speeds = [r.ascent_speed for r in reps]
        velocity_loss = None
        if len(speeds) >= 3 and max(speeds[:2]) > 0:
            velocity_loss = max(0.0, 100.0 * (1 - speeds[-1] / max(speeds[:2])))
        remarks, cues = [], []
        stance = reps[0].stance_ratio
        if stance is not None and stance > s.wide_stance_ratio:
            remarks.append(f"Very wide stance (feet about {stance:.1f}x shoulder width): that asks a lot of the hips; "
                           "try bringing the feet in a little.")
        shifts = [r.hip_shift for r in reps if r.hip_shift is not None]
        # On one leg the hips must move over the standing foot: a shift is only worth a word on two.
        if shifts and self.lifter.exercise == "squat" and abs(float(np.median(shifts))) > s.hip_shift_limit:
            toward = "left" if np.median(shifts) > 0 else "right"
            remarks.append(f"Hips drift toward the {toward} at the bottom: a sign of tired or weak hip stabilisers.")
        remarks += _unjudged_remarks(reps)
        if self.not_counted:
            remarks.append(_not_counted_remark(self.not_counted))
        if velocity_loss is not None and velocity_loss > s.velocity_loss_limit:
            remarks.append(f"The last rep came up {velocity_loss:.0f}% slower than the first ones: "
                           "fatigue is setting in.")
        if onset is not None and onset > 1 and len(reps) >= 4 and onset > len(reps) / 2:
            remarks.append(f"Knees held until rep {onset}, then started to cave: fatigue, not technique, is the limit.")
        if caving:
            cues.append("Spread the floor with your feet and keep the knees pointing where the toes point.")
            cues.append("Add side-lying or banded hip abduction and single-leg squats to your warm-up.")
        if weaker:
            cues.append(f"Your {weaker} knee caves more: add extra single-leg work on the {weaker} side.")
        advice = _advice(reps, self.lifter, s)
        return SetEvent(rack=self.rack, set_id=self.set_id, exercise=self.lifter.exercise,
                        load=self.lifter.load_info(), reps=len(reps), clean_reps=len(clean), worst_rep=worst,
                        cave_onset_rep=onset, weaker_side=weaker, velocity_loss_pct=velocity_loss, remarks=remarks,
                        cues=cues, advice=advice, not_counted=dict(self.not_counted))


def _not_counted_remark(not_counted: Counter[str]) -> str:
    """One remark for the movements of the set that were not counted, with why."""
    total = sum(not_counted.values())
    whys = "; ".join(f"{NOT_COUNTED_WHY[why]} ({n})" for why, n in not_counted.most_common())
    return f"Not counted: {total} movement{'s' if total > 1 else ''} that looked like a rep: {whys}."


def _unjudged_remarks(reps: list[RepEvent]) -> list[str]:
    """One remark per reason a leg went unjudged in the set, naming the reps and legs."""
    where: dict[str, list[str]] = {}
    for r in reps:
        for side, code in r.valgus.unjudged.items():
            where.setdefault(code, []).append(f"{r.rep} ({side})")
    return [f"Not judged on rep {', '.join(places)}: {UNJUDGED_WHY[code]}." for code, places in where.items()]


def _reason(unjudged: dict[str, str]) -> str:
    """One sentence for a rep whose verdict is ``unjudged``."""
    codes = list(dict.fromkeys(unjudged.values()))
    if len(unjudged) == 1:
        (side, code), = unjudged.items()
        return f"The {side} knee was not judged: {UNJUDGED_WHY[code]}."
    return f"Knees not judged: {'; '.join(UNJUDGED_WHY[code] for code in codes)}."


def _weaker_side(reps: list[RepEvent], margin: float) -> str | None:
    """The leg that caves clearly more over the set, if any."""
    both = [r for r in reps if r.valgus.left and r.valgus.right]   # compare the legs on the same reps only
    if not both:
        return None
    means = {side: float(np.mean([r.valgus.leg(side).cave for r in both])) for side in LEGS}
    side = max(means, key=means.get)
    other = "left" if side == "right" else "right"
    caves_often = sum(1 for r in both if r.valgus.leg(side).measured != "none")
    return side if means[side] - means[other] > margin and caves_often >= 1 else None


def _advice(reps: list[RepEvent], lifter: LifterSettings, settings: JudgeSettings) -> Advice:
    """Advice on the load, drawn only from the reps whose knees were judged."""
    verdicts = [r.verdict for r in reps]
    judged = [v for v in verdicts if v != "unjudged"]
    severe = any(r.severity == "severe" for r in reps)
    caves = verdicts.count("cave")
    value, step, units = lifter.load, lifter.plate_step, lifter.units
    if not judged:
        return Advice(action="hold", next_load=value,
                      text="The knees could not be judged on any rep, so there is no advice on the load: see why "
                           "in the set's remarks.")
    if severe or caves >= settings.deload_after_caves:
        keep = 1 - settings.deload_percent / 100
        next_load = None if value is None else round_to_plates(value * keep, units)
        often = "on more than one rep" if settings.deload_after_caves == 2 else \
            f"on {settings.deload_after_caves} reps or more"
        return Advice(action="reduce", next_load=next_load,
                      text=f"The knees caved badly or {often}: drop about {settings.deload_percent:g}% and rebuild "
                           "clean reps before adding weight.")
    if caves or "note" in judged:
        return Advice(action="hold", next_load=value,
                      text="The knees wobbled: stay at this load until every rep of every set is clean.")
    if len(judged) < len(verdicts):
        return Advice(action="hold", next_load=value,
                      text=f"The {len(judged)} judged reps were clean, but {len(verdicts) - len(judged)} could not "
                           "be judged: stay at this load until a whole set is seen clean.")
    next_load = None if value is None else step_weight(value, 1, units)
    text = f"Every rep clean. After three clean sets at this load, add {step:g}-{2 * step:g} {units} next time."
    return Advice(action="add", next_load=next_load, text=text)
