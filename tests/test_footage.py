"""End to end on real footage with the real MoveNet model: rep counts against labels.json.

Each usable clip is analysed once (session cache); the poses are kept so that the sensitivity test can displace
knees of real, clean reps by known amounts.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rackwatch.analysis import LiftAnalyzer
from rackwatch.judge import JudgeSettings, grade
from rackwatch.load import LifterSettings
from rackwatch.pose import KP, Pose
from rackwatch.recording import analyze_recording

from conftest import FOOTAGE

pytestmark = pytest.mark.footage

LABELS = json.loads((FOOTAGE / "labels.json").read_text()) if (FOOTAGE / "labels.json").is_file() else []
USABLE = [c for c in LABELS if c.get("usable", True)]


@pytest.fixture(scope="session")
def analysed(interpreter, footage_dir):
    cache = {}

    def get(clip):
        if clip["clip"] not in cache:
            poses = []
            result = analyze_recording(footage_dir / clip["clip"], interpreter,
                                       lifter=LifterSettings(exercise=clip["exercise"]),
                                       on_frame=lambda f, p, e: poses.append((f.t, p, f.image.shape[0])))
            cache[clip["clip"]] = (result, poses)
        return cache[clip["clip"]]
    return get


@pytest.mark.parametrize("clip", USABLE, ids=[c["clip"] for c in USABLE])
def test_rep_count_matches_the_labels(analysed, clip):
    result, _ = analysed(clip)
    assert len(result.reps) == len(clip["reps"]), clip["notes"]
    for found, labelled in zip(result.reps, clip["reps"]):
        assert abs(found.t_bottom - labelled["bottom"] / clip["fps"]) <= 0.6
    assert len(result.sets) == 1 and result.sets[0].reps == len(clip["reps"])


def _displace_knees(poses, reps, shift: float):
    """Put both knees a known distance inside the feet: ``shift`` standing leg lengths at the bottom.

    Everything else stays real (hips, ankles, the model's noise); during each rep the knee's sideways place is
    replaced, in every frame, by its standing place relative to the ankle, plus during each rep a cave that grows
    with depth as a real cave does. The measured cave should then come out close to ``shift``.
    """
    def in_rep(t):
        return any(r.t_start <= t <= r.t_end for r in reps)

    def hip_height(p):
        return max(p.xy[KP["left_ankle"], 1], p.xy[KP["right_ankle"], 1]) - (
            p.xy[KP["left_hip"], 1] + p.xy[KP["right_hip"], 1]) / 2

    standing = [p for t, p, _ in poses if not in_rep(t)]
    standing_height = float(np.median([hip_height(p) for p in standing]))
    standing_leg = {side: float(np.median([np.hypot(*(p.xy[KP[f"{side}_ankle"]] - p.xy[KP[f"{side}_hip"]]))
                                           for p in standing])) for side in ("left", "right")}
    knee_over_ankle = {side: float(np.median([p.xy[KP[f"{side}_knee"], 0] - p.xy[KP[f"{side}_ankle"], 0]
                                              for p in standing])) for side in ("left", "right")}
    out = []
    for t, pose, height in poses:
        xy = pose.xy.copy()
        rep = next((r for r in reps if r.t_start <= t <= r.t_end), None)
        share = 0.0 if rep is None else float(np.clip((1 - hip_height(pose) / standing_height) / rep.depth, 0, 1))
        for side, other in (("left", "right"), ("right", "left")):
            toward_mid = np.sign(xy[KP[f"{other}_hip"], 0] - xy[KP[f"{side}_hip"], 0])
            xy[KP[f"{side}_knee"], 0] = (xy[KP[f"{side}_ankle"], 0] + knee_over_ankle[side]
                                         + toward_mid * shift * share * standing_leg[side])
        out.append((t, Pose(xy=xy, score=pose.score), height))
    return out


def _replay(poses, exercise="squat"):
    analyzer = LiftAnalyzer(lifter=LifterSettings(exercise=exercise))
    events = []
    for t, pose, height in poses:
        events += analyzer.update(t, pose, height)
    events += analyzer.finish()
    return [e for e in events if e.type == "rep"]


@pytest.mark.parametrize("shift, expected", [(0.0, "none"), (0.055, "minor"), (0.095, "moderate"), (0.2, "severe")])
def test_synthetic_cave_on_real_clean_reps_is_caught(analysed, shift, expected):
    clip = next(c for c in USABLE if c["clip"] == "kratika/squat_front_bodyweight.mp4")
    result, poses = analysed(clip)
    assert all(r.verdict == "clean" for r in result.reps)
    caved = _replay(_displace_knees(poses, result.reps, shift))
    assert len(caved) == len(result.reps), "displacing the knees must not change the rep count"
    for after in caved:
        for leg in ("left", "right"):
            # The 90th percentile of the rep sits a little below its very deepest frame.
            assert after.valgus.leg(leg).cave == pytest.approx(shift, rel=0.15, abs=0.015)
    # The judgement tracks the known answer: the measured cave, graded by the default thresholds.
    for after in caved:
        cave = max(after.valgus.leg(leg).cave for leg in ("left", "right"))
        assert after.severity == grade(cave, JudgeSettings())
    assert all(r.severity == expected for r in caved)


def _replay_with_changes(poses, change_times):
    """Replay real poses, the lifter's load changing (100 / 102.5 kg alternately) at each of ``change_times``."""
    analyzer = LiftAnalyzer(lifter=LifterSettings(load=100, one_rm=140))
    pending, out = sorted(change_times), []
    for t, pose, height in poses:
        while pending and pending[0] <= t:
            pending.pop(0)
            load = 102.5 if analyzer.lifter.load == 100 else 100
            out += analyzer.change(LifterSettings(load=load, one_rm=140))
        out += analyzer.update(t, pose, height)
    return out + analyzer.finish()


def test_a_burst_of_load_changes_ends_the_set_once_not_at_every_change(analysed):
    clip = next(c for c in USABLE if c["clip"] == "kratika/squat_front_bodyweight.mp4")
    result, poses = analysed(clip)
    bottoms = [r.t_bottom for r in result.reps]
    assert len(bottoms) == 9
    # A change a second from just after the third rep to the end (a flood of commands, a dashboard slider):
    # the set so far ends once, and the rest of the reps stay together in the set the burst began.
    start = result.reps[2].t_end + 0.1
    flood = [start + k for k in range(int(poses[-1][0] - start) + 1)]
    sets = [e for e in _replay_with_changes(poses, flood) if e.type == "set"]
    assert [s.reps for s in sets] == [3, 6]
    assert sum(s.reps for s in sets) == len(bottoms)
    # Changes further apart than a burst still end the set each time (between reps 3|4 and 6|7).
    apart = [result.reps[2].t_end + 0.1, result.reps[5].t_end + 0.1]
    assert apart[1] - apart[0] > 5
    sets = [e for e in _replay_with_changes(poses, apart) if e.type == "set"]
    assert [s.reps for s in sets] == [3, 3, 3]
