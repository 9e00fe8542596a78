"""Squat geometry of one frame: plain numbers from keypoints, with no notion of time or of the lifter's history.

The lifter faces the camera, so their left side is on the right of the image. "Medial" means toward the lifter's
midline; every signed measure here is positive when a knee moves medially (valgus) and negative when it moves
out. Lengths are in pixels; the rep tracker divides them by the lifter's own standing leg length, because at the
bottom of a squat, seen from the front, the thighs point at the camera and every current length shrinks.

A joint the model is not confident about is missing (``None``), and so is every measure that needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pose import DEFAULT_MIN_SCORE, Pose


@dataclass(frozen=True)
class Leg:
    """One leg's joints and valgus measures (pixels / degrees)."""

    hip: np.ndarray
    knee: np.ndarray
    ankle: np.ndarray
    fppa_deg: float
    """Frontal plane projection angle: 180° minus the hip-knee-ankle angle, signed (+ = knee medial)."""
    knee_medial_px: float
    """The knee's distance from the hip-ankle line, + toward the midline (medial knee displacement)."""
    knee_over_ankle_px: float
    """How far the knee sits medial of the ankle below it, horizontally (+ = inside the foot)."""
    hip_height_px: float
    """Ankle minus hip, vertically: shrinks as the lifter sinks."""


@dataclass(frozen=True)
class Frame:
    """The squat geometry of one frame; a leg is ``None`` when its hip, knee or ankle is missing."""

    left: Leg | None
    right: Leg | None
    hip_center: np.ndarray | None
    knee_ankle_ratio: float | None
    """Knee gap ÷ ankle gap: below 1 the knees are inside the feet."""
    knee_hip_ratio: float | None
    """Knee gap ÷ hip gap."""
    stance_ratio: float | None
    """Ankle gap ÷ shoulder gap."""
    hip_tilt_deg: float | None
    """Angle of the line through the hips, + when the lifter's left hip is higher in the image."""
    shoulder_width_px: float | None
    hip_width_px: float | None
    shoulder_y: float | None
    """Mean height of the visible shoulders in the image."""
    hip_over_feet_px: float | None
    """Hip centre's horizontal distance from the midpoint of the ankles, + toward the lifter's left."""

    def leg(self, side: str) -> Leg | None:
        return self.left if side == "left" else self.right


def _medial_sign(pose: Pose, side: str, min_score: float) -> float | None:
    """+1 when the lifter's midline lies toward +x from this leg, -1 when toward -x.

    Worked out from the hips rather than assumed, so a mirrored video or a lifter with their back to the
    camera is still measured with the right sign.
    """
    left, right = pose.point("left_hip", min_score), pose.point("right_hip", min_score)
    if left is None or right is None or left[0] == right[0]:
        return None
    toward_right_hip = math.copysign(1.0, float(right[0] - left[0]))
    return toward_right_hip if side == "left" else -toward_right_hip


def fppa(hip: np.ndarray, knee: np.ndarray, ankle: np.ndarray, medial: float) -> float:
    """The signed frontal plane projection angle in degrees (0 for a straight leg, + for a knee gone inward)."""
    thigh = knee - hip
    shank = ankle - knee
    # The turn from the thigh's direction to the shank's; with image y pointing down a knee pushed toward -x
    # turns the leg one way, toward +x the other: multiplying by the medial sign makes + mean valgus.
    cross = float(thigh[0] * shank[1] - thigh[1] * shank[0])
    dot = float(thigh @ shank)
    turn = math.degrees(math.atan2(cross, dot))
    return turn * medial


def _leg(pose: Pose, side: str, min_score: float) -> Leg | None:
    hip = pose.point(f"{side}_hip", min_score)
    knee = pose.point(f"{side}_knee", min_score)
    ankle = pose.point(f"{side}_ankle", min_score)
    medial = _medial_sign(pose, side, min_score)
    if hip is None or knee is None or ankle is None or medial is None:
        return None
    axis = ankle - hip
    length = float(np.hypot(*axis))
    if length < 1e-6:
        return None
    # Signed distance of the knee from the hip-ankle line: the line's normal pointing to +x is (-ay, ax)/len
    # when the ankle is below the hip; its x-component's sign tells medial from lateral.
    normal = np.array([axis[1], -axis[0]]) / length
    if normal[0] < 0:
        normal = -normal
    knee_offset = float((knee - hip) @ normal) * medial
    return Leg(hip=hip, knee=knee, ankle=ankle,
               fppa_deg=fppa(hip, knee, ankle, medial),
               knee_medial_px=knee_offset,
               knee_over_ankle_px=float(knee[0] - ankle[0]) * medial,
               hip_height_px=float(ankle[1] - hip[1]))


def _gap(pose: Pose, a: str, b: str, min_score: float) -> float | None:
    pa, pb = pose.point(a, min_score), pose.point(b, min_score)
    return None if pa is None or pb is None else abs(float(pa[0] - pb[0]))


def _ratio(top: float | None, bottom: float | None) -> float | None:
    # A gap under a few pixels means the joints overlap (a side view): no meaningful ratio.
    if top is None or bottom is None or bottom < 4.0:
        return None
    return top / bottom


def measure(pose: Pose, min_score: float = DEFAULT_MIN_SCORE) -> Frame:
    """Every squat measure of one pose."""
    left_hip, right_hip = pose.point("left_hip", min_score), pose.point("right_hip", min_score)
    hip_center = (left_hip + right_hip) / 2 if left_hip is not None and right_hip is not None else None
    tilt = None
    if hip_center is not None and left_hip[0] != right_hip[0]:
        dx, dy = float(left_hip[0] - right_hip[0]), float(right_hip[1] - left_hip[1])
        tilt = math.degrees(math.atan2(dy, abs(dx))) * (1 if dx > 0 else -1)
    knee_gap = _gap(pose, "left_knee", "right_knee", min_score)
    ankle_gap = _gap(pose, "left_ankle", "right_ankle", min_score)
    hip_gap = _gap(pose, "left_hip", "right_hip", min_score)
    shoulder_gap = _gap(pose, "left_shoulder", "right_shoulder", min_score)
    shoulders = [p for p in (pose.point("left_shoulder", min_score), pose.point("right_shoulder", min_score))
                 if p is not None]
    left_ankle, right_ankle = pose.point("left_ankle", min_score), pose.point("right_ankle", min_score)
    hip_over_feet = None
    if hip_center is not None and left_ankle is not None and right_ankle is not None:
        toward_left = -(_medial_sign(pose, "left", min_score) or 0.0)
        hip_over_feet = float(hip_center[0] - (left_ankle[0] + right_ankle[0]) / 2) * toward_left
    return Frame(left=_leg(pose, "left", min_score), right=_leg(pose, "right", min_score), hip_center=hip_center,
                 knee_ankle_ratio=_ratio(knee_gap, ankle_gap), knee_hip_ratio=_ratio(knee_gap, hip_gap),
                 stance_ratio=_ratio(ankle_gap, shoulder_gap), hip_tilt_deg=tilt,
                 shoulder_width_px=shoulder_gap, hip_width_px=hip_gap,
                 shoulder_y=float(np.mean([p[1] for p in shoulders])) if shoulders else None,
                 hip_over_feet_px=hip_over_feet)
