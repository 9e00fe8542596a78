"""Drawing the skeleton and the knee lines on a recording, so a coach can check a verdict by eye.

Only ``rackwatch analyze --overlay`` uses this; on the rack no frame is ever drawn on or sent anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .pose import KP, Pose

_BONES = [("left_shoulder", "right_shoulder"), ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
          ("left_hip", "right_hip"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
          ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")]
_LEGS = {"left": ("left_hip", "left_knee", "left_ankle"), "right": ("right_hip", "right_knee", "right_ankle")}
_COLOURS = {"clean": (80, 200, 80), "note": (0, 190, 255), "cave": (60, 60, 230), "unjudged": (200, 200, 200)}


class OverlayWriter:
    """Writes an annotated copy of a recording, frame by frame."""

    def __init__(self, path: str | Path, fps: float, min_score: float):
        self.path = Path(path)
        self.fps = fps
        self.min_score = min_score
        self._writer = None
        self._banner = ""
        self._banner_colour = _COLOURS["clean"]
        self._banner_until = -1.0

    def add(self, t: float, image: np.ndarray, pose: Pose, new_events: list[dict]) -> None:
        import cv2

        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"Cannot write a video to {self.path}.")
        for event in new_events:
            if event["type"] == "rep":
                legs = ", ".join(f"{leg} {v['severity']} ({v['cave']:+.2f})"
                                 for leg, v in event["valgus"].items() if v)
                self._banner = f"rep {event['rep']}: {event['verdict']}  {legs}"
                self._banner_colour = _COLOURS.get(event["verdict"], _COLOURS["unjudged"])
                self._banner_until = t + 2.0
        canvas = image.copy()
        scale = max(1, image.shape[0] // 400)
        ok = pose.score >= self.min_score
        for a, b in _BONES:
            if ok[KP[a]] and ok[KP[b]]:
                cv2.line(canvas, _pt(pose, a), _pt(pose, b), (220, 220, 220), scale)
        for side, (hip, knee, ankle) in _LEGS.items():
            if ok[KP[hip]] and ok[KP[knee]] and ok[KP[ankle]]:
                cv2.line(canvas, _pt(pose, hip), _pt(pose, knee), (255, 160, 0), 2 * scale)
                cv2.line(canvas, _pt(pose, knee), _pt(pose, ankle), (255, 160, 0), 2 * scale)
                # The plumb line from the ankle: a knee left of it or right of it is what the verdict is about.
                ax, ay = _pt(pose, ankle)
                kx, ky = _pt(pose, knee)
                cv2.line(canvas, (ax, ay), (ax, ky), (0, 255, 255), scale)
        for i in np.flatnonzero(ok):
            cv2.circle(canvas, (int(pose.xy[i, 0]), int(pose.xy[i, 1])), 3 * scale, (0, 0, 255), -1)
        if t <= self._banner_until:
            cv2.putText(canvas, self._banner, (10, 30 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale,
                        self._banner_colour, 2 * scale)
        self._writer.write(canvas)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def _pt(pose: Pose, name: str) -> tuple[int, int]:
    x, y = pose.xy[KP[name]]
    return int(x), int(y)
