"""The rep tracker: squat geometry over time becomes reps.

How it works, in the order things happen at the rack:

1. **Calibration.** While the lifter stands still and upright for a moment, the tracker records their standing
   posture: hip height, each leg's length and each knee's natural alignment. Every later measure is a change from
   that posture, in units of the lifter's own leg length, so people with naturally close or wide knees, tall or
   short, near or far from the camera, are judged alike. It recalibrates whenever the lifter stands still again
   (between reps), which also follows a camera that zooms. Frames seen before the first calibration are kept and
   replayed once it exists, so a rep that starts with the recording is not lost, if its start was seen: a lifter
   who never held still is measured from the upright frames of the opening, and a rep after which they stand up
   well taller than ever seen before it began had begun before they were seen (:meth:`RepTracker._start_unseen`).
2. **Reps.** *Depth* is the share of the standing hip height the lifter has sunk. A rep starts when depth passes
   ``start_depth``, and ends when the lifter is back within ``end_depth`` of standing, or back within
   ``start_depth`` and holding still there for ``still_s`` (soft knees, or one foot still lifted after a
   single-leg squat: a little shorter than at calibration). Only then is it judged
   real: deep enough, neither too quick nor too slow, torso up (not bending over to pick up a plate), the same
   person throughout, and no long gap in the joints.
3. **Squats only.** A real rep is held for ``plant_after_s`` and handed on only if the feet stayed planted from
   ``plant_before_s`` before it to then: jumps (both feet leave the floor), jumping jacks (the feet move apart or
   together), lunges and steps (one foot moves), walking in or out of view (the whole body grows or shrinks in
   the picture, the feet with it) drop the hips in the picture too, but are not squats. Each movement turned
   away is kept, with why, in :attr:`RepTracker.rejected` (a :class:`Rejection`) until the analysis takes it. In
   a single-leg squat the free foot moves as it likes, so these rules apply to the two-leg squat
   (:attr:`RepTracker.single_leg`).
4. **Phases.** Within a finished rep, frames at ≥ 90 % (``bottom_share``) of the rep's greatest depth are the
   *bottom*; before that is the *descent*, after it the *ascent*.

**Frame rate.** The rack judges 8-10 frames a second (a Pi 4), recordings 24-30: every span is a time in seconds,
never a number of frames (``max_jump`` alone is per frame: it is a distance, not a span), so the same lifter gives
the same reps at either rate (``rackwatch eval --fps``). A rep's start and end are known only to a frame period,
and a recording that stops a frame short of a rep's end still counts it (:meth:`RepTracker.finish`).

Every threshold is a field of :class:`RepSettings`. The few bare numbers left define a reported figure rather
than decide whether something counts (the 5 % band of :attr:`Rep.t_bottom`, the 10th-90th percentile spreads of
:meth:`Rep.working_leg` and of a foot's travel, the 25 % change of size that only words a rejection as walking);
docs/valgus.md lists them and says why.

Pure code: frames in, :class:`Rep` objects out. No clock, no camera, no I/O.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from pydantic import Field, model_validator

from . import geometry
from .events import LEGS, NotCountedWhy
from .settings import Settings



log = logging.getLogger(__name__)

RETIRED = {
    "steady_frames": "the hip height's median now spans steady_s seconds (0.15 s, five frames at 30 fps), so that "
                     "a rack at 10 fps lags no more than a recording",
    "max_feet_drift": "the feet are now judged by max_foot_travel, max_foot_rise, min_flight_s and "
                      "max_stance_change (squats only)",
}
"""Settings of earlier versions that a rack's config file may still hold: taken out with a warning, not refused,
so that an updated rack still starts (a typo is still refused)."""


class RepSettings(Settings):
    """How reps are found: the ``[analysis.reps]`` table of the config file.

    Depths are shares of the standing hip height, lengths are in leg or shank lengths, times in seconds.
    """

    start_depth: float = Field(0.10, gt=0, lt=1)
    """Sinking this share of standing hip height starts a rep."""
    end_depth: float = Field(0.06, gt=0, lt=1)
    """Back within this share of standing, the rep is over."""
    min_depth: float = Field(0.18, gt=0, lt=1)
    """A rep must reach at least this depth to count."""
    min_rep_s: float = Field(0.6, gt=0, le=60)
    """A rep lasts at least this long from the frame before its start to its end (a frame period is all a rep's
    timing is known to: 0.1 s at 10 fps)..."""
    max_rep_s: float = Field(12.0, gt=0, le=600)
    """...and at most this long from its first frame to its end."""
    still_s: float = Field(0.4, gt=0, le=10)
    """How long the lifter must hold still to (re)calibrate."""
    still_tolerance: float = Field(0.04, gt=0, lt=1)
    """Hip height may wander by this share of itself and still count as still."""
    upright_ratio: float = Field(1.55, gt=0, le=10)
    """Standing means hip height ≥ this many shank lengths (a deep squat is near 1)..."""
    upright_share: float = Field(0.9, gt=0, le=1)
    """...and ≥ this share of the tallest hip height seen lately: seen from the front, a shallow squat's shins
    tilt toward the camera and look short, so the shank test alone can take a held bottom for standing."""
    tallest_decay_per_s: float = Field(0.01, ge=0, lt=1)
    """How fast the memory of the tallest hip height fades (1 %/s follows a camera that zooms out)."""
    max_height_to_shank: float = Field(2.8, gt=0, le=10)
    """A standing lifter's hip height is about two shank lengths; far more means the model put a knee on top of
    its ankle (or took the lifted foot of a single-leg squat for the standing one): a glitch, not a posture."""
    foot_lift: float = Field(0.35, gt=0, le=5)
    """A lone ankle this many shank lengths above where the feet stood is a lifted foot, not the floor."""
    floor_memory_s: float = Field(2.0, ge=0, le=60)
    """How long where the feet stood is remembered while only one foot is in view (a side view may never show
    both)."""
    steady_s: float = Field(0.15, ge=0, le=1)
    """Hip height is the running median of the frames of this long (0: no median): a glitch of the model shorter
    than half of it vanishes. In seconds, not frames, so that a rack at 10 fps lags no more than a recording at 30
    (five frames were 0.15 s at 30 fps but half a second at 10, enough to miss the end of a rep). A lifter just
    found (first seen, or seen again after ``max_gap_s``) has no hip height for this long: the model's first look
    at someone it has just found is its roughest, and a median of one or two frames does not outvote it
    (docs/valgus.md, "A lifter small in the frame")."""
    max_gap_s: float = Field(1.0, gt=0, le=60)
    """A rep survives missing joints for this long (the model often loses knees at the bottom of a side view)."""
    plant_before_s: float = Field(1.0, ge=0, le=5)
    """Squats only: the feet must have stayed planted for this long before a rep starts (a lunge steps out first,
    then sinks; a landing sinks right after the flight)..."""
    plant_after_s: float = Field(0.5, ge=0, le=2)
    """...and for this long after it ends (a jump takes off from its dip). A rep is handed on this long after its
    end, once that is seen."""
    max_foot_rise: float = Field(0.1, gt=0, le=10)
    """...: the lower foot may rise this many standing hip heights above where it stood..."""
    min_flight_s: float = Field(0.2, ge=0, le=2)
    """...for no longer than this (a 5 cm hop is 0.2 s in the air; the model misplacing both ankles for a frame
    or two is no jump). Seen as frames spanning this less a frame period, so it holds at any frame rate..."""
    max_foot_travel: float = Field(0.15, gt=0, le=10)
    """...each foot may move this many standing hip heights in the picture (a step, a lunge, a slide is more; the
    10th-90th percentile spread of its place, so one misplaced ankle is not a step)..."""
    max_stance_change: float = Field(0.15, gt=0, le=10)
    """...and the gap between the feet may change by this many (jumping jacks: 0.5 and more). All three apply to
    the two-leg squat only: in a single-leg squat the free foot moves as it likes, and the model often takes it
    for the standing one (docs/valgus.md, "Squats only")."""
    max_jump: float = Field(0.5, gt=0, le=10)
    """A hip jump of this many standing hip heights from one frame to the next means the model found someone
    else. Per frame, not per second: the other person is as far away whatever the frame rate, while the lifter's
    own hips move under 0.2 between frames even at 8 fps."""
    min_torso_share: float = Field(0.35, ge=0, lt=1)
    """At the bottom, shoulders stay at least this share of their standing height above the hips."""
    bottom_share: float = Field(0.9, gt=0, lt=1)
    """Frames at or beyond this share of a rep's greatest depth are its bottom (for the phases and the torso)."""
    deepening: float = Field(0.01, ge=0, lt=1)
    """Sinking more than this share of hip height past the deepest so far is still going down (less is model
    wobble); the live phase says "bottom" once the lifter has not gone deeper for ``bottom_settle_s``."""
    bottom_settle_s: float = Field(0.15, ge=0, le=10)
    pre_calibration_s: float = Field(15.0, ge=0, le=600)
    """Frames seen before the first calibration are kept this long, to be replayed once it exists."""

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data):
        if isinstance(data, dict) and RETIRED.keys() & data.keys():
            data = dict(data)
            for key in RETIRED.keys() & data.keys():
                data.pop(key)
                log.warning("[analysis.reps] %s is no longer a setting and is ignored: %s. Remove it from the "
                            "config file.", key, RETIRED[key])
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RepSettings:
        if not self.end_depth < self.start_depth <= self.min_depth:
            raise ValueError("needs end_depth < start_depth <= min_depth (a rep starts deeper than it ends, and "
                             f"must reach its start), not {self.end_depth:g}, {self.start_depth:g}, "
                             f"{self.min_depth:g}")
        if not self.min_rep_s < self.max_rep_s:
            raise ValueError(f"needs min_rep_s < max_rep_s, not {self.min_rep_s:g} and {self.max_rep_s:g}")
        if not self.upright_ratio < self.max_height_to_shank:
            raise ValueError("needs upright_ratio < max_height_to_shank (a standing lifter must be taller than "
                             f"the shortest stance and shorter than a glitch), not {self.upright_ratio:g} and "
                             f"{self.max_height_to_shank:g}")
        return self


@dataclass(frozen=True)
class Calibration:
    """The lifter's standing posture."""

    t: float
    hip_height: float
    leg_length: dict[str, float]
    knee_medial: dict[str, float]
    knee_over_ankle: dict[str, float]
    fppa: dict[str, float]
    torso_height: float | None
    stance_ratio: float | None
    hip_width: float | None
    hip_over_feet: float | None
    held: bool = True
    """Drawn from the lifter holding still; ``False`` for the stand-in taken from the upright frames of a
    recording's opening (:meth:`RepTracker._opening_calibration`), which may have been no standing at all."""


class LegSample(NamedTuple):
    """One leg in one frame, as change from standing (leg lengths and degrees; + = toward the midline)."""

    medial_shift: float
    """Knee's distance from the hip-ankle line."""
    knee_inside_ankle: float
    """Knee's horizontal distance inside the ankle."""
    fppa_change: float
    ankle: tuple[float, float]
    """Where the ankle is, in leg lengths from the image origin (to see which foot stays planted)."""
    confidence: float
    """The model's score for the less certain of hip and knee."""
    foot_confidence: float
    """The model's score for the ankle."""


class Sample(NamedTuple):
    """One frame of a rep."""

    t: float
    depth: float
    legs: dict[str, LegSample | None]
    hip_shift: float | None
    """Hip centre's sideways move from standing, in leg lengths, + toward the lifter's left."""


class Rejection(NamedTuple):
    """A movement that looked like a rep but was not counted: when, and why (a code and a sentence)."""

    t_start: float
    t_end: float
    why: NotCountedWhy
    reason: str


@dataclass
class Rep:
    """A finished, real rep, with every frame of it."""

    t_start: float
    t_end: float
    samples: list[Sample]
    calibration: Calibration
    phase_of: list[str] = field(default_factory=list)

    @property
    def bottom_index(self) -> int:
        return int(np.argmax([s.depth for s in self.samples]))

    @property
    def t_bottom(self) -> float:
        """The middle of the longest stretch within 5 % of the greatest depth: a paused bottom's centre.

        The longest, not the one around the single deepest frame: a blip of a few frames (a foot put down, a
        joint briefly misplaced) can reach as deep as the real bottom, but the lifter does not stay there.
        """
        floor = 0.95 * self.depth
        best = run = (0, -1)   # (first, last) sample index
        for i, sample in enumerate(self.samples):
            if sample.depth < floor:
                continue
            run = (run[0], i) if run[1] == i - 1 else (i, i)
            if run[1] - run[0] > best[1] - best[0]:
                best = run
        return (self.samples[best[0]].t + self.samples[best[1]].t) / 2

    @property
    def depth(self) -> float:
        return self.samples[self.bottom_index].depth

    @property
    def descent_s(self) -> float:
        return self.t_bottom - self.t_start

    @property
    def ascent_s(self) -> float:
        return self.t_end - self.t_bottom

    @property
    def ascent_speed(self) -> float:
        """Mean rising speed from the bottom, in standing hip heights per second (for velocity loss)."""
        return self.depth / self.ascent_s if self.ascent_s > 0 else 0.0

    def working_leg(self) -> str | None:
        """The leg a single-leg squat stands on: the one whose foot stays planted while the other moves.

        The free leg travels during the rep whichever way it is held (lifted behind, swung forward, slid out to
        the side); the standing foot does not.
        """
        travel = {}
        for leg in LEGS:
            ankles = np.array([s.legs[leg].ankle for s in self.samples if s.legs[leg]])
            if len(ankles) >= 3:
                spread = np.percentile(ankles, 90, axis=0) - np.percentile(ankles, 10, axis=0)
                travel[leg] = float(np.hypot(*spread))
        if len(travel) < 2:
            return next(iter(travel), None)
        return min(travel, key=travel.get)


@dataclass
class _Pending:
    t_start: float
    t_before: float
    """The frame before the start, the last one seen short of ``start_depth``: the rep began after it."""
    samples: list[Sample] = field(default_factory=list)
    frames: list[tuple[float, geometry.Frame]] = field(default_factory=list)
    """Every frame from ``plant_before_s`` before the start: where the feet were is judged over them."""
    max_depth: float = 0.0
    deepened_at: float = 0.0
    torso_ok: bool = True
    last_seen: float = 0.0
    rest: list[tuple[float, float]] = field(default_factory=list)
    """(time, hip height) since the lifter came back within ``start_depth`` of standing after the bottom."""
    stood_before: float = 0.0
    """The tallest hip height seen before the rep started."""


@dataclass
class _Held:
    """A rep that has ended, waiting out ``plant_after_s`` before it is handed on."""
    rep: Rep
    seen: list[tuple[float, geometry.Frame]]
    """Its frames from ``plant_before_s`` before it, and those since: the feet are judged over them."""
    stood_before: float
    """The tallest hip height seen before it started."""
    stood_after: float = 0.0
    """The tallest hip height seen since it ended."""


class _StillWindow:
    """The upright frames of the lifter's latest stillness, oldest first, each with its hip height.

    :meth:`RepTracker._try_calibrate` asks on every upright frame whether the window's hip heights still lie within
    ``still_tolerance`` of each other, so the greatest and least of them are kept at hand rather than found anew
    by a scan of the window each frame (on the Pi every millisecond outside the model is a frame lost). Two
    queues do it: ``_high`` holds, oldest first, each height in the window that no later one exceeds, so it falls
    from front to back and its front is the window's greatest; ``_low`` is its mirror for the least. A height
    enters each queue once and leaves it at most once, so a frame costs about the same however long the window.
    """

    def __init__(self) -> None:
        self._entries: deque[tuple[float, geometry.Frame, float]] = deque()   # (t, frame, hip height)
        self._high: deque[float] = deque()
        self._low: deque[float] = deque()

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, t: float, frame: geometry.Frame, height: float) -> None:
        self._entries.append((t, frame, height))
        # A height that a newer one passes can never again be the window's extreme: the newer one outlasts it.
        # An equal one stays: each copy leaves the queue when its own frame leaves the window (see popleft).
        while self._high and self._high[-1] < height:
            self._high.pop()
        self._high.append(height)
        while self._low and self._low[-1] > height:
            self._low.pop()
        self._low.append(height)

    def popleft(self) -> None:
        _, _, height = self._entries.popleft()
        # The oldest height is still queued only if nothing newer passed it, and then it is the queue's front.
        if self._high[0] == height:
            self._high.popleft()
        if self._low[0] == height:
            self._low.popleft()

    def clear(self) -> None:
        self._entries.clear()
        self._high.clear()
        self._low.clear()

    @property
    def first_t(self) -> float:
        return self._entries[0][0]

    @property
    def highest(self) -> float:
        return self._high[0]

    @property
    def lowest(self) -> float:
        return self._low[0]

    def frames(self) -> list[geometry.Frame]:
        return [frame for _, frame, _ in self._entries]

    def heights(self) -> list[float]:
        return [height for _, _, height in self._entries]


class RepTracker:
    """Feed :meth:`update` one frame at a time; it returns the reps that the frame completes.

    ``phase`` and ``lifter_seen`` describe the present moment, for the rack's live state.
    """

    def __init__(self, settings: RepSettings = RepSettings()):
        self.settings = settings
        self.calibration: Calibration | None = None
        self.phase = "standing"
        self.lifter_seen = False
        self._still = _StillWindow()   # the upright frames of the lifter's latest stillness
        self._before_calibration: deque[tuple[float, geometry.Frame, float | None]] = deque()
        self._rep: _Pending | None = None
        self._held: list[_Held] = []   # reps waiting out ``plant_after_s``
        self._tallest_seen = 0.0   # the tallest hip height seen so far
        self._lately: deque[tuple[float, geometry.Frame]] = deque()   # the frames of the last ``plant_before_s``
        self.single_leg = False
        """A single-leg squat: the free foot may move (set by the analysis from the lifter's exercise)."""
        self.rejected: list[Rejection] = []
        """The movements that looked like a rep but were not a squat, or whose start was not seen, in order, until
        taken by :meth:`take_rejected`."""
        self._armed = False  # a rep may only start from standing
        self._last_hip: geometry.Point | None = None
        self._recent_heights: deque[tuple[float, float]] = deque()   # (when, hip height) over ``steady_s``
        self._found_at: float | None = None   # when the lifter was found (first seen, or again after a gap)
        self._last_seen_t: float | None = None
        self._previous_t: float | None = None   # the time of the last frame tracked with a hip height
        self._last_raw: tuple[float, float | None] | None = None   # the newest frame's hip height, unsteadied
        self._still_calibrated = False
        self._tallest = (0.0, 0.0)  # (when, hip height): the tallest the lifter has stood lately
        self._floor: tuple[float, float] | None = None  # (when, image y): where the standing foot was last seen

    # -- public ---------------------------------------------------------------------------------------------

    def update(self, t: float, frame: geometry.Frame) -> list[Rep]:
        raw = self._trusted_hip_height(t, frame)
        if raw is not None:
            if self._last_seen_t is not None and t - self._last_seen_t > self.settings.max_gap_s:
                # Lost for too long: whatever happened meanwhile was not seen, so no rep may start mid-way.
                self._recent_heights.clear()
                self._found_at = None
                self._abandon()
            self._last_seen_t = t
        height = self._steady(t, raw)
        self._last_raw = (t, raw)
        # Seen now, even while the hip height waits out steady_s after the lifter was found (a rack resting while
        # nobody is there wakes at the first frame that shows them).
        self.lifter_seen = raw is not None
        if self.calibration is None:
            self._before_calibration.append((t, frame, height))
            while t - self._before_calibration[0][0] > self.settings.pre_calibration_s:
                self._before_calibration.popleft()
            if self._try_calibrate(t, frame, height) or self._calibrate_provisionally(height):
                return self._replay()
            return []
        self._try_calibrate(t, frame, height)
        return self._step(t, frame, height)

    def finish(self) -> list[Rep]:
        """The recording ended: a rep still under way is incomplete and is not counted, unless it is all but done.

        A short recording may end before the lifter ever stood still long enough to calibrate; then the most
        upright frames seen stand in for the calibration, and the reps found with it are returned.

        A rep whose recording stops in the last few centimetres of its ascent counts (:meth:`_closes_with_an_ascent`):
        the rack, seeing the next frame, would have closed it.
        """
        reps: list[Rep] = []
        if self.calibration is None:
            self.calibration = self._opening_calibration()
            if self.calibration is not None:
                reps = self._replay()
        if self._rep is not None and self._closes_with_an_ascent(self._rep):
            self._close(self._rep.samples[-1].t)
        reps += self._release(math.inf)
        self._rep = None
        self.phase = "standing"
        return reps

    def _opening_calibration(self) -> Calibration | None:
        """A stand-in calibration from the upright frames seen before the first descent, or ``None`` if none.

        For a lifter who never stands still long enough to calibrate (or a recording too short for it). The
        standing posture before the first descent, not the most upright frames overall: a phone that zooms or
        tilts during the rep makes the lifter look taller or shorter at the end, and the rep is judged from its
        start.
        """
        s = self.settings
        upright = [(t, f, h) for t, f, h in self._before_calibration
                   if h is not None and (shank := _shank(f)) and h >= s.upright_ratio * shank]
        if not upright:
            return None
        opening, tallest = [], 0.0
        for t, f, h in upright:
            if h < (1 - s.start_depth) * tallest:
                break
            opening.append((t, f, h))
            tallest = max(tallest, h)
        best = [(f, h) for _, f, h in opening if h >= (1 - s.still_tolerance) * tallest]
        return _calibrate(opening[-1][0], [f for f, _ in best], statistics.median(h for _, h in best), None,
                          held=False)

    def _calibrate_provisionally(self, height: float | None) -> bool:
        """Calibrate from the opening frames when a rep needs it: the lifter, never still yet, has sunk a rep's
        ``start_depth`` below how they stood. Each rep is then handed on as it ends, not when the set closes; the
        first still standing replaces this calibration for the reps after it (see :meth:`update`)."""
        if height is None or height >= (1 - self.settings.start_depth) * self._tallest[1]:
            return False   # (a cheap test first: nowhere near a rep below the tallest seen lately)
        opening = self._opening_calibration()
        if opening is None or height >= (1 - self.settings.start_depth) * opening.hip_height:
            return False
        self.calibration = opening
        return True

    def take_rejected(self) -> list[Rejection]:
        """The movements turned away since the last call (the analysis makes an event of each)."""
        taken, self.rejected = self.rejected, []
        return taken

    def release_held(self) -> list[Rep]:
        """The reps still waiting out ``plant_after_s``, judged now on what has been seen (the lifter's settings
        changed: the set they belong to ends)."""
        return self._release(math.inf)

    def _trusted_hip_height(self, t: float, frame: geometry.Frame) -> float | None:
        """This frame's hip height, or ``None`` when the only foot in view is a lifted one.

        In a single-leg squat the model sometimes loses the standing foot for a few frames; the hip height would
        then be measured down to the lifted foot, as if the lifter had dropped into a deep squat at once. A lone
        ankle well above where the feet have been standing is taken for that lifted foot.
        """
        s = self.settings
        height = _hip_height(frame, s.max_height_to_shank)
        if height is None:
            return None
        ankles = [leg.ankle[1] for leg in (frame.left, frame.right) if leg is not None]
        lowest = max(ankles)
        if (len(ankles) == 1 and self._floor is not None and t - self._floor[0] <= s.floor_memory_s
                and lowest < self._floor[1] - s.foot_lift * _shank(frame)):
            return None
        self._floor = (t, lowest)
        return height

    def _steady(self, t: float, height: float | None) -> float | None:
        """Hip height with brief glitches of the model removed: the median of the last ``steady_s`` seconds; ``None``
        for the first ``steady_s`` after the lifter is found."""
        if height is None:
            return None
        recent = self._recent_heights
        if self._found_at is None:
            self._found_at = t
        recent.append((t, height))
        while t - recent[0][0] >= self.settings.steady_s and len(recent) > 1:
            recent.popleft()
        # For steady_s after the lifter is found, no hip height: by then the frame they were found in has left
        # the median (at 8-10 fps a median of two frames would only halve its error, not outvote it).
        if t - self._found_at < self.settings.steady_s:
            return None
        return statistics.median(h for _, h in recent)

    # -- calibration ----------------------------------------------------------------------------------------

    def _upright(self, t: float, frame: geometry.Frame, height: float | None) -> bool:
        s = self.settings
        if height is None:
            return False
        faded = self._tallest[1] * (1 - s.tallest_decay_per_s * max(0.0, t - self._tallest[0]))
        self._tallest = (t, max(height, faded))
        shank = _shank(frame)
        return shank is not None and height >= s.upright_ratio * shank and height >= s.upright_share * self._tallest[1]

    def _try_calibrate(self, t: float, frame: geometry.Frame, height: float | None) -> bool:
        s = self.settings
        if not self._upright(t, frame, height) or self._rep is not None:
            self._still.clear()
            self._still_calibrated = False
            return False
        still = self._still
        still.append(t, frame, height)
        # The lifter moved: drop the oldest frames until the rest lie within still_tolerance of each other.
        while len(still) > 1 and still.highest - still.lowest > s.still_tolerance * still.highest:
            still.popleft()
            self._still_calibrated = False
        while t - still.first_t > 2 * s.still_s:  # a long wait at the rack must not grow the window
            still.popleft()
        if t - still.first_t < s.still_s or self._still_calibrated:
            return False
        # Once per still period: the standing posture does not change while the lifter holds still.
        self._still_calibrated = True
        self.calibration = _calibrate(t, still.frames(), statistics.median(still.heights()), self.calibration)
        return True

    def _replay(self) -> list[Rep]:
        frames, self._before_calibration = list(self._before_calibration), deque()
        self._armed = self._opens_with_a_descent(frames)
        done: list[Rep] = []
        for t, frame, height in frames:
            done += self._step(t, frame, height)
        return done

    def _opens_with_a_descent(self, frames: list) -> bool:
        """Whether a rep already under way when the recording starts may count.

        Only if it is seen to start: the lifter opens standing, or bent less than a rep's ``start_depth`` and
        still going down. A recording that opens further down, or on the way up, missed that rep's start.
        """
        seen = [(t, 1 - h / self.calibration.hip_height) for t, _, h in frames if h is not None]
        if not seen:
            return False
        t0, first = seen[0]
        if first < self.settings.end_depth:
            return True
        later = [depth for t, depth in seen if t - t0 <= self.settings.still_s]
        return first < self.settings.start_depth and later[-1] > first + self.settings.end_depth / 2

    def _closes_with_an_ascent(self, rep: _Pending) -> bool:
        """Whether a rep under way when the recording stops has been seen all but to its end.

        The mirror of :meth:`_opens_with_a_descent`: the lifter was last seen shallower than a rep's
        ``start_depth`` and still rising (by half of ``end_depth`` over the last ``still_s``). A rep ends at the
        first frame within ``end_depth`` of standing; a recording (or a rack at 8 fps) that stops a frame short of
        it has still seen the bottom and the ascent. One cut off deeper, or at the bottom, has not.

        The last frame's own hip height is taken, not the median of the last ``steady_s``: the median waits for
        later frames to outvote a glitch, and after the last frame there are none. (Rising at half a standing
        hip height a second, the median of an 8 fps rack lags 0.035 behind the lifter.)
        """
        s, last = self.settings, rep.samples[-1]
        if self._last_raw is None or self._last_raw[0] != last.t or self._last_raw[1] is None:
            return False
        depth = 1 - self._last_raw[1] / self.calibration.hip_height
        earlier = [x.depth for x in rep.samples if last.t - x.t <= s.still_s]
        return depth < s.start_depth and earlier[0] > max(depth, last.depth) + s.end_depth / 2

    # -- squats only -----------------------------------------------------------------------------------------

    def _step(self, t: float, frame: geometry.Frame, height: float | None) -> list[Rep]:
        """One frame for the rep under way and for the reps waiting to be handed on."""
        self._lately.append((t, frame))
        while t - self._lately[0][0] > self.settings.plant_before_s:
            self._lately.popleft()
        for held in self._held:
            held.seen.append((t, frame))
            if height is not None and t > held.rep.t_end:
                held.stood_after = max(held.stood_after, height)
        self._track(t, frame, height)
        if height is not None:
            self._tallest_seen = max(self._tallest_seen, height)
        return self._release(t)

    def _release(self, t: float) -> list[Rep]:
        """The held reps whose ``plant_after_s`` after their end has passed, if their feet stayed planted."""
        out = []
        while self._held and t - self._held[0].rep.t_end >= self.settings.plant_after_s:
            held = self._held.pop(0)
            rep = held.rep
            why = self._start_unseen(rep, held.stood_before, held.stood_after) or self._not_a_squat(rep, held.seen)
            if why is None:
                out.append(rep)
            else:
                self.rejected.append(Rejection(rep.t_start, rep.t_end, *why))
        return out

    def _start_unseen(self, rep: Rep, before: float, after: float) -> tuple[NotCountedWhy, str] | None:
        """``start_unseen`` and why ``rep``'s start was not seen, or ``None``.

        Measured from the stand-in calibration of a recording's opening (the lifter never held still before it),
        a rep's start was not seen if the lifter, back up after it, stood taller than they had ever been seen
        before it started (``before``) by more than a rep's ``start_depth``: every posture seen until then was
        already part way down. A lifter found mid-descent: a camera that finds a small lifter late, a recording
        that opens mid-rep. A lifter truly seen standing comes back up to about that height.

        Two hip heights are compared, each of which may wander by ``still_tolerance`` on a lifter standing still:
        within that, the start counts as seen. A calibration from the lifter holding still was standing.
        """
        s = self.settings
        if rep.calibration.held or after * (1 - s.start_depth - s.still_tolerance) <= before:
            return None
        return "start_unseen", (f"the lifter then stood {after / before - 1:.0%} taller than ever seen before the "
                                 "rep: found part way down, the rep's start was not seen")

    def _not_a_squat(self, rep: Rep, seen: list[tuple[float, geometry.Frame]]) -> tuple[NotCountedWhy, str] | None:
        """What the movement around ``rep`` (from ``plant_before_s`` before it to ``plant_after_s`` after) was not a
        squat with the feet planted (a code and a sentence), or ``None`` if it was. Two-leg squats only (see
        :attr:`RepSettings.max_stance_change`).

        Distances are in standing hip heights, each foot's travel the 10th-90th percentile spread of its place
        (so that a few misplaced ankles are no step); "both feet off the floor" must hold for ``min_flight_s``.
        """
        if self.single_leg:
            return None
        s, h = self.settings, rep.calibration.hip_height
        travel = {}
        for side in LEGS:
            ankles = [f.leg(side).ankle for _, f in seen if f.leg(side) is not None]
            if len(ankles) >= 3:
                travel[side] = math.hypot(_spread([a[0] for a in ankles]), _spread([a[1] for a in ankles])) / h
        moved = [side for side, d in travel.items() if d > s.max_foot_travel]
        if len(moved) == 1:
            return "step", (f"the {moved[0]} foot stepped ({travel[moved[0]]:.2f} hip heights): a lunge or a step, "
                            "not a squat")
        # The lower foot in the picture is the one on the floor: both feet off the floor lift it too. Only frames
        # with both ankles seen count, a lone ankle may be a lifted one.
        both = [(t, f) for t, f in seen if f.left is not None and f.right is not None]
        if len(both) < 3:
            return None
        lowest = [(t, max(f.left.ankle[1], f.right.ankle[1])) for t, f in both]
        floor = statistics.median(y for _, y in lowest)
        # A flight of ``min_flight_s`` shows as frames spanning at least that less a frame period, whatever the
        # moment the frames fall on.
        period = statistics.median(b[0] - a[0] for a, b in zip(lowest, lowest[1:]))
        rise = _held_for([(t, (floor - y) / h) for t, y in lowest], max(s.min_flight_s - period, 0.0))
        gaps = [abs(f.left.ankle[0] - f.right.ankle[0]) / h for _, f in both]
        if rise > s.max_foot_rise or moved:
            # Feet higher in the picture and the body smaller (or lower and larger) is walking away (or toward);
            # the size only chooses the words: the feet have already decided.
            widths = [f.hip_width_px for _, f in both if f.hip_width_px]
            if widths and np.percentile(widths, 90) > (1 + _RESIZED) * np.percentile(widths, 10):
                return "walking_in_out", ("the whole body grew or shrank in the picture, the feet moving with it: "
                                          "walking toward or away from the camera, not a squat")
            if rise > s.max_foot_rise:
                return "jump", f"both feet left the floor ({rise:.2f} hip heights): a jump, not a squat"
        if _spread(gaps) > s.max_stance_change:
            return "jumping_jacks", (f"the feet moved apart or together ({_spread(gaps):.2f} hip heights): "
                                     "jumping jacks or a shuffle, not a squat")
        if moved:
            return "walking", "both feet moved: walking, not a squat"
        return None

    # -- rep detection --------------------------------------------------------------------------------------

    def _track(self, t: float, frame: geometry.Frame, height: float | None) -> None:
        s, cal = self.settings, self.calibration
        rep = self._rep
        if height is None or not self._same_person(t, frame):
            if rep is not None and t - rep.last_seen > s.max_gap_s:
                self._abandon()
            return
        if rep is not None and t - rep.last_seen > s.max_gap_s:
            self._abandon()
            rep = None
        depth = 1 - height / cal.hip_height
        previous_t, self._previous_t = self._previous_t, t
        if rep is None:
            if depth < s.end_depth:
                self._armed = True
            if depth >= s.start_depth and self._armed:
                self._rep = rep = _Pending(t_start=t, t_before=t if previous_t is None else previous_t,
                                           frames=list(self._lately)[:-1], stood_before=self._tallest_seen)
            else:
                self.phase = "standing"
                return
        rep.samples.append(_sample(t, depth, frame, cal))
        rep.frames.append((t, frame))
        rep.last_seen = t
        if depth > rep.max_depth + s.deepening:   # still going down, not model wobble
            rep.deepened_at = t
        rep.max_depth = max(rep.max_depth, depth)
        torso = _torso_height(frame)
        if torso is not None and cal.torso_height and depth >= s.bottom_share * rep.max_depth:
            rep.torso_ok = torso >= s.min_torso_share * cal.torso_height
        # The live phase, for the rack's state: it settles at "bottom" once the lifter stops going down.
        if depth < s.bottom_share * rep.max_depth:
            self.phase = "ascent"
        elif t - rep.deepened_at >= s.bottom_settle_s:
            self.phase = "bottom"
        else:
            self.phase = "descent"
        if depth >= s.end_depth:
            if self._at_rest(rep, t, depth, height):
                self._armed = True   # standing, only a little shorter than at calibration
                self._close(rep.rest[0][0])
            elif t - rep.t_start > s.max_rep_s:
                self._abandon()
            return
        self._close(t)

    def _at_rest(self, rep: _Pending, t: float, depth: float, height: float) -> bool:
        """Whether the lifter, back up from a full rep, has held still near standing for ``still_s``.

        Then the rep is over though they stand a little shorter than at calibration (soft knees, one foot still
        lifted after a single-leg squat): waiting for ``end_depth`` would run the rep on into whatever comes next.
        """
        s = self.settings
        if depth >= s.start_depth or rep.max_depth < s.min_depth:
            rep.rest.clear()
            return False
        rep.rest.append((t, height))
        heights = [h for _, h in rep.rest]
        while max(heights) - min(heights) > s.still_tolerance * max(heights):
            rep.rest.pop(0)
            heights.pop(0)
        return t - rep.rest[0][0] >= s.still_s

    def _close(self, t: float) -> None:
        """The rep under way has ended at ``t``: held for ``plant_after_s`` if it is real, else dropped."""
        s, pending = self.settings, self._rep
        pending.samples = [sample for sample in pending.samples if sample.t <= t]
        self._rep = None
        self.phase = "standing"
        # Between frames a rep's true start and end are known only to a frame period: too quick means too quick
        # even from the frame before its start (at 10 fps that is 0.1 s, at 30 a thirtieth), too slow means too
        # slow even from its first frame.
        real = (pending.max_depth >= s.min_depth and s.min_rep_s <= t - pending.t_before
                and t - pending.t_start <= s.max_rep_s
                and pending.torso_ok)
        if not real:
            return
        rep = Rep(t_start=pending.t_start, t_end=t, samples=pending.samples, calibration=self.calibration)
        rep.phase_of = _phases(rep.samples, s.bottom_share)
        self._held.append(_Held(rep, pending.frames, pending.stood_before))

    def _abandon(self) -> None:
        self._rep = None
        self._armed = False
        self.phase = "standing"

    def _same_person(self, t: float, frame: geometry.Frame) -> bool:
        hip = frame.hip_center
        previous, self._last_hip = self._last_hip, hip
        if hip is None or previous is None or self.calibration is None:
            return hip is not None
        jump = math.hypot(hip[0] - previous[0], hip[1] - previous[1]) / self.calibration.hip_height
        if jump > self.settings.max_jump:
            self._abandon()
            return False
        return True


# -- helpers (pure functions of one frame or of a calibration) --------------------------------------------------


def _hip_height(frame: geometry.Frame, max_height_to_shank: float) -> float | None:
    """Lower ankle minus hip centre, vertically: the lower ankle is the foot on the floor in a single-leg squat.

    ``None`` when the legs are not seen, or seen so implausibly that the number would be a glitch.
    """
    legs = [leg for leg in (frame.left, frame.right) if leg is not None]
    if not legs:
        return None
    hip_y = frame.hip_center[1] if frame.hip_center is not None else legs[0].hip[1]
    height = max(leg.ankle[1] for leg in legs) - hip_y
    if height > max_height_to_shank * max(leg.shank_px for leg in legs):
        return None
    return height


def _shank(frame: geometry.Frame) -> float | None:
    lengths = [leg.shank_px for leg in (frame.left, frame.right) if leg is not None]
    return max(lengths) if lengths else None


def _torso_height(frame: geometry.Frame) -> float | None:
    legs = [leg for leg in (frame.left, frame.right) if leg is not None]
    shoulders = frame.shoulder_y
    if not legs or shoulders is None:
        return None
    return sum(leg.hip[1] for leg in legs) / len(legs) - shoulders


def _spread(values: list[float]) -> float:
    """The 10th-90th percentile spread: how far something moved, with a few misplaced frames left out."""
    return float(np.percentile(values, 90) - np.percentile(values, 10))


_RESIZED = 0.25
"""A body whose hip width in the picture changed by more than this share walked toward or away from the camera.
Only the words of a rejection hang on it (see :meth:`RepTracker._not_a_squat`)."""


def _held_for(values: list[tuple[float, float]], seconds: float) -> float:
    """The highest value held for ``seconds``: reached by every frame from some frame to the first one at least
    ``seconds`` later (a frame alone, with the next ones missing, holds nothing)."""
    best = -math.inf
    for i, (t, _) in enumerate(values):
        for j in range(i, len(values)):
            if values[j][0] - t >= seconds - 1e-6:   # (a tenth of a second at 10 fps is 0.09999...)
                best = max(best, min(v for _, v in values[i:j + 1]))
                break
    return best


def _calibrate(t: float, frames: list[geometry.Frame], hip_height: float, previous: Calibration | None,
               held: bool = True) -> Calibration:
    def per_leg(attr: str) -> dict[str, float]:
        out = {}
        for side in LEGS:
            values = [getattr(f.leg(side), attr) for f in frames if f.leg(side) is not None]
            if values:
                out[side] = statistics.median(values)
            elif previous is not None and side in getattr(previous, _CAL_FIELD[attr]):
                out[side] = getattr(previous, _CAL_FIELD[attr])[side]
        return out

    def median(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    lengths = {}
    for side in LEGS:
        values = [f.leg(side).length_px for f in frames if f.leg(side)]
        if values:
            lengths[side] = statistics.median(values)
    return Calibration(t=t, hip_height=hip_height, leg_length=lengths,
                       knee_medial=per_leg("knee_medial_px"), knee_over_ankle=per_leg("knee_over_ankle_px"),
                       fppa=per_leg("fppa_deg"),
                       torso_height=median([_torso_height(f) for f in frames]),
                       stance_ratio=median([f.stance_ratio for f in frames]),
                       hip_width=median([f.hip_width_px for f in frames]),
                       hip_over_feet=median([f.hip_over_feet_px for f in frames]), held=held)


_CAL_FIELD = {"knee_medial_px": "knee_medial", "knee_over_ankle_px": "knee_over_ankle", "fppa_deg": "fppa"}


def _sample(t: float, depth: float, frame: geometry.Frame, cal: Calibration) -> Sample:
    legs: dict[str, LegSample | None] = {}
    for side in LEGS:
        leg = frame.leg(side)
        if leg is None or side not in cal.knee_medial:
            legs[side] = None
            continue
        length = cal.leg_length.get(side) or cal.hip_height
        legs[side] = LegSample(
            medial_shift=(leg.knee_medial_px - cal.knee_medial[side]) / length,
            knee_inside_ankle=(leg.knee_over_ankle_px - cal.knee_over_ankle[side]) / length,
            fppa_change=leg.fppa_deg - cal.fppa[side],
            ankle=(leg.ankle[0] / length, leg.ankle[1] / length),
            confidence=leg.confidence, foot_confidence=leg.foot_confidence)
    shift = None
    if frame.hip_over_feet_px is not None and cal.hip_over_feet is not None:
        shift = (frame.hip_over_feet_px - cal.hip_over_feet) / cal.hip_height
    return Sample(t=t, depth=depth, legs=legs, hip_shift=shift)


def _phases(samples: list[Sample], bottom_share: float) -> list[str]:
    depths = np.array([s.depth for s in samples])
    deep = np.flatnonzero(depths >= bottom_share * depths.max())
    first, last = int(deep[0]), int(deep[-1])
    return ["descent" if i < first else "ascent" if i > last else "bottom" for i in range(len(samples))]

