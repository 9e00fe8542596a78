"""A lifter small in the frame: found late, first seen roughly. No rep is counted whose start was not seen.

The model looks at the whole picture until it finds someone; a lifter a third of the picture's height is then a
few dozen of its 192 pixels, and is found late and placed roughly at first (docs/valgus.md, "A lifter small in
the frame"). The footage tests shrink real clips as a camera three times further back would see them
(``rackwatch eval --distance 3``) and run the real model on them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rackwatch.analysis import LiftAnalyzer
from rackwatch.load import LifterSettings
from rackwatch.pose import KP, Pose
from rackwatch.recording import analyze_recording

from conftest import FOOTAGE, standing_pose

LABELS = json.loads((FOOTAGE / "labels.json").read_text()) if (FOOTAGE / "labels.json").is_file() else []
FPS = 30


def _searching(offset: float) -> Pose:
    """A frame in which the model has not found the lifter: no knee or ankle scored, hips and shoulders guessed
    ``offset`` pixels above where they are."""
    pose = standing_pose()
    xy, score = pose.xy.copy(), pose.score.copy()
    for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder"):
        xy[KP[name], 1] -= offset
    for name in ("left_knee", "right_knee", "left_ankle", "right_ankle"):
        score[KP[name]] = 0.05
    return Pose(xy=xy, score=score)


def _squat(depth=0.5, seconds=2.0):
    return [standing_pose(depth=d) for d in np.concatenate([np.linspace(0, depth, int(seconds / 2 * FPS)),
                                                            np.linspace(depth, 0, int(seconds / 2 * FPS))])]


def test_joints_guessed_while_nobody_is_found_do_not_seed_the_smoothing():
    # A third of a second of the model searching the picture, placing the hips far too high with no leg seen;
    # then the lifter, found, stands still, squats once and stands. Smoothing seeded by those guesses would pull
    # the hips down toward the lifter's for half a second: an apparent descent from a standing height far too
    # tall, and the real rep lost against it.
    poses = [_searching(450)] * 10 + [standing_pose()] * FPS + _squat() + [standing_pose()] * FPS
    analyzer = LiftAnalyzer()
    events = []
    for i, pose in enumerate(poses):
        events += analyzer.update(i / FPS, pose, 1000)
    events += analyzer.finish()
    reps = [e for e in events if e.type == "rep"]
    assert len(reps) == 1
    assert abs(reps[0].t_bottom - (10 / FPS + 1 + 1)) < 0.25   # (the smoothing lags a fast lifter a little)
    assert abs(analyzer.tracker.calibration.hip_height - 400) < 5


def _clip(name: str) -> dict:
    return next(c for c in LABELS if c["clip"] == name)


@pytest.mark.footage
def test_a_rep_cut_off_by_the_start_of_the_clip_is_not_counted_with_the_lifter_small(interpreter, footage_dir):
    # The case: hyva_ja_paha opens with the lifter held low in a single-leg squat, then rises; one
    # complete rep follows. Three times further back, the lifter's first sightings were placed roughly and the
    # smoothing spread them over half a second: an apparent descent from the clip's start, counted as a rep.
    clip = _clip("tuxotiikeri/hyva_ja_paha.mp4")
    result = analyze_recording(footage_dir / clip["clip"], interpreter, distance=3,
                               lifter=LifterSettings(exercise=clip["exercise"]))
    assert len(result.reps) == len(clip["reps"]) == 1
    assert abs(result.reps[0].t_bottom - clip["reps"][0]["bottom"] / clip["fps"]) <= 0.6


@pytest.mark.footage
def test_a_lifter_found_part_way_down_is_not_counted_for_that_rep(interpreter, footage_dir):
    # lnewco IMG_7027 three times further back: the model finds the lifter only 0.8 s in, a third of the way
    # down (full size it sees them stand). The rep's start was not seen: it is not counted, and says why.
    clip = _clip("lnewco/IMG_7027_front.mov")
    result = analyze_recording(footage_dir / clip["clip"], interpreter, distance=3,
                               lifter=LifterSettings(exercise=clip["exercise"]))
    assert result.reps == []
    assert any(e.why == "start_unseen" and "start was not seen" in e.reason for e in result.not_counted)
