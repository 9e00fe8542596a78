"""Keypoint jitter smoothing with the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A one-euro filter is a low-pass filter whose cut-off rises with speed: a joint that holds still is smoothed hard
(no jitter on a standing lifter's knees), a joint that moves fast is followed closely (no lag on a quick ascent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .pose import DEFAULT_MIN_SCORE, Pose


@dataclass(frozen=True)
class OneEuroSettings:
    min_cutoff_hz: float = 1.5
    """Cut-off when still: lower removes more jitter but adds lag."""
    beta: float = 0.5
    """How fast the cut-off rises with speed (per unit of speed in body-heights per second)."""
    derivative_cutoff_hz: float = 1.0


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class PoseSmoother:
    """Smooths the 17 keypoints of successive poses of one lifter.

    Speeds are measured in units of ``scale`` pixels (pass the frame height) so the same settings work at any
    resolution. A joint below ``min_score`` keeps its low score and does not disturb its filter; a joint that
    reappears after a gap restarts from where it is seen.
    """

    def __init__(self, settings: OneEuroSettings = OneEuroSettings(), min_score: float = DEFAULT_MIN_SCORE):
        self.settings = settings
        self.min_score = min_score
        self.reset()

    def reset(self) -> None:
        self._xy: np.ndarray | None = None
        self._speed = np.zeros((17, 2))
        self._t: float | None = None
        self._seen = np.zeros(17, dtype=bool)

    def smooth(self, t: float, pose: Pose, scale: float) -> Pose:
        seen = pose.score >= self.min_score
        if self._xy is None or self._t is None or t <= self._t:
            self._xy = pose.xy.astype(np.float64)
            self._speed[:] = 0.0
            self._t, self._seen = t, seen
            return pose
        dt = t - self._t
        self._t = t
        s = self.settings
        fresh = seen & ~self._seen  # reappeared joints start over at their new place
        self._xy[fresh] = pose.xy[fresh]
        self._speed[fresh] = 0.0
        track = seen & self._seen
        raw_speed = (pose.xy[track] - self._xy[track]) / dt / scale
        a_d = _alpha(s.derivative_cutoff_hz, dt)
        self._speed[track] = a_d * raw_speed + (1 - a_d) * self._speed[track]
        cutoff = s.min_cutoff_hz + s.beta * np.abs(self._speed[track])
        tau = 1.0 / (2 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._xy[track] = a * pose.xy[track] + (1 - a) * self._xy[track]
        self._seen = seen
        xy = np.where(seen[:, None], self._xy, pose.xy).astype(np.float32)
        return Pose(xy=xy, score=pose.score)
