"""The rack service: camera → pose → rep tracker → judge → events, with the panel at the rack.

``rackwatch run`` runs this on the Pi (``--source picamera``) and anywhere else on a recording
(``--source VIDEO``), with the very same code: only the frame source differs. The wiring of that command (the
broker address, logging, the panel's pins, the camera's frame rate, signals) is :mod:`rackwatch.rack`; this
module is the work itself.

How one frame travels::

    frame source ─► PoseEstimator ─► LiftAnalyzer ─► events ─► sink.publish (the MQTT link: outbox ─► broker)
                                                        └────► panel.show_rep / show_not_counted (lights, buzzer)

The events go to an *event sink* (:mod:`rackwatch.sinks`): the MQTT link on a rack, a list in the tests, JSON
lines on standard output. When the sink is the rack's link (:class:`~rackwatch.sinks.Link`), the service also
takes its commands, shows on the status light whether it is connected, and reports its outbox in the health
events. Starting, draining and closing the link is the caller's (:func:`rackwatch.rack.serve`).

Frame sources (:func:`rackwatch.camera.open_frames`):

``picamera``
    the Pi camera behind a :class:`~rackwatch.camera.LiveCamera`: always the newest frame, stale frames dropped
    and counted (``dropped_frames`` in the health events).
``VIDEO`` with ``speed="max"``
    every frame of the recording, as fast as the model runs (the semantics of ``rackwatch analyze``: the same
    file gives the same reps).
``VIDEO`` with ``speed="realtime"``
    the recording played at its own frame rate, behind a ``LiveCamera`` exactly like the camera, so a machine
    too slow for the video drops frames as the Pi would.

Settings (load, one-rep max, units, exercise) live in one :class:`~rackwatch.load.SettingsStore`. The CLI flags,
the panel's buttons and remote commands all change the store; the service listens to it, hands the new load
and exercise to the analyzer (which closes the set so far) and republishes the state.

What goes out (see docs/mqtt.md and contract/): rep and set events as they happen; the state on start, on every
phase change, rep, set and settings change; a health event every ``health_interval`` seconds and once at the
end. **No frame, image or keypoint ever leaves the device**: only these events.

Shutdown (end of the recording, SIGTERM, SIGINT, ``q`` on the virtual panel) is always the same: the tracker's
last rep, the set summary, the last state and a health event are published.

Under systemd (``Type=notify``, ``WatchdogSec=``) the service says ``READY=1`` once running and ``WATCHDOG=1``
about once a second while frames flow; without ``$NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO

from pydantic import ValidationError

from . import __version__
from . import commands as cmds
from . import events
from .aim import AimSettings, AimSurvey
from .analysis import AnalysisSettings, LiftAnalyzer
from .camera import Frame, FrameSource
from .host import SystemdNotifier, cpu_temperature, throttled
from .load import LifterSettings, SettingsStore
from .panel import Panel
from .pose import Interpreter, PoseEstimator
from .sinks import EventSink, Link

log = logging.getLogger(__name__)


# -- idle mode --------------------------------------------------------------------------------------------------------

class IdleMode:
    """Lets the model rest while nobody is at the rack: which live frames to judge.

    A rack waits most of the day. When no lifter has been seen for ``idle_after_s`` seconds, only ``idle_fps``
    frames a second are judged (one or two are plenty to notice someone stepping in) and the rest are let go
    unjudged, so the Pi runs cool. The first judged frame that sees a lifter brings back the full rate at once:
    a lifter who walks in and squats straight away is seen within ``1 / idle_fps`` seconds, well before the
    rack has calibrated on their standing posture, so no rep is lost.

    Times are the frames' own (:attr:`Frame.t`), so a recording gives the same answer on any machine. Frames let
    go are counted in :attr:`skipped`, not as dropped: nothing fell behind.
    """

    def __init__(self, idle_after_s: float, idle_fps: float):
        self.idle_after_s = idle_after_s
        self.period = 1.0 / idle_fps
        self.idle = False
        self.skipped = 0
        self._last_seen: float | None = None   # frame time the lifter was last seen (or the first frame's)
        self._next_due: float | None = None    # while idle: the time from which the next frame is judged

    @classmethod
    def from_settings(cls, camera: Any) -> "IdleMode":
        """From the ``[camera]`` table (:class:`rackwatch.camera.CameraSettings`)."""
        return cls(camera.idle_after_s, camera.idle_fps)

    def wants(self, t: float) -> bool:
        """Whether the frame taken at ``t`` is to be judged; counts it in :attr:`skipped` when not."""
        if self._last_seen is None:
            self._last_seen = t   # the rack starts awake: whoever is already there is found at full rate
        self.idle = t - self._last_seen >= self.idle_after_s
        if not self.idle:
            return True
        if self._next_due is None or t >= self._next_due:
            # On the beat, not from this frame: a 25 fps camera idling at 2 fps judges every 12th or 13th frame.
            beat = self._next_due + self.period if self._next_due is not None else t + self.period
            self._next_due = beat if beat > t else t + self.period
            return True
        self.skipped += 1
        return False

    def judged(self, t: float, lifter_seen: bool) -> None:
        """What the judged frame at ``t`` showed: a lifter wakes the rack."""
        if lifter_seen:
            self._last_seen = t
            self._next_due = None
            self.idle = False


# -- the service ----------------------------------------------------------------------------------------------------

class RackService:
    """One rack at work: frames in, events out, panel lit; see the module docstring.

    :param sink: where the events go (:mod:`rackwatch.sinks`): the rack's :class:`~rackwatch.mqtt.RackLink`,
        started and closed by the caller, a :class:`~rackwatch.sinks.ListSink` in tests, a
        :class:`~rackwatch.sinks.StdoutSink`.
    :param store: the lifter's settings (load, one-rep max, units, exercise).
    :param interpreter: the pose model (:func:`rackwatch.pose.load_interpreter`).
    :param frames: the frame source (:func:`rackwatch.camera.open_frames`); closed by the service. ``None`` for
        a service that only takes commands (tests).
    :param rack: the rack's id, written into every event.
    :param aim: what counts as a well-aimed camera (the config's ``[aim]``), for the aim in the rack's state.
    :param panel: a :class:`~rackwatch.panel.Panel` (the gpiozero ``RackPanel`` or the terminal's
        ``VirtualPanel``) made by the caller (who closes it); or ``None`` and
    :param pin_factory: a gpiozero pin factory: the service builds a ``RackPanel`` on it from ``panel_settings``
        (and closes it). Tests pass ``MockFactory(pin_class=MockPWMPin)``.
    :param idle: an :class:`IdleMode` for live frames (the camera, a recording played in real time), so that the
        model rests while nobody is at the rack; ``None`` judges every frame (a recording read at full speed:
        the same file gives the same reps).
    """

    def __init__(self, sink: EventSink, store: SettingsStore, interpreter: Interpreter,
                 frames: FrameSource | None = None, *, rack: str, analysis: AnalysisSettings = AnalysisSettings(),
                 aim: AimSettings = AimSettings(),
                 panel: Panel | None = None, pin_factory: Any = None, panel_settings: Any = None,
                 health_interval: float = 5.0, notifier: SystemdNotifier | None = None, out: TextIO | None = None,
                 idle: IdleMode | None = None):
        self.sink = sink
        self.idle = idle
        self.link = sink if isinstance(sink, Link) else None   # commands in, connected, outbox depth
        self.rack = rack
        self.store = store
        self.frames = frames
        self.health_interval = health_interval
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self.out = out if out is not None else sys.stdout
        self.estimator = PoseEstimator(interpreter, analysis.min_score,
                                       bgr_frames=frames is None or frames.channels == "bgr")
        self.analyzer = LiftAnalyzer(rack=self.rack, lifter=store.settings, settings=analysis)
        # The camera's aim, judged as `rackwatch aim` judges it, from the poses the rack finds anyway.
        self._aim = AimSurvey(None, analysis, analyzer=self.analyzer)
        self.aim_settings = aim   # the config's [aim]: what counts as well aimed
        self._aim_calibration: object | None = None
        self._aim_judged_t: float | None = None
        self.camera: tuple[str, str] | None = None   # ("ready" or "needs attention", why) for the state
        self._owns_panel = panel is None and pin_factory is not None
        if self._owns_panel:
            from .panel import PanelSettings, RackPanel
            panel = RackPanel.from_settings(store, panel_settings or PanelSettings(), pin_factory=pin_factory)
        self.panel = panel
        # Guards the analyzer: frames arrive on this thread, settings changes on the command worker's or gpiozero's.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = self._closed = False
        self._state_key: tuple | None = None
        self._seen_published: bool | None = None
        self._seen_since: float | None = None
        self.counts = {"frames": 0, "rep": 0, "set": 0, "state": 0, "health": 0}
        self.verdicts: list[str] = []
        # Time spent judging and handing events to the sink, for `rackwatch bench`; a clock read or two a frame.
        self.analysis_s = self.publish_s = 0.0
        self._window_start = time.monotonic()
        self._window_frames = 0     # frames taken from the source, judged or let go while idle
        self._window_judged = 0     # frames the model looked at
        self._window_infer_s = 0.0

    # -- life cycle ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Start, judge every frame until the source ends or :meth:`stop` is called, shut down cleanly; 0."""
        self.start()
        try:
            self.process()
        finally:
            self.close()
        return 0

    def start(self) -> "RackService":
        """Take commands, publish the state; ``READY=1`` to systemd. Start the link after this, so that no
        command that waited at the broker comes in before the service takes commands."""
        self._started = True
        if self.link is not None:
            self.link.on_command = self.handle_command
        self.store.add_listener(self._settings_changed)
        with self._lock:
            self._publish_state()
        self._set_panel_status(False)
        self.notifier.notify("READY=1\nSTATUS=judging reps")
        return self

    def stop(self) -> None:
        """Ask the frame loop to end after the current frame (safe from a signal handler or any thread)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def process(self) -> None:
        """Judge frames until the source ends or :meth:`stop` is called."""
        if self.frames is None:
            self._stop.wait()
            return
        for frame in self.frames.frames():
            if self._stop.is_set():
                break
            if self.idle is not None and not self.idle.wants(frame.t):
                # Frames still flow and count in the health's fps: the camera is fine, only the model rests (an
                # idle rack must not look like a slow one on the dashboard).
                self._window_frames += 1
                self.notifier.watchdog()
                continue
            self.handle_frame(frame)
            if self.idle is not None:
                self.idle.judged(frame.t, self.analyzer.lifter_seen)

    def handle_frame(self, frame: Frame) -> list[dict]:
        """One frame through the pipeline; returns the events it caused (already published)."""
        begun = time.perf_counter()
        pose = self.estimator.estimate(frame.image)
        self._window_infer_s += time.perf_counter() - begun
        self._window_frames += 1
        self._window_judged += 1
        self.counts["frames"] += 1
        with self._lock:
            begun = time.perf_counter()
            new = self.analyzer.update(frame.t, pose, frame.image.shape[0])
            self._watch_aim(frame, pose, new)
            self.analysis_s += time.perf_counter() - begun
            for event in new:
                self._emit(event)
            self._publish_state_if_changed(frame.t)
            # What the dashboard was told, not this frame's raw answer: a frame or two without the lifter (the
            # model missing the hips, a hand over the lens) must not blink the status light either.
            seen = bool(self._seen_published)
        self._set_panel_status(seen)
        if time.monotonic() - self._window_start >= self.health_interval:
            self.publish_health()
        self.notifier.watchdog()
        return new

    def close(self) -> None:
        """Close the set and publish what is left (the last rep, the set summary, the state, a health event);
        release the frame source and the panel the service built. Safe twice. The link is the caller's."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self.notifier.notify("STOPPING=1")
        if self.frames is not None:
            try:
                self.frames.close()
            except Exception:
                log.exception("could not close the frame source")
        if self._started:
            with self._lock:
                # The last reps first, with the state that counts them (a rep is handed on a moment after its
                # end, so the last one may only come now), then the set's summary and the state without a set.
                last = self.analyzer.last_reps()
                for event in last:
                    self._emit(event)
                if last:
                    self._publish_state()
                for event in self.analyzer.end_set():
                    self._emit(event)
                self._publish_state()
            if self._window_frames:
                self.publish_health()
            self.store.remove_listener(self._settings_changed)
            if self.link is not None:
                self.link.on_command = None
        if self._owns_panel and self.panel is not None:
            self.panel.close()
        self.notifier.close()

    def __enter__(self) -> "RackService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands and settings ---------------------------------------------------------------------------------------

    def handle_command(self, command: cmds.Command) -> None:
        """A remote command (the link's command worker thread): applied to the store; :class:`CommandRejected`
        says why not."""
        try:
            if isinstance(command, cmds.SetLoad):
                self.store.set_load(command.value, command.units)
            elif isinstance(command, cmds.SetOneRepMax):
                self.store.set_one_rm(command.value, command.units)
            elif isinstance(command, cmds.SetUnits):
                self.store.set_units(command.units)
            elif isinstance(command, cmds.SetExercise):
                self.store.set_exercise(command.exercise, command.working_leg)
            elif isinstance(command, cmds.Identify):
                if self.panel is None:
                    raise cmds.CommandRejected("this rack has no panel to blink")
                self.panel.identify(command.seconds)
            else:
                raise cmds.CommandRejected(f"this rack does not know what to do with {command.name!r}")
        except cmds.CommandRejected:
            raise
        except ValueError as exc:   # the store refused the value
            raise cmds.CommandRejected(str(exc)) from None

    def _settings_changed(self, settings: LifterSettings) -> None:
        with self._lock:
            for event in self.analyzer.change(settings):
                self._emit(event)
            self._publish_state()

    # -- publishing ------------------------------------------------------------------------------------------------

    def _publish(self, event: events.Event) -> None:
        begun = time.perf_counter()
        self.sink.publish(event)
        self.publish_s += time.perf_counter() - begun

    def _emit(self, event: events.Event) -> None:
        self._publish(event)
        kind = event.type
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if isinstance(event, events.RepEvent):
            self.verdicts.append(event.verdict)
            self._show_on_panel(event)
            self._say(f"rep {event.rep}: {event.verdict} (knee cave {event.severity or 'not judged'}, "
                      f"depth {event.depth:.2f})")
        elif isinstance(event, events.NotCountedEvent):
            self._show_on_panel(event)
            self._say(f"not counted: {event.reason}")
        elif isinstance(event, events.SetEvent):
            self._say(f"set: {event.reps} reps, {event.clean_reps} clean. {event.advice.text}")

    def _show_on_panel(self, event: events.RepEvent | events.NotCountedEvent) -> None:
        """A rep's verdict, or a movement not counted, on the panel's lights and buzzer."""
        if self.panel is None:
            return
        try:
            if isinstance(event, events.RepEvent):
                self.panel.show_rep(event)
            else:
                self.panel.show_not_counted(event)
        except Exception:   # a broken light must not stop the judging
            log.exception("the panel could not show the %s event %s", event.type, event.id)

    def _publish_state(self) -> None:
        state = self.analyzer.state()
        extra: dict[str, Any] = {"idle": self._idle_now}
        if self.camera is not None:
            extra.update(camera=self.camera[0], camera_reason=self.camera[1])
        state = state.model_copy(update=extra)
        self._publish(state)
        self.counts["state"] += 1
        self._state_key = (state.phase, state.set_id, state.reps_in_set, self.camera, state.idle)
        self._seen_published = state.lifter_seen
        self._seen_since = None

    @property
    def _idle_now(self) -> bool | None:
        return self.idle.idle if self.idle is not None else None

    def _publish_state_if_changed(self, t: float, seen_debounce_s: float = 0.5) -> None:
        a = self.analyzer
        if (a.phase, a.set_id, a.reps_in_set, self.camera, self._idle_now) != self._state_key:
            self._publish_state()
        elif a.lifter_seen != self._seen_published:
            # The lifter coming or going must hold for a moment, so a missed frame does not flood the broker.
            if self._seen_since is None:
                self._seen_since = t
            elif t - self._seen_since >= seen_debounce_s:
                self._publish_state()
        else:
            self._seen_since = None

    # -- the camera's aim -----------------------------------------------------------------------------------------

    AIM_WINDOW_S = 30.0
    """The aim is judged on the frames with someone in them of the last this many seconds..."""
    AIM_FIRST_S = 2.0
    AIM_EVERY_S = 10.0
    """...each time the lifter has stood still, and at the latest ``AIM_FIRST_S`` after someone came into view,
    then every ``AIM_EVERY_S`` while someone is there (a lifter whose feet are cut off never stands still for
    the rack: it cannot see their feet)."""

    def _watch_aim(self, frame: Frame, pose: Any, new: list) -> None:
        """Note the frame for the aim while someone is in view; judge the aim as `rackwatch aim` does.

        The lifter standing still is when the rack calibrates on their standing posture: the moment the view
        (feet in the picture, camera square to the lifter) can best be told. A few numbers a frame are kept; the
        judging itself runs once per calibration or ``AIM_EVERY_S``, not per frame.
        """
        if not self._aim.note(frame.t, pose, frame.image, new, only_with_lifter=True):
            return
        calibration = self.analyzer.tracker.calibration
        since = self._aim_judged_t if self._aim_judged_t is not None else self._aim.looks[0].t
        wait = self.AIM_EVERY_S if self._aim_judged_t is not None else self.AIM_FIRST_S
        if (calibration is None or calibration is self._aim_calibration) and frame.t - since < wait:
            return
        self._aim_calibration, self._aim_judged_t = calibration, frame.t
        fps = self.frames.fps if self.frames is not None else self.aim_settings.min_fps
        report = self._aim.report(fps, self.aim_settings)
        self.camera = ("ready" if report.camera_ready else "needs attention", report.reason)
        self._aim.forget_before(frame.t - self.AIM_WINDOW_S)

    def publish_health(self) -> events.HealthEvent:
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-6)
        frames, judged = self._window_frames, self._window_judged
        event = events.HealthEvent(
            rack=self.rack, fps=frames / elapsed,
            inference_ms=1000.0 * self._window_infer_s / judged if judged else 0.0,
            dropped_frames=self.frames.dropped if self.frames is not None else 0, cpu_temp_c=cpu_temperature(),
            throttled=throttled(), outbox_depth=self.link.outbox_depth if self.link is not None else 0,
            software_version=__version__, **(self.link.losses() if self.link is not None else {}))
        self._window_start, self._window_frames, self._window_judged, self._window_infer_s = now, 0, 0, 0.0
        self._publish(event)
        self.counts["health"] += 1
        return event

    # -- the status light ----------------------------------------------------------------------------------------

    def _set_panel_status(self, lifter_seen: bool) -> None:
        if self.panel is not None:
            try:
                self.panel.set_status(lifter_seen=lifter_seen, broker_ok=self.link is None or self.link.connected,
                                      fault=False)
            except Exception:
                log.exception("the panel could not show the status")

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.out, flush=True)
        except (OSError, ValueError):
            pass
