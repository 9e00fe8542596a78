import math

import numpy as np
import pytest

from rackwatch import geometry
from rackwatch.geometry import fppa
from rackwatch.pose import KP, Pose

from conftest import standing_pose


def test_straight_leg_has_no_valgus():
    frame = geometry.measure(standing_pose(stance=60))
    for leg in (frame.left, frame.right):
        assert leg.fppa_deg == pytest.approx(0, abs=1e-6)
        assert leg.knee_medial_px == pytest.approx(0, abs=1e-6)
        assert leg.knee_over_ankle_px == pytest.approx(0, abs=1e-6)


def test_knee_inside_is_positive_on_both_legs():
    frame = geometry.measure(standing_pose(stance=60, knee_in=20))
    for leg in (frame.left, frame.right):   # hip and ankle 200 px above and below a knee 20 px inside them
        assert leg.fppa_deg == pytest.approx(2 * math.degrees(math.atan(20 / 200)))
        assert leg.knee_over_ankle_px == pytest.approx(20)
        assert leg.knee_medial_px == pytest.approx(20)


def test_knee_outside_is_negative():
    frame = geometry.measure(standing_pose(stance=60, knee_in=-20))
    assert frame.left.fppa_deg < 0 and frame.right.fppa_deg < 0
    assert frame.left.knee_over_ankle_px == pytest.approx(-20)


def test_fppa_matches_the_angle_drawn():
    # Thigh straight down, shank turned by 30 degrees toward -x; for a leg whose midline lies at -x that is valgus.
    hip, knee = np.array([0.0, 0.0]), np.array([0.0, 100.0])
    ankle = knee + 100 * np.array([-math.sin(math.radians(30)), math.cos(math.radians(30))])
    assert fppa(hip, knee, ankle, medial=-1.0) == pytest.approx(-30.0)
    assert fppa(hip, knee, ankle, medial=+1.0) == pytest.approx(30.0)


def test_mirrored_video_keeps_the_sign():
    pose = standing_pose(stance=60, knee_in=20)
    mirrored = Pose(xy=np.column_stack([1000 - pose.xy[:, 0], pose.xy[:, 1]]).astype(np.float32), score=pose.score)
    assert geometry.measure(mirrored).left.knee_over_ankle_px == pytest.approx(20)


def test_separation_ratios_and_stance():
    frame = geometry.measure(standing_pose(stance=120, knee_in=60))
    assert frame.knee_ankle_ratio == pytest.approx(120 / 240)
    assert frame.knee_hip_ratio == pytest.approx(120 / 120)
    assert frame.stance_ratio == pytest.approx(240 / 180)
    assert frame.hip_tilt_deg == pytest.approx(0)


def test_hip_tilt_sign():
    pose = standing_pose()
    pose.xy[KP["left_hip"], 1] -= 20  # the lifter's left hip rises
    assert geometry.measure(pose).hip_tilt_deg > 0


def test_missing_joint_means_missing_measure():
    pose = standing_pose()
    pose.score[KP["left_knee"]] = 0.1
    frame = geometry.measure(pose)
    assert frame.left is None
    assert frame.right is not None
    assert frame.knee_ankle_ratio is None
