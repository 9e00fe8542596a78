"""Drawing the skeleton and the knee lines on a recording, so a coach can check a verdict by eye.

Only ``rackwatch analyze --overlay`` and ``--rep-frames`` use this; on the rack no frame is ever drawn on or sent
anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .events import Event, RepEvent
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

    def add(self, t: float, image: np.ndarray, pose: Pose, new_events: list[Event]) -> None:
        import cv2

        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"Cannot write a video to {self.path}.")
        for event in new_events:
            if isinstance(event, RepEvent):
                self._banner, self._banner_colour = rep_banner(event)
                self._banner_until = t + 2.0
        banner = self._banner if t <= self._banner_until else ""
        canvas = draw(image, pose, self.min_score, banner, self._banner_colour)
        self._writer.write(canvas)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def draw(image: np.ndarray, pose: Pose, min_score: float, banner: str = "",
         banner_colour: tuple[int, int, int] = _COLOURS["clean"]) -> np.ndarray:
    """A copy of ``image`` with the skeleton, the legs, each ankle's plumb line and a line of text."""
    import cv2

    canvas = image.copy()
    scale = max(1, image.shape[0] // 400)
    ok = pose.score >= min_score
    for a, b in _BONES:
        if ok[KP[a]] and ok[KP[b]]:
            cv2.line(canvas, _pt(pose, a), _pt(pose, b), (220, 220, 220), scale)
    for side, (hip, knee, ankle) in _LEGS.items():
        if ok[KP[hip]] and ok[KP[knee]] and ok[KP[ankle]]:
            cv2.line(canvas, _pt(pose, hip), _pt(pose, knee), (255, 160, 0), 2 * scale)
            cv2.line(canvas, _pt(pose, knee), _pt(pose, ankle), (255, 160, 0), 2 * scale)
            # The plumb line from the ankle: a knee left of it or right of it is what the verdict is about.
            ax, ay = _pt(pose, ankle)
            cv2.line(canvas, (ax, ay), (ax, _pt(pose, knee)[1]), (0, 255, 255), scale)
    for i in np.flatnonzero(ok):
        cv2.circle(canvas, (int(pose.xy[i, 0]), int(pose.xy[i, 1])), 3 * scale, (0, 0, 255), -1)
    if banner:
        cv2.putText(canvas, banner, (10, 30 * scale), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, banner_colour, 2 * scale)
    return canvas


def rep_banner(event: RepEvent) -> tuple[str, tuple[int, int, int]]:
    """The line of text for a rep event, and its colour."""
    legs = ", ".join(f"{side} {v.severity} ({v.cave:+.2f})" for side, v in
                     (("left", event.valgus.left), ("right", event.valgus.right)) if v)
    return f"rep {event.rep}: {event.verdict}  {legs}", _COLOURS.get(event.verdict, _COLOURS["unjudged"])


def write_rep_frames(video: str | Path, folder: str | Path, reps: list[RepEvent], poses: dict[int, Pose], fps: float,
                     min_score: float) -> list[Path]:
    """A PNG per rep of the frame where its knees were worst (the bottom for a rep not judged)."""
    import cv2

    from .camera import open_source

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[int, RepEvent] = {}
    for rep in reps:
        legs = rep.valgus.judged()
        t = max(legs, key=lambda v: v.cave).t_peak if legs else rep.t_bottom
        wanted[round(t * fps)] = rep
    written = []
    source = open_source(video)
    try:
        for frame in source.frames():
            rep = wanted.get(frame.index)
            if rep is not None and frame.index in poses:
                path = folder / f"rep-{rep.rep:02d}.png"
                cv2.imwrite(str(path), draw(frame.image, poses[frame.index], min_score, *rep_banner(rep)))
                written.append(path)
    finally:
        source.close()
    return written


def _pt(pose: Pose, name: str) -> tuple[int, int]:
    x, y = pose.xy[KP[name]]
    return int(x), int(y)
