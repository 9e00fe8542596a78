"""Analysing a recording end to end: frames → poses → events, every frame, in order.

Used by ``rackwatch analyze`` and ``rackwatch eval``. The same file always gives the same events (apart from
their ids and wall-clock times).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .analysis import AnalysisSettings, LiftAnalyzer
from .camera import Distant, Frame, FrameSource, Prefetched, Scaled, SourceError, Thinned, open_source
from .events import Event, NotCountedEvent, RepEvent, SetEvent
from .load import LifterSettings
from .pose import Interpreter, Pose, PoseEstimator


class NobodyThere(SourceError):
    """The recording was read, but nobody was ever seen in it."""


@dataclass
class RecordingResult:
    events: list[Event]
    frames: int
    fps: float
    """The rate the frames were judged at: the recording's own, or the rate it was thinned to."""
    recorded_fps: float
    """The recording's own rate, which its frames' ``index`` counts in; the same as ``fps`` unless thinned."""

    @property
    def reps(self) -> list[RepEvent]:
        return [e for e in self.events if isinstance(e, RepEvent)]

    @property
    def not_counted(self) -> list[NotCountedEvent]:
        """Each movement that looked like a rep but was not counted (a jump, a lunge, ...), with why."""
        return [e for e in self.events if isinstance(e, NotCountedEvent)]

    @property
    def sets(self) -> list[SetEvent]:
        return [e for e in self.events if isinstance(e, SetEvent)]


def analyze_recording(path: str | Path, interpreter: Interpreter, *, lifter: LifterSettings = LifterSettings(),
                      settings: AnalysisSettings = AnalysisSettings(), rack: str | None = None,
                      camera_size: int | None = None, fps: float | None = None, distance: float | None = None,
                      on_start: Callable[[FrameSource], None] | None = None,
                      on_frame: Callable[[Frame, Pose, list[Event]], None] | None = None) -> RecordingResult:
    """Run the whole pipeline over one recording.

    ``on_start`` (optional) sees the opened source before the first frame (its ``fps`` and ``frame_count``), and
    ``on_frame`` every frame with its pose and the events it caused: the progress bar and the overlay writer hang
    off them. ``camera_size`` scales frames down to that long side first, as the Pi camera would deliver them;
    ``fps`` thins the recording to that many frames a second first, as a rack that slow would see it
    (:class:`~rackwatch.camera.Thinned`; at or above the recording's own rate every frame is kept);
    ``distance`` shrinks the lifter as a camera that many times further back would see them
    (:class:`~rackwatch.camera.Distant`).
    """
    source = open_source(path)
    recorded_fps = source.fps
    if fps is not None:
        source = Thinned(source, fps)
    if distance is not None:
        source = Distant(source, distance)
    source = Prefetched(Scaled(source, camera_size) if camera_size else source)
    if on_start:
        on_start(source)
    estimator = PoseEstimator(interpreter, settings.min_score, bgr_frames=source.channels == "bgr")
    analyzer = LiftAnalyzer(rack=rack, lifter=lifter, settings=settings)
    out: list[Event] = []
    seen = frames = 0
    try:
        for frame in source.frames():
            pose = estimator.estimate(frame.image)
            new = analyzer.update(frame.t, pose, frame.image.shape[0])
            out += new
            frames += 1
            seen += analyzer.lifter_seen
            if on_frame:
                on_frame(frame, pose, new)
    finally:
        source.close()
    out += analyzer.finish()
    if seen == 0:
        raise NobodyThere(f"Nobody was found in {path}: the lifter's hips, knees and ankles must be in view. "
                          "Check that the recording shows a person from the front, head to feet.")
    return RecordingResult(events=out, frames=frames, fps=source.fps, recorded_fps=recorded_fps)
