"""Frame sources: the Pi camera, a video file, or a folder of images.

Every source yields :class:`Frame` objects in order. Images are H×W×3 ``uint8`` arrays, and a source says their
channel order in ``channels``: ``"bgr"`` for recordings (what OpenCV decodes), ``"rgb"`` for the Pi camera (its
ISP delivers the model's own order for free). No source converts whole frames: for BGR frames the pose stage
swaps channels on the small model input instead.

A recording is read frame by frame, every frame, so the same file always gives the same reps. A live camera
instead always hands over the newest frame and drops the stale ones (counted in :attr:`LiveCamera.dropped`),
so the rack never falls behind real time.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np
from pydantic import Field

from .settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
SPEEDS = ("max", "realtime")
CAMERA_SIZE = (320, 240)
"""What the Pi camera delivers unless the ``[camera]`` table says otherwise: see :class:`PiCamera`."""
CAMERA_FPS = 15.0


class CameraSettings(Settings):
    """The ``[camera]`` table."""

    width: int = Field(CAMERA_SIZE[0], ge=64, le=4096)
    height: int = Field(CAMERA_SIZE[1], ge=64, le=4096)
    """The frame size the Pi camera's ISP delivers: scaled in hardware, so it costs the CPU nothing. The model
    sees 192×192 pixels of the lifter; 320×240 gives it that when the lifter fills at least two thirds of the
    frame's height. Raise it (e.g. 640×480) for a camera further away: see docs/performance.md."""
    fps: float = Field(CAMERA_FPS, gt=0, le=120)
    """The most frames a second to take. At start the model is timed, and the camera is capped lower if the
    model cannot keep up (about 9 fps on a Pi 4, 20 on a Pi 5: see docs/performance.md)."""
    idle_after_s: float = Field(10.0, ge=1, le=3600)
    """Idle mode: when nobody has been seen at the rack for this many seconds, the model runs only ``idle_fps``
    times a second, so a Pi that waits all day runs cool. The first frame that sees a lifter brings back the
    full rate at once. Only live frames (the camera, ``--speed realtime``) idle; a recording read at full speed
    is judged frame by frame."""
    idle_fps: float = Field(2.0, gt=0, le=120)
    """How many frames a second the model looks at while the rack is idle (one or two are enough to notice a
    lifter stepping in); at or above ``fps`` idle mode changes nothing."""


class SourceError(RuntimeError):
    """A frame source cannot be opened or read; the message says what to do."""


@dataclass(frozen=True)
class Frame:
    index: int
    t: float  # seconds since the source started
    image: np.ndarray


class FrameSource(Protocol):
    """What every frame source has: the service, ``analyze`` and the bench read any of them the same way.

    ``fps``
        frames per second the source delivers (a recording's own rate; the camera's configured rate).
    ``channels``
        ``"bgr"`` or ``"rgb"``: the order of the three channels of every image.
    ``frame_count``
        how many frames a recording holds, as its container claims (what decodes may be fewer); 0 for a live
        camera, which has no end.
    ``dropped``
        frames the pipeline had no time for and that were skipped (only a :class:`LiveCamera` drops any); the
        health events report it.
    ``frames()``
        the frames in order, once; ``close()`` releases the file or the camera (safe half-way, safe twice).
    """

    fps: float
    channels: str
    frame_count: int
    dropped: int

    def frames(self) -> Iterator[Frame]: ...
    def close(self) -> None: ...


class VideoFile:
    """Every frame of a video file, decoded by OpenCV (FFmpeg), upright.

    Phone videos store a rotation in their metadata; OpenCV applies it, so portrait clips come out portrait.
    Timestamps are ``index / fps``, which makes the analysis of a file repeatable.
    """

    channels = "bgr"
    dropped = 0

    def __init__(self, path: str | Path):
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"No video at {self.path}. Check the path.")
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            raise SourceError(f"{self.path} could not be opened as a video. Is it a complete, playable video "
                              "file (mp4, mov, mkv, avi)?")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else 30.0
        self.frame_count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            ok, image = self._capture.read()
            if not ok:
                break
            yield Frame(index, index / self.fps, image)
            index += 1
        if index == 0:
            raise SourceError(f"{self.path} holds no frame that can be decoded. The file may be damaged or "
                              "truncated; try playing it, or export it again.")

    def close(self) -> None:
        self._capture.release()


class ImageFolder:
    """The images of a folder in name order, as if filmed at ``fps``."""

    channels = "bgr"
    dropped = 0

    def __init__(self, path: str | Path, fps: float = 30.0):
        self.path = Path(path)
        self.fps = fps
        self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"{self.path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
        self.frame_count = len(self._files)

    def frames(self) -> Iterator[Frame]:
        import cv2

        for index, file in enumerate(self._files):
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is None:
                raise SourceError(f"{file} is not a readable image.")
            yield Frame(index, index / self.fps, image)

    def close(self) -> None:
        pass


class PiCamera:
    """The Raspberry Pi camera through Picamera2, delivering small frames straight from the ISP.

    The ISP scales and converts in hardware, on a Pi 4 as on a Pi 5, so asking it for a small main stream in
    the model's channel order costs the CPU nothing: no decoding, no scaling, no colour conversion. (Picamera2
    names formats by their 32-bit word: its ``BGR888`` holds R, G, B in memory.) The default 320×240 already
    gives the model more pixels than its 192×192 input when the lifter fills most of the frame's height; see
    docs/performance.md. The frame rate is capped at what the model can use, so the camera does not make frames
    that would only be dropped.
    """

    channels = "rgb"
    frame_count = 0   # live: no end
    dropped = 0       # every frame is handed on; LiveCamera, in front of it, drops the stale ones

    def __init__(self, size: tuple[int, int] = CAMERA_SIZE, fps: float = CAMERA_FPS):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("The Pi camera needs picamera2, which comes with Raspberry Pi OS "
                              "(sudo apt install python3-picamera2; create the venv with "
                              "--system-site-packages). On other machines use --source VIDEO.") from exc
        self.fps = fps
        self._camera = Picamera2()
        frame_us = int(1_000_000 / fps)
        config = self._camera.create_video_configuration(
            main={"size": size, "format": "BGR888"}, buffer_count=3,
            controls={"FrameDurationLimits": (frame_us, frame_us)})
        self._camera.configure(config)
        self._camera.start()
        self._start = time.monotonic()

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            image = self._camera.capture_array("main")
            yield Frame(index, time.monotonic() - self._start, image)
            index += 1

    def close(self) -> None:
        self._camera.stop()
        self._camera.close()


def open_source(spec: str | Path, fps: float = 30.0) -> FrameSource:
    """A frame source from what the user typed: ``picamera``, a video file or a folder of images."""
    if str(spec) == "picamera":
        return PiCamera()
    path = Path(spec)
    if path.is_dir():
        return ImageFolder(path, fps)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise SourceError(f"{path} is a single image; give a video or a folder of images.")
    return VideoFile(path)


class Reshaped:
    """Another source's frames, changed on the way through: the base of :class:`Scaled`, :class:`Distant` and
    :class:`Thinned`, which say how in :meth:`frames`."""

    def __init__(self, source: FrameSource):
        self.source = source
        self.fps = source.fps
        self.channels = source.channels
        self.frame_count = source.frame_count

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def close(self) -> None:
        self.source.close()


class Scaled(Reshaped):
    """Another source's frames scaled down so their long side is ``long_side`` pixels (never up).

    What the Pi camera's ISP does for free; on a recording it shows how rackwatch fares on the frames a rack
    would really see (``rackwatch eval --camera-size``).
    """

    def __init__(self, source: FrameSource, long_side: int):
        super().__init__(source)
        self.long_side = long_side

    def frames(self) -> Iterator[Frame]:
        import cv2

        for frame in self.source.frames():
            height, width = frame.image.shape[:2]
            scale = self.long_side / max(height, width)
            if scale < 1:
                size = (round(width * scale), round(height * scale))
                frame = Frame(frame.index, frame.t, cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA))
            yield frame


class Distant(Reshaped):
    """Another source's frames as a camera ``distance`` times further back would take them.

    Each frame is shrunk by ``distance`` and set on a plain grey background of its own size, standing on the
    floor line (the feet stay at the same share of the height, as they do when a camera backs away at the same
    height). The lifter then fills 1/``distance`` of the picture with 1/``distance`` of the pixels: how rackwatch
    fares on a lifter small in the frame (``rackwatch eval --distance``).
    """

    BACKGROUND = 110

    def __init__(self, source: FrameSource, distance: float):
        if not 1 <= distance <= 10:
            raise SourceError(f"A distance of {distance:g} makes no sense: use 1 (as filmed) to 10 times further.")
        super().__init__(source)
        self.distance = distance

    def frames(self) -> Iterator[Frame]:
        import cv2

        for frame in self.source.frames():
            height, width = frame.image.shape[:2]
            small = cv2.resize(frame.image, (max(1, round(width / self.distance)), max(1, round(height / self.distance))),
                               interpolation=cv2.INTER_AREA)
            canvas = np.full_like(frame.image, self.BACKGROUND)
            top = round((height - small.shape[0]) * 0.8)   # the floor line stays low in the picture
            left = (width - small.shape[1]) // 2
            canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
            yield Frame(frame.index, frame.t, canvas)


class Thinned(Reshaped):
    """Another source's frames thinned to ``fps`` a second, the way a slower camera would have taken them.

    A frame is kept whenever the recording's own time reaches the next tick of a ``1 / fps`` clock started at its
    first frame, so a 29.97 fps recording thinned to 10 keeps every third or fourth frame and exactly ten a
    second. Kept frames keep their recording's ``index`` and ``t``: what a rack at ``fps`` would have seen, at the
    moment it would have seen it (``rackwatch analyze|eval --fps``). A rate at or above the source's own keeps
    every frame; :attr:`fps` says the rate delivered.
    """

    def __init__(self, source: FrameSource, fps: float):
        if not fps > 0:
            raise SourceError(f"A frame rate to thin to must be above 0, not {fps:g}.")
        super().__init__(source)   # frame_count stays: the progress bar's total (frames keep their index)
        self.fps = min(fps, source.fps)
        self._period = 1.0 / fps

    def frames(self) -> Iterator[Frame]:
        start: float | None = None
        next_tick = 0
        for frame in self.source.frames():
            if start is None:
                start = frame.t
            # Ticks counted, not summed: no drift over a long recording. The small allowance keeps a frame that
            # falls on a tick (frame 3 of a 30 fps file at 10 fps: 3/30 s) from missing it by rounding.
            tick = math.floor((frame.t - start) / self._period + 1e-6)
            if tick >= next_tick:
                next_tick = tick + 1
                yield frame


class LiveCamera:
    """Serves the newest frame of a live source; frames the pipeline had no time for are dropped and counted."""

    def __init__(self, source: FrameSource):
        self.source = source
        self.fps = source.fps
        self.channels = source.channels
        self.frame_count = 0   # what it serves depends on the pace of its consumer
        self.dropped = 0
        self._newest: Frame | None = None
        self._ready = threading.Condition()
        self._stopped = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._capture, name="capture", daemon=True)
        self._thread.start()

    def _capture(self) -> None:
        try:
            for frame in self.source.frames():
                with self._ready:
                    if self._newest is not None:
                        self.dropped += 1
                    self._newest = frame
                    self._ready.notify()
                if self._stopped:
                    break
        except BaseException as exc:  # handed to the consumer: a failing camera must not look like an ending
            self._failure = exc
        with self._ready:
            self._ready.notify()

    def frames(self) -> Iterator[Frame]:
        while not self._stopped:
            with self._ready:
                while self._newest is None and self._thread.is_alive():
                    self._ready.wait(0.5)
                frame, self._newest = self._newest, None
            if frame is None:
                if self._failure is not None:
                    raise self._failure
                return
            yield frame

    def close(self) -> None:
        self._stopped = True
        self.source.close()


class PacedSource:
    """A recording delivered at its own frame rate, the way a camera delivers frames."""

    dropped = 0   # a consumer too slow for the pace is LiveCamera's to handle: it is always put in front

    def __init__(self, source: FrameSource):
        self.source = source
        self.fps = source.fps
        self.channels = source.channels
        self.frame_count = source.frame_count
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        start = time.monotonic()
        try:
            for frame in self.source.frames():
                delay = start + frame.t - time.monotonic()
                if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                    return
                yield frame
        finally:
            # Released by the thread that reads it, never while a read is in progress.
            self.source.close()

    def close(self) -> None:
        self._stop.set()


class Prefetched:
    """Every frame of a recording, decoded ahead in a thread so decoding overlaps inference; nothing dropped.

    It can be stopped half-way: :meth:`close` waits for the decoding thread to let go of the file before
    releasing it.
    """

    dropped = 0

    def __init__(self, source: FrameSource, depth: int = 4):
        self.source = source
        self.fps = source.fps
        self.channels = source.channels
        self.frame_count = source.frame_count
        self._slots: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._done = object()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        try:
            for frame in self.source.frames():
                if not self._put(frame):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            self._put(exc)
        self._put(self._done)

    def frames(self) -> Iterator[Frame]:
        self._thread = threading.Thread(target=self._decode, name="rackwatch-decode", daemon=True)
        self._thread.start()
        while (item := self._slots.get()) is not self._done:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.source.close()


def open_frames(spec: str, speed: str = "max", camera_size: tuple[int, int] = CAMERA_SIZE,
                camera_fps: float = CAMERA_FPS) -> FrameSource:
    """The service's frame source for ``spec`` (``picamera``, a video file or a folder of images).

    The camera is always live (newest frame, drops counted); a recording is read every frame as fast as
    possible (``speed="max"``) or played at its own frame rate like a camera (``speed="realtime"``).
    """
    if speed not in SPEEDS:
        raise SourceError(f"speed must be one of {', '.join(SPEEDS)}, not {speed!r}")
    if str(spec) == "picamera":
        return LiveCamera(PiCamera(camera_size, camera_fps))
    source = open_source(spec)
    if speed == "realtime":
        return LiveCamera(PacedSource(source))
    return Prefetched(source)
