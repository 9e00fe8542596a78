"""Keypoint jitter smoothing with the One Euro filter (Casiez, Roussel & Vogel, CHI 2012).

A one-euro filter is a low-pass filter whose cut-off rises with speed: a joint that holds still is smoothed hard
(no jitter on a standing lifter's knees), a joint that moves fast is followed closely (no lag on a quick ascent).
"""

from __future__ import annotations

import math

from pydantic import Field

from .pose import DEFAULT_MIN_SCORE, KP
from .settings import Settings


class OneEuroSettings(Settings):
    """The filter's settings: the ``[analysis.smoothing]`` table of the config file."""

    min_cutoff_hz: float = Field(1.5, gt=0, le=100)
    """Cut-off when still: lower removes more jitter but adds lag."""
    beta: float = Field(0.5, ge=0, le=100)
    """How fast the cut-off rises with speed (per unit of speed in body-heights per second)."""
    derivative_cutoff_hz: float = Field(1.0, gt=0, le=100)


def _alpha(cutoff_hz: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt)


class PoseSmoother:
    """Smooths the joints the squat geometry uses (shoulders, hips, knees, ankles) over successive poses.

    Speeds are measured in units of ``scale`` pixels (pass the frame height) so the same settings work at any
    resolution. A joint below ``min_score`` keeps its low score and does not disturb its filter; a joint that
    reappears after a gap restarts from where it is seen. Other joints pass through untouched: nothing
    downstream reads them, and this runs for every frame on the Pi.
    """

    JOINTS = tuple(KP[name] for name in ("left_shoulder", "right_shoulder", "left_hip", "right_hip",
                                         "left_knee", "right_knee", "left_ankle", "right_ankle"))

    def __init__(self, settings: OneEuroSettings = OneEuroSettings(), min_score: float = DEFAULT_MIN_SCORE):
        self.settings = settings
        self.min_score = min_score
        self.reset()

    def reset(self) -> None:
        self._t: float | None = None
        # Per joint: [x, y, speed_x, speed_y], or None while the joint is not seen.
        self._state: dict[int, list[float] | None] = {j: None for j in self.JOINTS}

    def smooth(self, t: float, xy: list, score: list, scale: float) -> list:
        """The joints seen at time ``t``, smoothed: ``xy`` (17 ``[x, y]`` in plain floats, a pose's
        ``xy.tolist()``) is updated in place and returned."""
        s = self.settings
        dt = None if self._t is None or t <= self._t else t - self._t
        self._t = t
        if dt is not None:
            a_d = _alpha(s.derivative_cutoff_hz, dt)
            per_speed = 1.0 / (dt * scale)
            two_pi_dt = 2 * math.pi * dt
        for j in self.JOINTS:
            state = self._state[j]
            if score[j] < self.min_score:
                self._state[j] = None
                continue
            x, y = xy[j]
            if state is None or dt is None:
                self._state[j] = [x, y, 0.0, 0.0]
                continue
            px, py, vx, vy = state
            vx = a_d * (x - px) * per_speed + (1 - a_d) * vx
            vy = a_d * (y - py) * per_speed + (1 - a_d) * vy
            # _alpha() written out: this line runs sixteen times a frame.
            ax = 1.0 / (1.0 + 1.0 / (two_pi_dt * (s.min_cutoff_hz + s.beta * abs(vx))))
            ay = 1.0 / (1.0 + 1.0 / (two_pi_dt * (s.min_cutoff_hz + s.beta * abs(vy))))
            x, y = ax * x + (1 - ax) * px, ay * y + (1 - ay) * py
            self._state[j] = [x, y, vx, vy]
            xy[j] = [x, y]
        return xy
