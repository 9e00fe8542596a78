"""Squat geometry of one frame: plain numbers from keypoints, with no notion of time or of the lifter's history.

The lifter faces the camera, so their left side is on the right of the image. "Medial" means toward the lifter's
midline; every signed measure here is positive when a knee moves medially (valgus) and negative when it moves
out. Lengths are in pixels; the rep tracker divides them by the lifter's own standing leg length, because at the
bottom of a squat, seen from the front, the thighs point at the camera and every current length shrinks.

A joint the model is not confident about is missing (``None``), and so is every measure that needs it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .pose import DEFAULT_MIN_SCORE, KP, Pose

Point = tuple[float, float]
"""(x, y) in image pixels. Plain floats: a frame's worth of arithmetic on a handful of joints is several times
faster in Python floats than in tiny NumPy arrays, and this runs for every frame on the Pi."""


class Leg(NamedTuple):
    """One leg's joints and valgus measures (pixels / degrees)."""

    hip: Point
    knee: Point
    ankle: Point
    fppa_deg: float
    """Frontal plane projection angle: 180° minus the hip-knee-ankle angle, signed (+ = knee medial)."""
    knee_medial_px: float
    """The knee's distance from the hip-ankle line, + toward the midline (medial knee displacement)."""
    knee_over_ankle_px: float
    """How far the knee sits medial of the ankle below it, horizontally (+ = inside the foot)."""
    length_px: float
    """Hip to ankle, straight."""
    shank_px: float
    """Knee to ankle."""
    confidence: float
    """The model's score for the less certain of hip and knee (0..1)."""
    foot_confidence: float
    """The model's score for the ankle (0..1): a foot out of the picture is guessed with a low score."""


class Frame(NamedTuple):
    """The squat geometry of one frame; a leg is ``None`` when its hip, knee or ankle is missing.

    (Named tuples, here and for the per-frame records of :mod:`rackwatch.reps`: immutable like a frozen
    dataclass, and several times cheaper to build, which counts at every frame on a Pi.)"""

    left: Leg | None
    right: Leg | None
    hip_center: Point | None
    knee_ankle_ratio: float | None
    """Knee gap ÷ ankle gap: below 1 the knees are inside the feet."""
    knee_hip_ratio: float | None
    """Knee gap ÷ hip gap."""
    stance_ratio: float | None
    """Ankle gap ÷ shoulder gap."""
    hip_tilt_deg: float | None
    """Angle of the line through the hips, + when the lifter's left hip is higher in the image."""
    hip_width_px: float | None
    shoulder_y: float | None
    """Mean height of the visible shoulders in the image."""
    hip_over_feet_px: float | None
    """Hip centre's horizontal distance from the midpoint of the ankles, + toward the lifter's left."""

    def leg(self, side: str) -> Leg | None:
        return self.left if side == "left" else self.right


def fppa(hip: Point, knee: Point, ankle: Point, medial: float) -> float:
    """The signed frontal plane projection angle in degrees (0 for a straight leg, + for a knee gone inward)."""
    tx, ty = knee[0] - hip[0], knee[1] - hip[1]
    sx, sy = ankle[0] - knee[0], ankle[1] - knee[1]
    # The turn from the thigh's direction to the shank's; with image y pointing down a knee pushed toward -x
    # turns the leg one way, toward +x the other: multiplying by the medial sign makes + mean valgus.
    return math.degrees(math.atan2(tx * sy - ty * sx, tx * sx + ty * sy)) * medial


# Keypoint indices per side, looked up once: _leg runs twice a frame on the Pi.
_HIP, _KNEE, _ANKLE = ({side: KP[f"{side}_{joint}"] for side in ("left", "right")} for joint in ("hip", "knee", "ankle"))


def _leg(joints: dict[str, Point], score: list, side: str, medial: float | None) -> Leg | None:
    hip, knee, ankle = joints.get(f"{side}_hip"), joints.get(f"{side}_knee"), joints.get(f"{side}_ankle")
    if hip is None or knee is None or ankle is None or medial is None:
        return None
    ax, ay = ankle[0] - hip[0], ankle[1] - hip[1]
    length = math.hypot(ax, ay)
    if length < 1e-6:
        return None
    # Signed distance of the knee from the hip-ankle line, along the line's normal that points to +x.
    nx, ny = (ay, -ax) if ay >= 0 else (-ay, ax)
    knee_offset = ((knee[0] - hip[0]) * nx + (knee[1] - hip[1]) * ny) / length * medial
    return Leg(hip=hip, knee=knee, ankle=ankle, fppa_deg=fppa(hip, knee, ankle, medial),
               knee_medial_px=knee_offset, knee_over_ankle_px=(knee[0] - ankle[0]) * medial,
               length_px=length, shank_px=math.hypot(ankle[0] - knee[0], ankle[1] - knee[1]),
               confidence=min(score[_HIP[side]], score[_KNEE[side]]), foot_confidence=score[_ANKLE[side]])


def _gap(a: Point | None, b: Point | None) -> float | None:
    return None if a is None or b is None else abs(a[0] - b[0])


def _ratio(top: float | None, bottom: float | None) -> float | None:
    # A gap under a few pixels means the joints overlap (a side view): no meaningful ratio.
    if top is None or bottom is None or bottom < 4.0:
        return None
    return top / bottom


_USED = ("left_shoulder", "right_shoulder", "left_hip", "right_hip", "left_knee", "right_knee",
         "left_ankle", "right_ankle")


def measure(pose: Pose, min_score: float = DEFAULT_MIN_SCORE) -> Frame:
    """Every squat measure of one pose."""
    return measure_points(pose.xy.tolist(), pose.score.tolist(), min_score)


def measure_points(xy: list, score: list, min_score: float = DEFAULT_MIN_SCORE) -> Frame:
    """:func:`measure` on plain floats (17 ``(x, y)`` and 17 scores), for the per-frame path."""
    joints: dict[str, Point] = {name: tuple(xy[KP[name]]) for name in _USED if score[KP[name]] >= min_score}
    left_hip, right_hip = joints.get("left_hip"), joints.get("right_hip")
    left_ankle, right_ankle = joints.get("left_ankle"), joints.get("right_ankle")
    hip_center = tilt = medial_left = hip_over_feet = None
    if left_hip is not None and right_hip is not None:
        hip_center = ((left_hip[0] + right_hip[0]) / 2, (left_hip[1] + right_hip[1]) / 2)
        dx = left_hip[0] - right_hip[0]
        if dx != 0:
            # The midline lies toward the other hip: worked out, not assumed, so a mirrored video or a lifter
            # with their back to the camera is measured with the right sign.
            medial_left = -math.copysign(1.0, dx)
            tilt = math.degrees(math.atan2(right_hip[1] - left_hip[1], abs(dx))) * (1 if dx > 0 else -1)
            if left_ankle is not None and right_ankle is not None:
                hip_over_feet = (hip_center[0] - (left_ankle[0] + right_ankle[0]) / 2) * -medial_left
    shoulders = [joints[name][1] for name in ("left_shoulder", "right_shoulder") if name in joints]
    knee_gap = _gap(joints.get("left_knee"), joints.get("right_knee"))
    ankle_gap = _gap(left_ankle, right_ankle)
    hip_gap = _gap(left_hip, right_hip)
    shoulder_gap = _gap(joints.get("left_shoulder"), joints.get("right_shoulder"))
    return Frame(left=_leg(joints, score, "left", medial_left),
                 right=_leg(joints, score, "right", None if medial_left is None else -medial_left),
                 hip_center=hip_center,
                 knee_ankle_ratio=_ratio(knee_gap, ankle_gap), knee_hip_ratio=_ratio(knee_gap, hip_gap),
                 stance_ratio=_ratio(ankle_gap, shoulder_gap), hip_tilt_deg=tilt,
                 hip_width_px=hip_gap,
                 shoulder_y=sum(shoulders) / len(shoulders) if shoulders else None,
                 hip_over_feet_px=hip_over_feet)
