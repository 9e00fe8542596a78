"""A squatting lifter in 3-D, seen through a camera from any direction around them: MoveNet's 17 keypoints as pixels.

The lifter's own axes, in metres: x toward their left, y up, z the way they face; the origin on the floor between
the ankles. The camera stands ``Camera.distance`` metres from the origin, its lens ``Camera.lens_height`` metres above
the floor, turned ``yaw`` degrees around the lifter toward their left (0: square in front, 90: at their left side,
180: behind, negative: toward their right), and looks at the standing hips. It is a pinhole camera: a body part
nearer the camera is larger.

A squat, as it moves the joints:

- the hips go down by ``depth`` of their standing height and back by ``hips_back`` times that drop;
- each knee stays where thigh and shank meet (their lengths do not change): on a clean rep it travels forward
  over the toes, which point ``turnout`` degrees outward, no further across the foot than it stood;
- on a caving rep it falls inward instead, until at the bottom it sits ``cave`` leg lengths nearer the midline
  than it stood (it turns about the hip–ankle line to get there, so the leg's lengths still hold);
- the torso leans forward up to ``lean`` degrees at the bottom.

What is not drawn: the model's errors where a leg hides behind the other or under the arms, clothing, a foot that
rolls, a lifter who shifts sideways or turns during a rep. Every joint gets the same score and independent noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from rackwatch.pose import KEYPOINT_NAMES, Pose

Vec = np.ndarray


@dataclass(frozen=True)
class Lifter:
    """A lifter's build and stance (metres, degrees) and how they squat."""

    shank: float = 0.45            # ankle to knee
    thigh: float = 0.45            # knee to hip
    ankle_height: float = 0.08
    hip_width: float = 0.24        # between the hip keypoints
    shoulder_width: float = 0.38
    torso: float = 0.52            # hips to shoulders
    stance: float = 0.38           # between the ankles
    turnout: float = 15.0          # each foot turned outward from straight ahead
    hips_back: float = 0.7         # the hips go back this many times as far as they go down
    lean: float = 40.0             # the torso's forward lean at the bottom

    @property
    def leg(self) -> float:
        """Standing leg length, hip to ankle (the knees never quite lock)."""
        return 0.99 * (self.shank + self.thigh)

    @property
    def standing(self) -> float:
        """How high the hips stand above the ankles."""
        return math.sqrt(self.leg ** 2 - ((self.stance - self.hip_width) / 2) ** 2)


@dataclass(frozen=True)
class Camera:
    yaw: float = 0.0               # degrees around the lifter, + toward their left
    distance: float = 3.5          # metres from the point between the ankles
    lens_height: float = 1.2       # metres, the lens above the floor: between hips and chest
    focal: float = 700.0           # pixels: a standing lifter of 1.75 m is about 320 px tall at 3.5 m
    width: int = 640               # the picture's size, in pixels
    height_px: int = 480


def _cross(a: Vec, b: Vec) -> Vec:
    # (np.cross is slow on single vectors, and this runs for every joint of every frame)
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _knee(hip: Vec, ankle: Vec, thigh: float, shank: float, toward: Vec,
          plane: tuple[Vec, float] | None = None) -> Vec:
    """Where the knee is: of the points ``thigh`` from the hip and ``shank`` from the ankle (a circle about the
    hip–ankle line), the one furthest toward ``toward``; or, given a ``plane`` (``normal · p = offset``), the one
    on it nearest that (where the plane misses the circle, the point of the circle nearest the plane)."""
    axis = hip - ankle
    span = float(np.linalg.norm(axis))
    axis /= span
    along = (shank ** 2 - thigh ** 2 + span ** 2) / (2 * span)      # from the ankle, along the axis
    centre = ankle + along * axis
    radius = math.sqrt(max(shank ** 2 - along ** 2, 0.0))
    e1 = toward - np.dot(toward, axis) * axis                       # forward, square to the axis
    e1 /= np.linalg.norm(e1)
    e2 = _cross(axis, e1)
    if plane is None:
        return centre + radius * e1
    # normal · (centre + radius (cos phi e1 + sin phi e2)) = offset: the solution nearest phi = 0.
    normal, offset = plane
    a, b = radius * np.dot(normal, e1), radius * np.dot(normal, e2)
    amplitude = math.hypot(a, b)
    if amplitude < 1e-9:
        return centre + radius * e1
    ratio = min(max((offset - np.dot(normal, centre)) / amplitude, -1.0), 1.0)
    base, spread = math.atan2(b, a), math.acos(ratio)
    phi = min((base + spread, base - spread), key=lambda p: abs(math.remainder(p, 2 * math.pi)))
    return centre + radius * (math.cos(phi) * e1 + math.sin(phi) * e2)


@functools.lru_cache(maxsize=64)
def _standing_knee(lifter: Lifter, side: str) -> Vec:
    sign = 1.0 if side == "left" else -1.0
    turn = math.radians(lifter.turnout)
    return _knee(np.array([sign * lifter.hip_width / 2, lifter.ankle_height + lifter.standing, 0.0]),
                 np.array([sign * lifter.stance / 2, lifter.ankle_height, 0.0]), lifter.thigh, lifter.shank,
                 np.array([sign * math.sin(turn), 0.0, math.cos(turn)]))


def joints(lifter: Lifter, depth: float = 0.0, cave: float = 0.0, progress: float | None = None) -> dict[str, Vec]:
    """The 17 keypoints in 3-D at ``depth`` (share of standing hip height sunk). ``cave`` (leg lengths) is how far
    each knee is inside its standing place at the bottom; ``progress`` (0..1, default ``depth`` over a 0.45 deep
    rep) how much of it is there now."""
    L = lifter
    standing = L.standing
    drop = depth * standing
    progress = min(depth / 0.45, 1.0) if progress is None else progress
    hip_y = L.ankle_height + standing - drop
    hip_z = -L.hips_back * drop
    out: dict[str, Vec] = {}
    for side, sign in (("left", 1.0), ("right", -1.0)):
        ankle = np.array([sign * L.stance / 2, L.ankle_height, 0.0])
        hip = np.array([sign * L.hip_width / 2, hip_y, hip_z])
        turn = math.radians(L.turnout)
        toes = np.array([sign * math.sin(turn), 0.0, math.cos(turn)])
        across = np.array([math.cos(turn), 0.0, -sign * math.sin(turn)])   # level, square to the toes
        stood = _standing_knee(L, side)
        if cave:   # inward along x, from where the knee stood
            plane = np.array([1.0, 0.0, 0.0]), stood[0] - sign * cave * L.leg * progress
        else:      # over the toes: forward along the foot, no further across it than it stood
            plane = across, float(np.dot(across, stood))
        out[f"{side}_ankle"], out[f"{side}_hip"] = ankle, hip
        out[f"{side}_knee"] = _knee(hip, ankle, L.thigh, L.shank, toes, plane)
        lean = math.radians(L.lean * progress)
        shoulder = hip + L.torso * np.array([0.0, math.cos(lean), math.sin(lean)])
        shoulder[0] = sign * L.shoulder_width / 2
        out[f"{side}_shoulder"] = shoulder
        # Hands on a bar across the upper back: elbows back and down, wrists beside the shoulders.
        out[f"{side}_elbow"] = shoulder + np.array([sign * 0.12, -0.15, -0.15])
        out[f"{side}_wrist"] = shoulder + np.array([sign * 0.15, 0.05, -0.1])
        head = shoulder + np.array([-sign * L.shoulder_width / 2, 0.0, 0.0]) + 0.2 * np.array(
            [0.0, math.cos(lean), math.sin(lean)])
        out[f"{side}_ear"] = head + np.array([sign * 0.08, 0.0, 0.0])
        out[f"{side}_eye"] = head + np.array([sign * 0.035, 0.02, 0.09])
    out["nose"] = (out["left_eye"] + out["right_eye"]) / 2 + np.array([0.0, -0.03, 0.03])
    return out


@functools.lru_cache(maxsize=64)
def _lens(camera: Camera) -> tuple[Vec, Vec, Vec, Vec]:
    """Where the camera is, and its forward, right and up directions: it looks at the standing hips."""
    yaw = math.radians(camera.yaw)
    eye = np.array([camera.distance * math.sin(yaw), camera.lens_height, camera.distance * math.cos(yaw)])
    forward = np.array([0.0, 0.95, 0.0]) - eye
    forward /= np.linalg.norm(forward)
    right = _cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    return eye, forward, right, _cross(right, forward)


def project(points: dict[str, Vec], camera: Camera) -> np.ndarray:
    """The points as seen by the camera: a (17, 2) array of pixels in KP order."""
    eye, forward, right, up = _lens(camera)
    d = np.array([points[name] for name in KEYPOINT_NAMES]) - eye
    z = d @ forward
    x = camera.width / 2 + camera.focal * (d @ right) / z
    y = camera.height_px / 2 - camera.focal * (d @ up) / z
    return np.stack([x, y], axis=1).astype(np.float32)


def _ease(u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return (1 - math.cos(math.pi * u)) / 2


def recording(lifter: Lifter, camera: Camera, fps: float, *, reps: int = 3, depth: float = 0.45,
              cave: float = 0.0, down_s: float = 1.1, up_s: float = 0.9, rest_s: float = 1.2, still_s: float = 1.5,
              score: float = 0.8, noise_px: float = 1.5, seed: int = 0) -> list[Pose]:
    """A set as the camera sees it: still for ``still_s``, then ``reps`` squats to ``depth`` (``cave`` on each),
    standing ``rest_s`` between and after. ``noise_px`` is the model's jitter on a 300 px tall lifter, scaled
    to the lifter's size in the picture; every joint scored ``score``."""
    rep_s = down_s + up_s

    def depth_at(t: float) -> float:
        t -= still_s
        if t < 0:
            return 0.0
        n, u = divmod(t, rep_s + rest_s)
        if n >= reps or u >= rep_s:
            return 0.0
        return depth * (_ease(u / down_s) if u < down_s else _ease(1 - (u - down_s) / up_s))

    seconds = still_s + reps * (rep_s + rest_s)
    rng = np.random.default_rng(seed)
    tall = project(joints(lifter), camera)
    jitter = noise_px * float(tall[:, 1].max() - tall[:, 1].min()) / 300
    poses = []
    for i in range(int(round(seconds * fps))):
        d = depth_at(i / fps)
        xy = project(joints(lifter, d, cave, progress=d / depth), camera)
        xy += rng.normal(0, jitter, xy.shape).astype(np.float32)
        poses.append(Pose(xy=xy, score=np.full(17, score, np.float32)))
    return poses


__all__ = ["Camera", "Lifter", "joints", "project", "recording"]
