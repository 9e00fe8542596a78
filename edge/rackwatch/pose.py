"""Body keypoints from a frame: MoveNet SinglePose Lightning (int8) on LiteRT, with a crop that follows the lifter.

MoveNet sees a 192×192 square. Squeezing a whole 1080p frame into it leaves the lifter a few dozen pixels tall,
so, as in TensorFlow's Raspberry Pi example, each frame is cropped around where the lifter was in the previous
frame. The crop is sized from the torso *and* the limbs (a wide stance or raised arms are never clipped), and
falls back to the whole frame whenever the lifter is lost, so that someone who walks off and comes back is
found again.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol

import numpy as np
from pydantic import Field

from .settings import Settings

KEYPOINT_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
INPUT_SIZE = 192

# A joint scored below this is treated as missing, never as a position (MoveNet's own examples use 0.2-0.3).
DEFAULT_MIN_SCORE = 0.3


class ModelSettings(Settings):
    """The ``[model]`` table: which pose model runs, and how."""

    path: str = ""
    """Empty: $RACKWATCH_MODEL, then the project's models/ folder."""
    threads: int = Field(0, ge=0, le=64)
    """0: every core."""
    runtime: Literal["", "ai_edge_litert", "tflite_runtime"] = ""
    """Empty: ai_edge_litert if installed, else tflite_runtime."""


class PoseError(RuntimeError):
    """The model could not be loaded or run; the message says what to do."""


@dataclass(frozen=True)
class Pose:
    """17 COCO keypoints in image pixels: ``xy[i] = (x, y)``, ``score[i]`` in 0..1."""

    xy: np.ndarray
    score: np.ndarray

    def visible(self, min_score: float = DEFAULT_MIN_SCORE) -> np.ndarray:
        return self.score >= min_score

    def point(self, name: str, min_score: float = DEFAULT_MIN_SCORE) -> np.ndarray | None:
        """The joint's (x, y), or ``None`` when the model is not confident about it."""
        i = KP[name]
        return self.xy[i] if self.score[i] >= min_score else None


@dataclass(frozen=True)
class Crop:
    """A square region of the frame, in pixels; it may reach past the edges (the outside is black)."""

    x0: float
    y0: float
    size: float

    @classmethod
    def whole(cls, width: int, height: int) -> "Crop":
        """The whole frame, padded to a square about its centre."""
        size = float(max(width, height))
        return cls((width - size) / 2, (height - size) / 2, size)


class Interpreter(Protocol):
    """The seam over the TFLite interpreter: the part of its API this module uses."""

    def allocate_tensors(self) -> None: ...
    def get_input_details(self) -> list[dict]: ...
    def get_output_details(self) -> list[dict]: ...
    def tensor(self, index: int) -> Callable[[], np.ndarray]: ...
    def invoke(self) -> None: ...


def available_runtimes() -> list[str]:
    """The LiteRT runtimes importable here, preferred first."""
    found = []
    for name in ("ai_edge_litert", "tflite_runtime"):
        try:
            __import__(f"{name}.interpreter")
            found.append(name)
        except ImportError:
            pass
    return found


def load_interpreter(model_path: Path, threads: int | None = None, runtime: str | None = None) -> Interpreter:
    """A ready interpreter for ``model_path``: ``ai_edge_litert`` if installed, else ``tflite_runtime``.

    ``threads`` defaults to every core: MoveNet's convolutions scale well to the Pi's four.
    """
    runtimes = [runtime] if runtime else available_runtimes()
    if not runtimes:
        raise PoseError("No TFLite runtime is installed. Install one with: pip install ai-edge-litert "
                        "(or, on older systems, pip install tflite-runtime).")
    name = runtimes[0]
    try:
        module = __import__(f"{name}.interpreter", fromlist=["Interpreter"])
    except ImportError as exc:
        raise PoseError(f"The runtime {name!r} is not installed ({exc}). Install it with: pip install "
                        f"{name.replace('_', '-')}") from exc
    try:
        interpreter = module.Interpreter(model_path=str(model_path), num_threads=threads or os.cpu_count() or 1)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise PoseError(f"{model_path} is not a usable TFLite model ({exc}). "
                        "Fetch a fresh copy with: rackwatch models fetch") from exc
    return interpreter


def measure_invoke_ms(interpreter: Interpreter, calls: int = 8, warmup: int = 3) -> float:
    """How long one model call takes on this machine, in ms (the median of ``calls``, after ``warmup`` calls)."""
    for _ in range(warmup):  # the first calls allocate and pick kernels
        interpreter.invoke()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


class PoseEstimator:
    """Runs MoveNet on frames of one camera, following the lifter from frame to frame.

    Keep one estimator per camera: it remembers where the lifter was. Call :meth:`reset` when the scene changes
    (a new recording).
    """

    def __init__(self, interpreter: Interpreter, min_score: float = DEFAULT_MIN_SCORE, bgr_frames: bool = True):
        self._interpreter = interpreter
        # The frame is scaled straight into the model's own input buffer and the keypoints are read straight
        # out of its output: no copy either way. (``tensor()`` hands out a function; the views it returns must
        # not outlive the next invoke, so a fresh one is taken each time.)
        self._input = interpreter.tensor(interpreter.get_input_details()[0]["index"])
        self._output = interpreter.tensor(interpreter.get_output_details()[0]["index"])
        self.min_score = min_score
        self.bgr_frames = bgr_frames
        self._crop: Crop | None = None

    def reset(self) -> None:
        self._crop = None

    @property
    def crop(self) -> Crop | None:
        """The region the next frame will be cropped to (``None``: the whole frame)."""
        return self._crop

    def estimate(self, frame: np.ndarray) -> Pose:
        """Keypoints of the lifter in ``frame``: an H×W×3 uint8 array, BGR unless ``bgr_frames`` is False.

        BGR is what OpenCV decodes; the Pi camera delivers RGB. Either way no whole frame is converted: BGR is
        swapped on the small model input.
        """
        height, width = frame.shape[:2]
        crop = self.crop_for(width, height)
        self.prepare(frame, crop)
        self.invoke()
        return self.read_pose(crop, width, height)

    def crop_for(self, width: int, height: int) -> Crop:
        """The region of the next frame to show the model: around the lifter, or the whole frame."""
        return self._crop or Crop.whole(width, height)

    def prepare(self, frame: np.ndarray, crop: Crop) -> None:
        """Cut ``crop`` out of ``frame`` and scale it into the model's input buffer (no copy besides that)."""
        import cv2  # imported here so that the pure parts of rackwatch never need OpenCV

        step = crop.size / INPUT_SIZE
        # Model pixel -> frame pixel, given directly (WARP_INVERSE_MAP) so the crop's corner enters exactly:
        # the same picture at another place in the frame then gives the very same input.
        matrix = np.array([[step, 0.0, crop.x0], [0.0, step, crop.y0]], dtype=np.float64)
        target = self._input()[0]
        # One warp does crop, scale and black padding at once.
        cv2.warpAffine(frame, matrix, (INPUT_SIZE, INPUT_SIZE), dst=target,
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
        if self.bgr_frames:
            # Swapped in place on 192x192 pixels: far cheaper than converting the full frame (and than a
            # NumPy reversed-slice copy, which costs thirty times more here).
            cv2.cvtColor(target, cv2.COLOR_BGR2RGB, dst=target)

    def invoke(self) -> None:
        """Run the model on the prepared input."""
        self._interpreter.invoke()

    def read_pose(self, crop: Crop, width: int, height: int) -> Pose:
        """The model's last output, keypoints mapped back to frame pixels; remembers where to look next."""
        # One conversion to plain floats: on 17 numbers each further NumPy call would cost more than its
        # arithmetic, the more so right after an invoke, when the CPU is cold for this code (docs/performance.md).
        raw = self._output()[0, 0].tolist()  # 17 × (y, x, score), 0..1 in the crop
        size, x0, y0 = crop.size, crop.x0, crop.y0
        xy = [(x * size + x0, y * size + y0) for y, x, _ in raw]
        score = [s for _, _, s in raw]
        self._crop = _crop_around(xy, score, width, height, self.min_score)
        return Pose(xy=np.array(xy, dtype=np.float32), score=np.array(score, dtype=np.float32))


_TORSO = [KP["left_shoulder"], KP["right_shoulder"], KP["left_hip"], KP["right_hip"]]


def next_crop(pose: Pose, width: int, height: int, min_score: float = DEFAULT_MIN_SCORE) -> Crop | None:
    """Where to look in the next frame, or ``None`` (the whole frame) when the lifter is not clearly there.

    The square is centred on the hips and big enough for every confident joint with a margin, and for the
    torso scaled up, so that a body half-found in this frame is still inside the next crop.
    """
    return _crop_around(pose.xy.tolist(), pose.score.tolist(), width, height, min_score)


def _crop_around(xy: list, score: list, width: int, height: int, min_score: float) -> Crop | None:
    # Plain floats: a dozen tiny NumPy calls would cost more than the arithmetic they do.
    left, right = KP["left_hip"], KP["right_hip"]
    visible = [i for i, s in enumerate(score) if s >= min_score]
    if score[left] < min_score or score[right] < min_score or len(visible) < 8:
        return None
    cx, cy = (xy[left][0] + xy[right][0]) / 2, (xy[left][1] + xy[right][1]) / 2

    def reach(joints) -> float:
        return max(max(abs(xy[i][0] - cx), abs(xy[i][1] - cy)) for i in joints)

    half = max(reach(i for i in _TORSO if score[i] >= min_score) * 1.9, reach(visible) * 1.25)
    # Never smaller than a quarter of the frame (MoveNet is poor on tiny, blurry crops) nor bigger than the frame.
    long_side = max(width, height)
    half = min(max(half, long_side / 8), long_side / 2)
    # Whole pixels: the int8 model answers a crop moved by a hundred-thousandth of a pixel with keypoints
    # several pixels apart, so a crop that cannot wobble by fractions gives steadier joints.
    return Crop(float(round(cx - half)), float(round(cy - half)), float(round(2 * half)))
