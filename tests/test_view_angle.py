"""Knee cave from every direction: a simulated lifter (tests/lifter3d.py) squats three reps while the camera stands
at each angle around them, and the whole analysis (smoothing, rep tracker, judge) watches, as at the rack.

What a lifter is promised, whatever the angle:

- a clean rep is never called a cave: each knee is clean or ``minor``, or not judged, with the reason given;
- a clear cave (each knee 0.12 leg lengths inside where it stood) is called a cave where the knees are judged, and
  where the camera is too far round they are not judged (``turned``, ``side_view``), never judged clean;
- the knees are judged from the front up to some angle and not beyond it: no angle judged past one left unjudged.

Four squatters, the two styles that see the angle differently: upright (knees far forward, hips hardly back,
whose knees slide furthest across the picture at an angle) and hips back (the hips slide most), with feet straight,
turned out 15° and 30°, narrow and wide. No real footage between 15° and 60° from the front exists here: this is
the check for that range (docs/valgus.md, "Views between front and side, simulated").
"""

from __future__ import annotations

import functools

import pytest

from lifter3d import Camera, Lifter, recording
from rackwatch import judge
from rackwatch.analysis import AnalysisSettings
from rackwatch.events import UNJUDGED_WHY
from rackwatch.judge import JudgeSettings
from test_squats_only import analyze

CAVE = 0.12     # leg lengths: a clear cave, past severe_cave at the front
REPS = 3
SQUATTERS = {   # name: (lifter, depth as a share of standing hip height)
    "upright, narrow, feet straight": (Lifter(stance=0.30, turnout=0, hips_back=0.3), 0.30),
    "upright, wide, feet out 15": (Lifter(stance=0.55, turnout=15, hips_back=0.3), 0.45),
    "hips back, medium, feet out 15": (Lifter(stance=0.38, turnout=15, hips_back=0.7), 0.45),
    "hips back, wide, feet out 30": (Lifter(stance=0.55, turnout=30, hips_back=0.7), 0.55),
}
FRONT_TO_SIDE = list(range(0, 95, 5))
MIRRORED = list(range(0, -95, -15))   # the camera toward their right: the same lifter, mirrored
ANGLES = FRONT_TO_SIDE + MIRRORED[1:] + [180]
VIEW_REASONS = ("turned", "side_view")


@functools.cache
def reps_seen(squatter: str, yaw: int, cave: float, fps: int = 10, settings: AnalysisSettings = AnalysisSettings()):
    """The rep events of three reps filmed from ``yaw``."""
    lifter, depth = SQUATTERS[squatter]
    poses = recording(lifter, Camera(yaw=yaw), fps, reps=REPS, depth=depth, cave=cave, seed=abs(yaw))
    return [e for _, e in analyze(poses, fps, px=0, settings=settings, frame_height=Camera().height_px)
            if e.type == "rep"]


def legs(rep):
    """Per leg: the severity judged, or the reason it was not judged."""
    return {side: v.severity if (v := rep.valgus.leg(side)) else rep.valgus.unjudged[side]
            for side in ("left", "right")}


def judged(squatter: str, yaw: int) -> bool:
    """Whether any knee of the caving reps filmed from ``yaw`` was judged."""
    return any(rep.valgus.judged() for rep in reps_seen(squatter, yaw, CAVE))


def _cases():
    # Every angle at the rack's 10 fps; every 30° at a recording's 30 too.
    return [(yaw, 10) for yaw in ANGLES] + [(yaw, 30) for yaw in ANGLES if yaw % 30 == 0]


@pytest.mark.parametrize("yaw, fps", _cases())
def test_a_clean_rep_is_never_called_a_cave_from_any_angle(yaw, fps):
    for squatter in SQUATTERS:
        reps = reps_seen(squatter, yaw, 0.0, fps)
        assert len(reps) == REPS, squatter
        for rep in reps:
            for side, verdict in legs(rep).items():
                assert verdict in ("none", "minor") or verdict in UNJUDGED_WHY, (squatter, rep.rep, side, verdict,
                                                                                  rep.valgus.leg(side))
            assert rep.verdict in ("clean", "unjudged"), (squatter, rep.rep, legs(rep))


@pytest.mark.parametrize("yaw, fps", _cases())
def test_a_clear_cave_is_called_a_cave_or_not_judged_from_any_angle(yaw, fps):
    for squatter in SQUATTERS:
        reps = reps_seen(squatter, yaw, CAVE, fps)
        assert len(reps) == REPS, squatter
        for rep in reps:
            verdicts = legs(rep)
            if rep.valgus.judged():
                # Judged: a cave, and no knee said to be clean (the far knee of an upright squatter seen at 15-20°
                # may read only minor: the view's share of its shift is not all taken out).
                assert rep.verdict == "cave" and "none" not in verdicts.values(), (squatter, rep.rep, verdicts)
            else:
                assert set(verdicts.values()) <= set(VIEW_REASONS), (squatter, rep.rep, verdicts)


@pytest.mark.parametrize("squatter", SQUATTERS)
@pytest.mark.parametrize("angles", [FRONT_TO_SIDE, MIRRORED], ids=["toward the left", "toward the right"])
def test_the_knees_are_judged_from_the_front_up_to_one_angle_and_not_beyond(squatter, angles):
    seen = [judged(squatter, yaw) for yaw in angles]
    # From the front and within 10° of it the knees are judged...
    assert all(judged(squatter, yaw) for yaw in angles if abs(yaw) <= 10), dict(zip(angles, seen))
    # ...and once the camera is too far round, at every angle beyond too (up to the side).
    switch = next((i for i, judged_here in enumerate(seen) if not judged_here), len(seen))
    assert switch < len(seen), f"{squatter}: judged at every angle up to the side: {dict(zip(angles, seen))}"
    assert not any(seen[switch:]), dict(zip(angles, seen))
    # From behind the view is square again: judged.
    assert judged(squatter, 180)


@pytest.mark.xfail(strict=True, reason=(
    "a shallow upright squat with a wide stance and the feet straight moves the knees 3.7 times as far sideways as "
    "the hips at 25°, past max_knee_travel (3): the turn is missed on one rep, and only the hips' share of the "
    "knees' shift is taken out (docs/valgus.md, 'Views between front and side, simulated')"))
def test_known_limit_a_shallow_upright_wide_squat_at_25_degrees():
    lifter = Lifter(stance=0.55, turnout=0, hips_back=0.3)
    poses = recording(lifter, Camera(yaw=25), 10, depth=0.30, seed=25)
    reps = [e for _, e in analyze(poses, 10, px=0, frame_height=Camera().height_px) if e.type == "rep"]
    assert len(reps) == REPS and all(rep.verdict in ("clean", "unjudged") for rep in reps)


# -- each promise can fail: what the rules prevent, seen in the same simulation --------------------------------

LOOSE = AnalysisSettings(judge=JudgeSettings(max_turn_shift=1.0, min_view_width=0.0))


@pytest.mark.parametrize("squatter, yaw", [("upright, narrow, feet straight", 30),
                                           ("hips back, medium, feet out 15", 75)])
def test_with_the_view_checks_off_a_caving_knee_seen_at_an_angle_reads_clean(squatter, yaw):
    # What "turned" and "side_view" prevent: the far knee's cave hidden by the view's shift, and the side view.
    reps = reps_seen(squatter, yaw, CAVE, settings=LOOSE)
    assert any("none" in legs(rep).values() for rep in reps)


def test_with_the_angle_left_in_and_the_turn_check_off_a_clean_upright_squat_at_25_degrees_reads_as_a_cave(
        monkeypatch):
    # What removing the view's share (judge.turn_shifts) and "turned" prevent: one knee sliding across the picture.
    monkeypatch.setattr(judge, "turn_shifts", lambda rep: None)
    lifter, depth = SQUATTERS["upright, narrow, feet straight"]
    poses = recording(lifter, Camera(yaw=25), 10, depth=depth, seed=25)
    reps = [e for _, e in analyze(poses, 10, px=0, settings=LOOSE, frame_height=Camera().height_px)
            if e.type == "rep"]
    assert any(rep.verdict == "cave" for rep in reps)
