"""From poses to events: the squat analysis of one rack, one frame at a time.

:class:`LiftAnalyzer` strings the pure stages together (smoothing → geometry → rep tracker → judge) and decides
where a set ends. A movement the rep tracker turns away (a jump, a lunge, a rep whose start was not seen) becomes a
:class:`~rackwatch.events.NotCountedEvent` when a rep would have been handed on, set or no set, and is counted in
the summary of the set under way. It does no I/O and knows nothing of cameras or MQTT, so ``rackwatch analyze``
on a recording and ``rackwatch run`` on a live rack produce the same events from the same poses.

A set ends when the lifter has been gone (or standing without a rep) for ``set_rest_s``, when the load or the
exercise changes, or when the recording ends. Changes that follow each other within ``change_burst_s``
(a burst: the panel's button pressed several times, a dashboard slider, a flood of commands) end the set once:
the set their first change started carries on with the newest settings, instead of being split at every change.
"""

from __future__ import annotations

import heapq

from pydantic import Field

from . import geometry
from .events import Event, NotCountedEvent, RepEvent, StateEvent
from .judge import JudgeSettings, SetJudge
from .load import LifterSettings
from .pose import DEFAULT_MIN_SCORE, Pose
from .reps import Rejection, Rep, RepSettings, RepTracker
from .settings import Settings
from .smoothing import OneEuroSettings, PoseSmoother


class AnalysisSettings(Settings):
    """The ``[analysis]`` table of the config file, with its sub-tables for each stage."""

    reps: RepSettings = RepSettings()
    judge: JudgeSettings = JudgeSettings()
    smoothing: OneEuroSettings = OneEuroSettings()
    min_score: float = Field(DEFAULT_MIN_SCORE, gt=0, lt=1)
    """A keypoint scored below this by the model counts as not seen."""
    set_rest_s: float = Field(45.0, ge=1, le=3600)
    """A pause longer than this between reps starts a new set."""
    change_burst_s: float = Field(5.0, ge=0, le=600)
    """Changes of the lifter's settings within this many seconds of each other (a button pressed several times, a
    flood of commands) end the set once, not at every change."""


class LiftAnalyzer:
    """Feed it poses; it hands back typed rep, not-counted and set events as they happen."""

    def __init__(self, rack: str | None = None, lifter: LifterSettings = LifterSettings(),
                 settings: AnalysisSettings = AnalysisSettings()):
        self.rack = rack
        self.settings = settings
        self.lifter = lifter
        self._smoother = PoseSmoother(settings.smoothing, settings.min_score)
        self.tracker = RepTracker(settings.reps)
        self.tracker.single_leg = lifter.exercise == "single-leg"   # its free foot moves: see RepTracker
        self._set: SetJudge | None = None
        self._last_rep_t: float | None = None
        self._t: float | None = None               # the time of the newest frame seen
        self._last_change_t: float | None = None   # the frame time of the latest change of settings

    @property
    def phase(self) -> str:
        return self.tracker.phase

    @property
    def lifter_seen(self) -> bool:
        return self.tracker.lifter_seen

    @property
    def set_id(self) -> str | None:
        return self._set.set_id if self._set else None

    @property
    def reps_in_set(self) -> int:
        return len(self._set.reps) if self._set else 0

    def update(self, t: float, pose: Pose, frame_height: float) -> list[Event]:
        """Events (rep or not counted, and set when one ends) caused by the pose seen at time ``t``."""
        out: list[Event] = []
        self._t = t
        if self._set and self._last_rep_t is not None and t - self._last_rep_t > self.settings.set_rest_s:
            out += self.end_set()
        # Plain floats from here on: on 17 joints they are several times faster than NumPy.
        score = pose.score.tolist()
        xy = self._smoother.smooth(t, pose.xy.tolist(), score, frame_height)
        frame = geometry.measure_points(xy, score, self.settings.min_score)
        out += self._hand_on(self.tracker.update(t, frame))
        if frame.left is None and frame.right is None:
            # No leg seen: the model is searching the whole picture, not following the lifter. Joints it scores
            # here (often a few, placed roughly) must not seed the smoothing: it would pull the lifter's first
            # true sightings toward them for half a second, an apparent descent or a stand-in calibration far
            # too tall (docs/valgus.md, "A lifter small in the frame"). The filter starts afresh where the lifter
            # is found.
            self._smoother.reset()
        return out

    def change(self, lifter: LifterSettings) -> list[Event]:
        """The lifter entered a new load, one-rep max or exercise: the set so far ends, the next one uses these.

        A change within ``change_burst_s`` of the previous one belongs to the same burst: the set that burst
        began (if a rep came since) is not ended again, it carries on with these settings.
        """
        # A rep just ended belongs to the set so far: the tracker hands it on now (someone at the panel is not
        # jumping), not ``plant_after_s`` later into the next set.
        done = self._hand_on(self.tracker.release_held())
        in_burst = (self._t is not None and self._last_change_t is not None
                    and self._t - self._last_change_t < self.settings.change_burst_s)
        self._last_change_t = self._t
        self.lifter = lifter
        self.tracker.single_leg = lifter.exercise == "single-leg"
        if in_burst and self._set is not None:
            self._set.lifter = lifter
            return done
        return done + self.end_set()

    def finish(self) -> list[Event]:
        """The recording ended: judge what the tracker can still tell, and close the set."""
        return self.last_reps() + self.end_set()

    def last_reps(self) -> list[Event]:
        """The recording ends: the reps the tracker can still tell (one waiting out ``plant_after_s``, one a frame
        short of its end), judged; the set stays open (:meth:`end_set` closes it)."""
        return self._hand_on(self.tracker.finish())

    def end_set(self) -> list[Event]:
        summary = self._set.summary() if self._set else None
        self._set = None
        self._last_rep_t = None
        return [summary] if summary else []

    def state(self) -> StateEvent:
        """The rack's current state event."""
        return StateEvent(rack=self.rack, phase=self.phase, lifter_seen=self.lifter_seen,
                          load=self.lifter.load_info(), exercise=self.lifter.exercise, set_id=self.set_id,
                          reps_in_set=self.reps_in_set)

    def _hand_on(self, reps: list[Rep]) -> list[Event]:
        """The tracker's reps judged, and the movements it turned away since, as events in the order they ended."""
        if not reps and not self.tracker.rejected:   # nearly every frame: nothing ended (no lists, no merge)
            return []
        return [self._judge(item) if isinstance(item, Rep) else self._not_counted(item)
                for item in heapq.merge(reps, self.tracker.take_rejected(), key=lambda item: item.t_end)]

    def _not_counted(self, rejection: Rejection) -> NotCountedEvent:
        if self._set is not None:
            self._set.not_counted[rejection.why] += 1
        return NotCountedEvent(rack=self.rack, set_id=self.set_id, exercise=self.lifter.exercise,
                               t_start=rejection.t_start, t_end=rejection.t_end, why=rejection.why,
                               reason=rejection.reason)

    def _judge(self, rep: Rep) -> RepEvent:
        if self._set is None:
            self._set = SetJudge(self.rack, self.lifter, self.settings.judge)
        self._last_rep_t = rep.t_end
        return self._set.judge(rep)
