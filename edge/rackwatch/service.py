"""The rack service: camera → pose → rep tracker → judge → MQTT, with the panel at the rack.

``rackwatch run`` runs this on the Pi (``--source picamera``) and anywhere else on a recording
(``--source VIDEO``), with the very same code: only the frame source differs.

How one frame travels::

    frame source ─► PoseEstimator ─► LiftAnalyzer ─► events ─► RackLink.publish (outbox on disk ─► broker)
                                                        └────► panel.show_rep (lights, buzzer)

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
the panel's buttons and remote MQTT commands all change the store; the service listens to it, hands the new
load and exercise to the analyzer (which closes the set so far) and republishes the retained state.

What goes out (see docs/mqtt.md and contract/): rep and set events as they happen; the retained state on
start, on every phase change, rep, set and settings change; a health event every ``health_interval`` seconds
and once at the end. **No frame, image or keypoint ever leaves the device**: only these events.

Shutdown (end of the recording, SIGTERM, SIGINT, ``q`` on the virtual panel) is always the same: the tracker's
last rep and the set summary are published, the outbox is given ``drain_timeout`` seconds to reach the broker
(what is left stays on disk for the next start), ``offline`` is published and the link closes.

Under systemd (``Type=notify``, ``WatchdogSec=``) the service says ``READY=1`` once running and ``WATCHDOG=1``
about once a second while frames flow; without ``$NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, TextIO
from urllib.parse import urlsplit

from . import commands as cmds
from . import events
from .analysis import AnalysisSettings, LiftAnalyzer
from .camera import Frame, FrameSource, open_frames
from .config import ConfigError, settings_from_table
from .host import SystemdNotifier, cpu_temperature, throttled
from .load import LifterSettings, SettingsStore
from .mqtt import LinkSettings, RackLink, check_tls_files
from .outbox import Outbox, OutboxError
from .pose import Interpreter, PoseEstimator, measure_invoke_ms

log = logging.getLogger(__name__)

# -- configuration: the broker URL and the [mqtt] table ---------------------------------------------------------------

def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://HOST[:PORT]`` (plain, default port 1883) or ``mqtts://HOST[:PORT]`` (TLS, default 8883) →
    ``(host, port, tls)``; :class:`ConfigError` saying what is wrong otherwise."""
    example = "Give it as mqtt://HOST:PORT, e.g. mqtt://broker.gym.lan:1883 (or mqtts://HOST:8883 for TLS)."
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--broker {url!r} is not a usable broker address ({exc}). {example}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ConfigError(f"--broker {url!r} is not a usable broker address: it must start with mqtt:// or "
                          f"mqtts://. {example}")
    if not parts.hostname:
        raise ConfigError(f"--broker {url!r} names no host. {example}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("put the broker's username and password in --username/--password (or the [mqtt] "
                          "table of the config file), not in the --broker address.")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--broker {url!r} has a path or query, which MQTT does not use. {example}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port if port is not None else (8883 if tls else 1883), tls


def link_settings(rack: str, state_dir: str | Path, table: Mapping[str, Any] | None = None, *,
                  broker: str | None = None, username: str | None = None,
                  password: str | None = None) -> LinkSettings:
    """The link's settings from the config file's ``[mqtt]`` table, overridden by the command line.

    Every key of the table is a :class:`~rackwatch.mqtt.LinkSettings` field (``host``, ``port``, ``username``,
    ``password``, ``tls_ca`` ...) except ``rack`` and ``state_dir``, which come from ``[rack]`` and the command
    line; a misspelt key or a value of the wrong type is a :class:`ConfigError`.
    """
    values = dict(table or {})
    if broker is not None:
        host, port, tls = parse_broker_url(broker)
        values.update(host=host, port=port)
        if tls and not values.get("tls_ca"):
            raise ConfigError(f"--broker {broker} asks for TLS: set tls_ca in the [mqtt] table of the config file "
                              "(the CA certificate that signed the broker's certificate).")
        if not tls:
            for key in ("tls_ca", "tls_cert", "tls_key"):
                values.pop(key, None)
    if username is not None:
        values["username"] = username
    if password is not None:
        values["password"] = password
    return settings_from_table(LinkSettings, values, "[mqtt]", fixed={"rack": rack, "state_dir": Path(state_dir)})


# -- the camera's frame rate ------------------------------------------------------------------------------------------

CAMERA_HEADROOM = 1.15
"""Frame period ÷ model time: room for the work around the model (a few per cent on a Pi) and for jitter."""


def camera_fps(wanted: float, invoke_ms: float) -> float:
    """The camera's frame rate: ``wanted``, but no faster than a model call of ``invoke_ms`` keeps up with.

    Frames the model has no time for would only be captured to be dropped, costing the CPU and the bus.
    """
    return min(wanted, 1000.0 / (invoke_ms * CAMERA_HEADROOM))


# -- the service ----------------------------------------------------------------------------------------------------

class RackService:
    """One rack at work: frames in, events out, panel lit; see the module docstring.

    :param link: the rack's MQTT link, not started yet; the service starts and closes it, and takes its commands.
    :param store: the lifter's settings (load, one-rep max, units, exercise).
    :param interpreter: the pose model (:func:`rackwatch.pose.load_interpreter`).
    :param frames: the frame source (:func:`open_frames`); closed by the service. ``None`` for a service that
        only takes commands (tests).
    :param panel: a :class:`~rackwatch.panel.RackPanel` or :class:`~rackwatch.virtual_panel.VirtualPanel` made
        by the caller (who closes it); or ``None`` and
    :param pin_factory: a gpiozero pin factory: the service builds a ``RackPanel`` on it from ``panel_settings``
        (and closes it). Tests pass ``MockFactory(pin_class=MockPWMPin)``.
    :param on_event: called with every event published (after it is safely in the outbox).
    """

    def __init__(self, link: RackLink, store: SettingsStore, interpreter: Interpreter,
                 frames: FrameSource | None = None, *, analysis: AnalysisSettings = AnalysisSettings(),
                 panel: Any = None, pin_factory: Any = None, panel_settings: Any = None,
                 health_interval: float = 5.0, drain_timeout: float = 10.0, connect_grace: float = 2.0,
                 notifier: SystemdNotifier | None = None, on_event: Callable[[dict], None] | None = None,
                 out: TextIO | None = None, err: TextIO | None = None):
        self.link = link
        self.rack = link.settings.rack
        self.store = store
        self.frames = frames
        self.health_interval = health_interval
        self.drain_timeout = drain_timeout
        self.connect_grace = connect_grace
        self.notifier = notifier if notifier is not None else SystemdNotifier()
        self.on_event = on_event
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.estimator = PoseEstimator(interpreter, analysis.min_score,
                                       bgr_frames=frames is None or frames.channels == "bgr")
        self.analyzer = LiftAnalyzer(rack=self.rack, lifter=store.settings, settings=analysis)
        self._owns_panel = panel is None and pin_factory is not None
        if self._owns_panel:
            from .panel import PanelSettings, RackPanel
            panel = RackPanel.from_settings(store, panel_settings or PanelSettings(), pin_factory=pin_factory)
        self.panel = panel
        # Guards the analyzer: frames arrive on this thread, settings changes on paho's or gpiozero's.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = self._closed = False
        self._state_key: tuple | None = None
        self._seen_published: bool | None = None
        self._seen_since: float | None = None
        self._broker_warned = False
        self._was_connected = False
        self.counts = {"frames": 0, "rep": 0, "set": 0, "state": 0, "health": 0}
        self.verdicts: list[str] = []
        self._window_start = time.monotonic()
        self._window_frames = 0
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
        """Connect (in the background), take commands, publish the state; ``READY=1`` to systemd."""
        self._started = True
        self.link.on_command = self.handle_command
        self.store.add_listener(self._settings_changed)
        self.link.start()
        with self._lock:
            self._publish_state()
        self._set_panel_status(False)
        if not self.link.wait_connected(self.connect_grace):
            self._warn_broker()
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
            self.handle_frame(frame)

    def handle_frame(self, frame: Frame) -> list[dict]:
        """One frame through the pipeline; returns the events it caused (already published)."""
        begun = time.perf_counter()
        pose = self.estimator.estimate(frame.image)
        self._window_infer_s += time.perf_counter() - begun
        self._window_frames += 1
        self.counts["frames"] += 1
        with self._lock:
            new = self.analyzer.update(frame.t, pose, frame.image.shape[0])
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
        """Close the set, publish what is left, give the outbox time to drain, say ``offline``. Safe twice."""
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
                for event in self.analyzer.finish():
                    self._emit(event)
                self._publish_state()
            if self._window_frames:
                self.publish_health()
            self.link.wait_drained(self.drain_timeout)
            self.store.remove_listener(self._settings_changed)
            self.link.on_command = None
            self.link.close()
            for line in self.link.shutdown_report():   # what did not get through, and why; losses of this run
                print(f"rackwatch: warning: {line}", file=self.err, flush=True)
        if self._owns_panel and self.panel is not None:
            self.panel.close()
        self.notifier.close()

    def __enter__(self) -> "RackService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands and settings ---------------------------------------------------------------------------------------

    def handle_command(self, command: cmds.Command) -> None:
        """A remote command (paho's thread): applied to the store; :class:`CommandRejected` says why not."""
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

    def _emit(self, event: dict) -> None:
        self.link.publish(event)
        kind = event["type"]
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "rep":
            self.verdicts.append(event["verdict"])
            if self.panel is not None:
                try:
                    self.panel.show_rep(event)
                except Exception:   # a broken light must not stop the judging
                    log.exception("the panel could not show rep %s", event.get("rep"))
            self._say(f"rep {event['rep']}: {event['verdict']} (knee cave {event['severity'] or 'not judged'}, "
                      f"depth {event['depth']:.2f})")
        elif kind == "set":
            self._say(f"set: {event['reps']} reps, {event['clean_reps']} clean. {event['advice']['text']}")
        if self.on_event is not None:
            self.on_event(event)

    def _publish_state(self) -> None:
        state = self.analyzer.state()
        self.link.publish(state)
        self.counts["state"] += 1
        self._state_key = (state["phase"], state["set_id"], state["reps_in_set"])
        self._seen_published = state["lifter_seen"]
        self._seen_since = None
        if self.on_event is not None:
            self.on_event(state)

    def _publish_state_if_changed(self, t: float, seen_debounce_s: float = 0.5) -> None:
        a = self.analyzer
        if (a.phase, a.set_id, a.reps_in_set) != self._state_key:
            self._publish_state()
        elif a.lifter_seen != self._seen_published:
            # The lifter coming or going must hold for a moment, so a missed frame does not flood the broker.
            if self._seen_since is None:
                self._seen_since = t
            elif t - self._seen_since >= seen_debounce_s:
                self._publish_state()
        else:
            self._seen_since = None

    def publish_health(self) -> dict:
        now = time.monotonic()
        elapsed = max(now - self._window_start, 1e-6)
        frames = self._window_frames
        event = events.health_event(
            self.rack, fps=frames / elapsed, inference_ms=1000.0 * self._window_infer_s / frames if frames else 0.0,
            dropped_frames=int(getattr(self.frames, "dropped", 0) or 0), cpu_temp_c=cpu_temperature(),
            throttled=throttled(), outbox_depth=self.link.outbox_depth, **self.link.losses())
        self._window_start, self._window_frames, self._window_infer_s = now, 0, 0.0
        self.link.publish(event)
        self.counts["health"] += 1
        if self.on_event is not None:
            self.on_event(event)
        return event

    # -- the broker and the status light ---------------------------------------------------------------------

    def _set_panel_status(self, lifter_seen: bool) -> None:
        connected = self.link.connected
        if connected and not self._was_connected and self._broker_warned:
            print(f"rackwatch: reached the broker at {self.link.settings.host}:{self.link.settings.port}; "
                  "sending the waiting events", file=self.err, flush=True)
            self._broker_warned = False
        self._was_connected = connected
        if self.panel is not None:
            try:
                self.panel.set_status(lifter_seen=lifter_seen, broker_ok=connected, fault=False)
            except Exception:
                log.exception("the panel could not show the status")

    def _warn_broker(self) -> None:
        if self._broker_warned:
            return
        self._broker_warned = True
        s = self.link.settings
        print(f"rackwatch: no connection to the broker at {s.host}:{s.port} yet; judging goes on, and the events "
              f"wait in the outbox in {s.state_dir} until it answers.", file=self.err, flush=True)

    def _say(self, line: str) -> None:
        try:
            print(line, file=self.out, flush=True)
        except (OSError, ValueError):
            pass


# -- the `rackwatch run` command ----------------------------------------------------------------------------------

class _SameMessageOnce(logging.Filter):
    """Lets a logger's message through once until a different one comes: a broker that stays away for an hour
    is reported once, not at every reconnect attempt."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._last.get(record.name) == message:
            return False
        self._last[record.name] = message
        return True


def _setup_logging() -> None:
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rackwatch: %(levelname)s: %(message)s"))
    handler.addFilter(_SameMessageOnce())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("rackwatch").setLevel(logging.INFO)


def _real_pin_factory() -> Any:
    """gpiozero's pin factory when this machine has GPIO pins (a Pi), else ``None``."""
    try:
        from gpiozero import Device
        from gpiozero.exc import BadPinFactory
    except ImportError:
        return None
    if Device.pin_factory is not None:
        return Device.pin_factory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # gpiozero warns about every library it tries
        try:
            return Device._default_pin_factory()
        except (BadPinFactory, ImportError, OSError, RuntimeError):
            return None


def run_command(args: Any, config: Any, load_interpreter: Callable[[], Interpreter]) -> int:
    """``rackwatch run``: everything from the parsed arguments and the config to a clean exit."""
    rack = args.rack or config.rack.id
    state_dir = Path(args.state_dir or config.rack.state_dir)
    password = args.password if args.password is not None else os.environ.get("RACKWATCH_MQTT_PASSWORD")
    settings = link_settings(rack, state_dir, config.extra.get("mqtt"), broker=args.broker,
                             username=args.username, password=password)
    check_tls_files(settings)   # a missing CA file named before the camera and the model are opened
    panel_table = config.extra.get("panel")
    panel_settings = None
    if panel_table is not None or args.virtual_panel:
        from .panel import PanelSettings
        try:
            panel_settings = PanelSettings.from_table(panel_table)
        except ValueError as exc:
            raise ConfigError(f"{args.config}: {exc}") from None
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".rackwatch-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"The state folder {state_dir} cannot be written ({exc.strerror or exc}). It keeps the "
                          "outbox and the lifter's settings; give a writable one with --state-dir.") from None
    _setup_logging()
    try:   # first: it holds the state folder's lock, so a second rackwatch on this folder stops here
        outbox = Outbox(state_dir, max_events=settings.outbox_max)
    except OutboxError as exc:
        raise ConfigError(str(exc)) from None

    store = SettingsStore(state_dir)
    try:
        if args.units:
            store.set_units(args.units)
        if args.load is not None:
            store.set_load(args.load)
        if args.one_rm is not None:
            store.set_one_rm(args.one_rm)
        if args.exercise:
            store.set_exercise(args.exercise)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None

    interpreter = load_interpreter()
    camera = config.camera
    fps = camera.fps
    if args.source == "picamera":
        invoke_ms = measure_invoke_ms(interpreter)
        fps = camera_fps(camera.fps, invoke_ms)
        if fps < camera.fps:
            print(f"rackwatch: the model takes {invoke_ms:.0f} ms a frame on this machine; the camera is capped at "
                  f"{fps:.1f} fps ([camera] fps asks for {camera.fps:g})", file=sys.stderr, flush=True)
    frames = open_frames(args.source, args.speed, (camera.width, camera.height), fps)
    link = RackLink(settings, outbox=outbox)
    panel = None
    service: RackService | None = None
    if args.virtual_panel:
        from .virtual_panel import VirtualPanel
        panel = VirtualPanel(store, timing=panel_settings.timing, buzzer_enabled=panel_settings.buzzer,
                             on_quit=lambda: service and service.stop())
    elif panel_settings is not None and panel_settings.enabled:
        pin_factory = _real_pin_factory()
        if pin_factory is None:
            print("rackwatch: the config has a [panel] but this machine has no GPIO pins; running without a "
                  "panel (try --virtual-panel).", file=sys.stderr)
        else:
            from .panel import RackPanel
            try:
                panel = RackPanel.from_settings(store, panel_settings, pin_factory=pin_factory)
            except Exception as exc:   # a rack that judges without its lights beats one that does not start
                print(f"rackwatch: the panel could not be set up ({type(exc).__name__}: {exc}); running without "
                      "it. Check the wiring and the [panel.pins] of the config.", file=sys.stderr)
    service = RackService(link, store, interpreter, frames, analysis=config.analysis, panel=panel,
                          drain_timeout=args.drain_timeout, health_interval=args.health_every)

    def on_signal(signum, _frame):
        if service.stopping:   # asked twice: stop waiting for the broker
            raise KeyboardInterrupt
        print(f"rackwatch: {signal.Signals(signum).name}: closing the set and shutting down", file=sys.stderr,
              flush=True)
        service.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    s = store.settings
    source = "the Pi camera" if args.source == "picamera" else f"{args.source} ({args.speed} speed)"
    print(f"rackwatch: rack {rack} judging {source}; load {_text(s.load, s.units)}, one-rep max "
          f"{_text(s.one_rm, s.units)}, {s.exercise}; events to {settings.host}:{settings.port}", file=sys.stderr,
          flush=True)
    try:
        if args.virtual_panel:
            panel.start()
        service.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if panel is not None:
            panel.close()
        outbox.close()
    c = service.counts
    print(f"rackwatch: {c['frames']} frames, {c['rep']} reps, {c['set']} sets published", file=sys.stderr)
    return 0


def _text(value: float | None, units: str) -> str:
    return "not set" if value is None else f"{value:g} {units}"
