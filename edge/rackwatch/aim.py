"""Is the camera aimed right? ``rackwatch aim``, and the aim part of ``rackwatch doctor``.

An installer mounts the camera, a lifter stands at the rack and does one slow test squat, and this module says,
in words the installer can act on, what to change. It watches the same poses the service judges and checks:

framing
    head to feet in the picture with a margin (a lifter whose feet are cut off cannot be judged: the knee cave is
    measured against the ankles), and big enough in it (two thirds of the height is best; see docs/performance.md).
square
    the camera faces the lifter. Seen from the side or at an angle, the knees seem to move inward when they do
    not: an oblique camera makes false knee caves. Measured as rackwatch.judge does, the standing hip width over
    the hip height, but held to a stricter line (``square_hips``), with the shoulders' width telling a side view
    (shoulders one behind the other) from an oblique one.
level
    the line through the shoulders is horizontal (a camera on a tilt makes one knee look lower).
knees
    at the bottom of the test squat both knees are seen (plates, a bench or the rack's safety arms in front of the
    camera hide them exactly when they matter).
light and frame rate
    the picture is neither dark nor washed out, and frames come fast enough to see the bottom of a rep.

Nothing here stores or sends a frame: only numbers computed from each frame are kept, then the frame is dropped.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from .analysis import AnalysisSettings, LiftAnalyzer
from .camera import FrameSource
from .doctor import Finding
from .events import RepEvent
from .pose import KP, Interpreter, Pose, PoseEstimator
from .settings import Settings


class AimSettings(Settings):
    """What counts as well aimed: the ``[aim]`` table of the config file, read by ``rackwatch aim``, the doctor's
    aim check and the running rack's own judgement of its aim. The figures come from the labelled footage
    (docs/deploy.md). Ratios are to the standing hip height (hips above the ankles) in the picture.
    """

    margin: float = Field(0.02, ge=0, lt=0.5)
    """Share of the picture's height to keep free above the head and below the feet."""
    min_body_share: float = Field(0.45, gt=0, le=1)
    """The standing lifter, top of head to ankles, should fill at least this share of the picture's height."""
    square_hips: float = Field(0.18, gt=0, le=5)
    """Standing hip width ÷ hip height at or above which the hips say 'facing the camera' (front views of the
    footage: 0.17-0.34, the lowest framed on the legs; the 60° oblique view: 0.10). Stricter than the judge's
    ``min_view_width`` (0.12), which only has to rule out views near the side because the judge also catches a
    lifter turned on each rep: an installer should mount the camera square, not just good enough."""
    square_shoulders: float = Field(0.3, gt=0, le=5)
    """Standing shoulder width ÷ hip height at or above which the shoulders say 'facing the camera' (front views
    of the footage: 0.40-0.52; the 60° oblique view: 0.10; side views: 0.02-0.06)."""
    side_feet: float = Field(0.15, ge=0, le=5)
    """Standing gap between the ankles ÷ hip height below which the camera sees the lifter from the side, one
    foot behind the other (side views of the footage: 0.06-0.07; the oblique view: 0.26)."""
    max_tilt_deg: float = Field(5.0, ge=0, lt=90)
    """The shoulder line may lean this much before the camera is called not level."""
    min_knees_seen: float = Field(0.8, ge=0, le=1)
    """Share of the frames around the bottom of the test squat in which both knees must be seen."""
    min_brightness: float = Field(45.0, ge=0, le=255)
    max_brightness: float = Field(225.0, ge=0, le=255)
    """Mean grey level (0-255) of the picture that is neither too dark nor washed out."""
    min_fps: float = Field(8.0, gt=0, le=120)
    """Frames a second below which the bottom of a quick rep falls between frames."""
    min_seen_share: float = Field(0.2, ge=0, le=1)
    """Share of frames with a lifter in them below which nobody is taken to be at the rack."""

    @model_validator(mode="after")
    def _consistent(self) -> AimSettings:
        if not self.min_brightness < self.max_brightness:
            raise ValueError("needs min_brightness < max_brightness (a picture between them is well lit), not "
                             f"{self.min_brightness:g} and {self.max_brightness:g}")
        return self


@dataclass
class _Look:
    """The numbers kept from one frame with the lifter in it (never the frame)."""

    t: float
    head_top: float | None      # share of the picture's height, 0 = top edge (negative: above the picture)
    feet: float | None          # the lower ankle, same scale
    knees_seen: bool
    hips_height: float | None   # hips above the ankles, share of picture height
    shoulder_width: float | None  # ÷ hips_height, like the two below
    feet_width: float | None
    shoulder_tilt_deg: float | None


@dataclass
class AimReport:
    """What ``rackwatch aim`` found: the findings, and the numbers they rest on."""

    findings: list[Finding]
    frames: int
    fps: float
    measures: dict = field(default_factory=dict)

    @property
    def camera_ready(self) -> bool:
        return not any(f.status == "problem" for f in self.findings)

    @property
    def reason(self) -> str:
        """One line for the rack's state: what needs attention first, or that the camera is ready."""
        first = next((f for f in self.findings if f.status == "problem"), None)
        return first.summary if first else "camera ready"

    def as_dict(self) -> dict:
        return {"camera_ready": self.camera_ready, "reason": self.reason, "frames": self.frames,
                "fps": round(self.fps, 1), "measures": self.measures,
                "findings": [f.as_dict() for f in self.findings]}


class AimSurvey:
    """Watches frames and keeps, for each, the few numbers the aim is judged on.

    ``rackwatch aim`` hands it frames (:meth:`add`): it finds the pose and follows the squat itself. The rack's
    service, which already has both, hands it what it found instead (:meth:`note`, with ``interpreter=None`` and
    the service's own ``analyzer``), and judges the aim again whenever the lifter has stood still.
    """

    def __init__(self, interpreter: Interpreter | None, analysis: AnalysisSettings = AnalysisSettings(),
                 bgr_frames: bool = True, analyzer: LiftAnalyzer | None = None):
        self.analysis = analysis
        self.min_score = analysis.min_score
        self.estimator = (PoseEstimator(interpreter, analysis.min_score, bgr_frames=bgr_frames)
                          if interpreter is not None else None)
        self.analyzer = analyzer if analyzer is not None else LiftAnalyzer(settings=analysis)
        self.looks: list[_Look] = []
        self.frames = 0
        self.frame_times: list[float] = []
        self.brightness: list[float] = []
        self.bottoms: list[float] = []

    def add(self, t: float, image: np.ndarray) -> None:
        """One frame: its pose found and followed here."""
        pose = self.estimator.estimate(image)
        self.note(t, pose, image, self.analyzer.update(t, pose, image.shape[0]))

    def note(self, t: float, pose: Pose, image: np.ndarray, events=(), only_with_lifter: bool = False) -> bool:
        """One frame whose ``pose`` was found elsewhere, and the ``events`` the analyzer made of it; whether
        someone was in it. With ``only_with_lifter`` a frame without anyone is not kept at all (a rack that
        stood empty all morning judges its aim on the lifters it saw, not on the empty hours)."""
        look = self._look(t, pose, image.shape[0])
        if look is None and only_with_lifter:
            return False
        self.frames += 1
        self.frame_times.append(t)
        self.brightness.append(float(image[::8, ::8].mean()))
        for event in events:
            if isinstance(event, RepEvent):
                self.bottoms.append(event.t_bottom)
        if look is not None:
            self.looks.append(look)
        return look is not None

    def forget_before(self, t: float) -> None:
        """Drop what was seen before ``t``: a rack that runs for days judges its aim on the last while."""
        keep = next((i for i, seen in enumerate(self.frame_times) if seen >= t), len(self.frame_times))
        del self.frame_times[:keep], self.brightness[:keep]
        self.frames = len(self.frame_times)
        self.looks = [look for look in self.looks if look.t >= t]
        self.bottoms = [b for b in self.bottoms if b >= t]

    def finish(self) -> None:
        for event in self.analyzer.finish():
            if isinstance(event, RepEvent):
                self.bottoms.append(event.t_bottom)

    def _seen(self, pose: Pose, name: str):
        return pose.xy[KP[name]] if pose.score[KP[name]] >= self.min_score else None

    def _look(self, t: float, pose: Pose, height: int) -> _Look | None:
        joint = {name: self._seen(pose, name) for name in
                 ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle")}
        hips = [joint[n] for n in ("left_hip", "right_hip") if joint[n] is not None]
        shoulders = [joint[n] for n in ("left_shoulder", "right_shoulder") if joint[n] is not None]
        if not hips or not shoulders:
            return None   # nobody, or too little of them to say anything
        face = [joint[n][1] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear") if joint[n] is not None]
        shoulder_y = statistics.fmean(p[1] for p in shoulders)
        head_top = None
        if face:
            # The top of the head is about half the face-to-shoulder distance above the eyes.
            top = min(face)
            head_top = (top - 0.5 * max(shoulder_y - top, 0.0)) / height
        ankles = [joint[n] for n in ("left_ankle", "right_ankle") if joint[n] is not None]
        feet = max(p[1] for p in ankles) / height if ankles else None
        hip_y = statistics.fmean(p[1] for p in hips)
        hips_height = (feet - hip_y / height) if feet is not None else None
        shoulder_width = feet_width = tilt = None
        if len(ankles) == 2 and hips_height and hips_height > 0:
            feet_width = abs(float(ankles[0][0] - ankles[1][0])) / height / hips_height
        if len(shoulders) == 2 and hips_height and hips_height > 0:
            dx = float(joint["left_shoulder"][0] - joint["right_shoulder"][0])
            dy = float(joint["left_shoulder"][1] - joint["right_shoulder"][1])
            shoulder_width = abs(dx) / height / hips_height
            # The lifter faces the camera: their left shoulder is on the image's right (dx > 0).
            tilt = math.degrees(math.atan2(-dy, abs(dx))) if abs(dx) > 1e-6 else None
        knees_seen = joint["left_knee"] is not None and joint["right_knee"] is not None
        return _Look(t, _plain(head_top), _plain(feet), knees_seen, _plain(hips_height), _plain(shoulder_width),
                     _plain(feet_width), _plain(tilt))

    def report(self, fps: float, settings: AimSettings = AimSettings()) -> AimReport:
        return _judge(self, fps, settings)


def _plain(value) -> float | None:
    """A plain float (NumPy's float32 would leak into the JSON report)."""
    return None if value is None else float(value)


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _judge(survey: AimSurvey, fps: float, s: AimSettings) -> AimReport:
    findings: list[Finding] = []
    looks = survey.looks
    measures: dict = {"lifter_frames": len(looks)}
    brightness = _median(survey.brightness)
    measures["brightness"] = None if brightness is None else round(brightness)
    measures["fps"] = round(fps, 1)

    if brightness is not None and brightness < s.min_brightness:
        findings.append(Finding("aim: light", "problem", f"The picture is too dark (mean level {brightness:.0f} of 255).",
                                "Add light on the lifter's side of the rack, or open the camera's view to the room's "
                                "light; the model misses joints in the dark and the camera slows its frame rate."))
    elif brightness is not None and brightness > s.max_brightness:
        findings.append(Finding("aim: light", "warning", f"The picture is washed out (mean level {brightness:.0f} of "
                                "255).", "Turn the camera away from windows and lamps behind the lifter."))
    if fps < s.min_fps:
        findings.append(Finding("aim: frame rate", "problem", f"Only {fps:.1f} frames a second reach the model "
                                f"(at least {s.min_fps:g} are needed to see the bottom of a quick rep).",
                                "Give the camera more light (it slows down in the dark) and check the model's speed "
                                "with `rackwatch doctor`: a Pi 4 keeps up with about 9 frames a second, a Pi 5 with "
                                "20."))

    if len(looks) < max(3, s.min_seen_share * survey.frames):
        findings.append(Finding("aim: lifter", "warning", "Nobody was seen in front of the camera, so the aim could "
                                "not be checked.", "Ask someone to stand at the bar, facing the camera, and do one "
                                "slow squat while `rackwatch aim` watches."))
        return AimReport(findings, survey.frames, fps, measures)

    # -- framing: head to feet, with a margin -----------------------------------------------------------------------
    no_feet = sum(1 for look in looks if look.feet is None) / len(looks)
    no_head = sum(1 for look in looks if look.head_top is None) / len(looks)
    feet_low = _percentile([look.feet for look in looks], 90)
    head_high = _percentile([look.head_top for look in looks], 10)
    measures.update(feet_missing_share=round(no_feet, 2), head_missing_share=round(no_head, 2),
                    feet_at=_rounded(feet_low), head_top_at=_rounded(head_high))
    feet_cut = no_feet > 0.3 or (feet_low is not None and feet_low > 1 - s.margin)
    head_cut = no_head > 0.3 or (head_high is not None and head_high < s.margin)
    if feet_cut and head_cut:
        findings.append(Finding("aim: framing", "problem", "The lifter does not fit in the picture: both the head and "
                                "the feet are cut off.", "Move the camera further back from the rack (or widen its "
                                "view) until the whole lifter fits with a hand's width to spare above and below."))
    elif feet_cut:
        findings.append(Finding("aim: framing", "problem", "The lifter's feet are out of the picture or at its very "
                                "bottom edge; knee cave is measured against the ankles, so it cannot be judged.",
                                "Tilt the camera down a little or move it further back (the lifter can also step "
                                "back) until there is a hand's width of floor below the feet."))
    elif head_cut:
        findings.append(Finding("aim: framing", "problem", "The lifter's head is out of the picture at the top.",
                                "Tilt the camera up a little or move it further back (the lifter can also step "
                                "back) until there is a hand's width of room above the head."))
    framed = not (feet_cut or head_cut)
    if framed:
        spans = [look.feet - look.head_top for look in looks if look.feet is not None and look.head_top is not None]
        span = _percentile(spans, 90)
        measures["body_share"] = _rounded(span, 2)
        if span is not None and span < s.min_body_share:
            findings.append(Finding("aim: framing", "warning", f"The lifter fills only {span:.0%} of the picture's "
                                    "height; small in the picture, the joints are found less surely.",
                                    "Move the camera closer (about two thirds of the height is best), or raise "
                                    "[camera] width and height to 640x480."))

    # -- square to the lifter ---------------------------------------------------------------------------------------
    calibration = survey.analyzer.tracker.calibration
    hip_ratio = (calibration.hip_width / calibration.hip_height
                 if calibration is not None and calibration.hip_width else None)
    standing = _standing(looks)
    shoulder_ratio = _median(look.shoulder_width for look in standing)
    feet_ratio = _median(look.feet_width for look in standing)
    measures.update(hip_width_ratio=_rounded(hip_ratio), shoulder_width_ratio=_rounded(shoulder_ratio),
                    feet_width_ratio=_rounded(feet_ratio))
    square = (hip_ratio is None or hip_ratio >= s.square_hips) and \
        (shoulder_ratio is None or shoulder_ratio >= s.square_shoulders)
    if not framed:
        pass   # a lifter half out of the picture says little about the camera's angle: framing first
    elif hip_ratio is None and shoulder_ratio is None:
        findings.append(Finding("aim: square", "warning", "Could not tell whether the camera faces the lifter (the "
                                "hips and feet were not seen standing).", "Fix the framing first, then check again."))
    elif not square:
        if feet_ratio is not None and feet_ratio < s.side_feet:
            findings.append(Finding("aim: square", "problem", "The camera sees the lifter from the side: knee cave "
                                    "cannot be judged from there, only reps counted.",
                                    "Mount the camera in front of the rack, facing the lifter square on, at about "
                                    "hip height."))
        else:
            findings.append(Finding("aim: square", "problem", "The camera sees the lifter at an angle, not square "
                                    "on: from there the knees seem to cave in when they do not (false knee caves).",
                                    "Turn or move the camera so that it faces the lifter straight on, in line with "
                                    "the middle of the bar; both hips should look equally wide apart."))

    # -- level ------------------------------------------------------------------------------------------------------
    tilt = _median(look.shoulder_tilt_deg for look in standing)
    measures["shoulder_tilt_deg"] = _rounded(tilt, 1)
    if framed and square and tilt is not None and abs(tilt) > s.max_tilt_deg:
        turn = "clockwise" if tilt > 0 else "anticlockwise"
        findings.append(Finding("aim: level", "warning", f"The picture leans by about {abs(tilt):.0f}° (the line "
                                "through the lifter's shoulders is not level).",
                                f"Level the camera: turn it about {abs(tilt):.0f}° {turn} as seen from behind it "
                                "(a phone's spirit-level app on the mount helps)."))

    # -- the knees at the bottom of the test squat ------------------------------------------------------------------
    measures["test_squats"] = len(survey.bottoms)
    if not (framed and square):
        pass   # from the side one knee always hides the other; the camera has to move first
    elif not survey.bottoms:
        findings.append(Finding("aim: knees", "warning", "No squat was seen, so whether the knees stay in view at "
                                "the bottom could not be checked.", "Ask the lifter to do one slow squat while "
                                "`rackwatch aim` watches."))
    else:
        near = [look for look in looks if any(abs(look.t - b) <= 0.3 for b in survey.bottoms)]
        share = sum(look.knees_seen for look in near) / len(near) if near else 0.0
        measures["knees_seen_at_bottom"] = round(share, 2)
        if share < s.min_knees_seen:
            findings.append(Finding("aim: knees", "problem", f"At the bottom of the squat the knees were seen in only "
                                    f"{share:.0%} of the frames.", "Clear the view between camera and knees (plates, "
                                    "a bench, the rack's safety arms), or mount the camera lower, at about hip "
                                    "height."))
    if all(f.status != "problem" for f in findings):
        knees = ", with the knees in view at the bottom" if "knees_seen_at_bottom" in measures else ""
        findings.insert(0, Finding("aim", "ok", f"The camera sees the whole lifter, square on{knees}."))
    return AimReport(findings, survey.frames, fps, measures)


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _standing(looks: list[_Look]) -> list[_Look]:
    """The frames where the lifter stands tall (hips within 10 % of their highest above the ankles)."""
    heights = [look.hips_height for look in looks if look.hips_height]
    if not heights:
        return []
    tall = _percentile(heights, 90)
    return [look for look in looks if look.hips_height and look.hips_height >= 0.9 * tall]


def _percentile(values, q: float) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.percentile(values, q)) if values else None


def check_aim(frames: FrameSource, interpreter: Interpreter, *, analysis: AnalysisSettings = AnalysisSettings(),
              settings: AimSettings = AimSettings(), seconds: float | None = None,
              model_fps: float | None = None) -> AimReport:
    """Watch ``frames`` (a recording, or the camera for ``seconds``) and judge the aim.

    The frame rate judged is what reaches the model: the source's own rate for a recording (capped at what the
    model keeps up with, ``model_fps``), the rate frames really arrive at for a live camera.
    """
    survey = AimSurvey(interpreter, analysis, bgr_frames=frames.channels == "bgr")
    started = time.monotonic()
    first_t = last_t = None
    try:
        for frame in frames.frames():
            survey.add(frame.t, frame.image)
            first_t = frame.t if first_t is None else first_t
            last_t = frame.t
            if seconds is not None and time.monotonic() - started >= seconds:
                break
    finally:
        frames.close()
    survey.finish()
    if seconds is not None and first_t is not None and last_t is not None and last_t > first_t:
        fps = (survey.frames - 1) / (last_t - first_t)    # a live camera: what really arrived
    else:
        fps = frames.fps
    if model_fps is not None:
        fps = min(fps, model_fps)
    return survey.report(fps, settings)
