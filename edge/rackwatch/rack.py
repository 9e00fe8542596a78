"""``rackwatch run``: a rack put together from its parts, run until it is told to stop, and shut down cleanly.

:mod:`rackwatch.service` is the work (frames in, events out, panel lit); this module is the wiring around it,
everything that only a real run needs:

* the broker: ``--broker mqtt://HOST:PORT`` and the config's ``[mqtt]`` table become the link's settings
  (:func:`link_settings`); a warning when the broker does not answer at start, a line when it does again;
* the state folder and the lifter's settings given on the command line;
* the camera's frame rate, capped at what the model keeps up with on this machine (:func:`camera_fps`), and
  idle mode (:class:`~rackwatch.service.IdleMode`) for live frames, the camera's or a recording's in real time;
* the panel: on a Pi with a ``[panel]`` table, the gpiozero panel on the Pi's pins (:func:`host.gpio_pin_factory`);
  ``--virtual-panel`` for the terminal's stand-in;
* logging, and SIGTERM/SIGINT, which close the set and shut down (a second one stops waiting for the broker);
* the order of start and shutdown (:func:`serve`): the service takes commands before the link connects, and
  at the end its last events get ``--drain-timeout`` seconds to reach the broker before the link says
  ``offline``; what is left stays in the outbox for the next start;
* a rack that can no longer publish stops: if one of its threads dies (the MQTT network thread, the outbox
  pump), :func:`serve` stops the service and the command exits 1, so that systemd starts it again, rather than
  judging on while nothing reaches the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TextIO
from urllib.parse import urlsplit

from pydantic import ValidationError

from .camera import open_frames
from .config import ConfigError
from .host import gpio_pin_factory
from .load import AboveOneRepMax, SettingsStore, format_weight
from .mqtt import LinkSettings, MqttSettings, RackLink, check_tls_files
from .outbox import Outbox, OutboxError
from .pose import Interpreter, measure_invoke_ms
from .service import IdleMode, RackService
from .settings import problems

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


def link_settings(rack: str, state_dir: str | Path, mqtt: MqttSettings | None = None, *,
                  broker: str | None = None, username: str | None = None,
                  password: str | None = None) -> LinkSettings:
    """The link's one settings object: the config file's ``[mqtt]`` table (already checked when the file was
    loaded), the rack's id and state folder, and the command line's broker, username and password over them.

    A value from the command line that the link cannot use is a :class:`ConfigError` naming the flag.
    """
    values = (mqtt or MqttSettings()).model_dump()
    if broker is not None:
        host, port, tls = parse_broker_url(broker)
        values.update(host=host, port=port)
        if tls and not values.get("tls_ca"):
            raise ConfigError(f"--broker {broker} asks for TLS: set tls_ca in the [mqtt] table of the config file "
                              "(the CA certificate that signed the broker's certificate).")
        if not tls:
            values.update(tls_ca=None, tls_cert=None, tls_key=None)
    if username is not None:
        values["username"] = username
    if password is not None:
        values["password"] = password
    try:
        return LinkSettings(**values, rack=rack, state_dir=Path(state_dir))
    except ValidationError as exc:
        # The [mqtt] table was checked with the file: what is wrong came from the command line.
        lines = [line.replace("[mqtt] rack ", "--rack (or [rack] id) ", 1)
                 for line in problems(exc, LinkSettings, ("mqtt",))]
        raise ConfigError("\n".join(lines)) from None


# -- the camera's frame rate ------------------------------------------------------------------------------------------

CAMERA_HEADROOM = 1.15
"""Frame period ÷ model time: room for the work around the model (a few per cent on a Pi) and for jitter."""


def camera_fps(wanted: float, invoke_ms: float) -> float:
    """The camera's frame rate: ``wanted``, but no faster than a model call of ``invoke_ms`` keeps up with.

    Frames the model has no time for would only be captured to be dropped, costing the CPU and the bus.
    """
    return min(wanted, 1000.0 / (invoke_ms * CAMERA_HEADROOM))


# -- logging ----------------------------------------------------------------------------------------------------------

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


def setup_logging() -> None:
    """``rackwatch: LEVEL: message`` lines on stderr (the journal under systemd); rackwatch's own from INFO."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rackwatch: %(levelname)s: %(message)s"))
    handler.addFilter(_SameMessageOnce())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("rackwatch").setLevel(logging.INFO)


# -- running a rack ---------------------------------------------------------------------------------------------------

class BrokerNotes:
    """What the person at the rack's log is told about the broker: once when it does not answer at the start
    (judging goes on, the events wait on disk), and once when it answers after that."""

    def __init__(self, link: RackLink, err: TextIO):
        self.link = link
        self.err = err
        self._warned = False
        self._lock = threading.Lock()

    def warn_unless_connected(self) -> None:
        with self._lock:
            if self.link.connected or self._warned:
                return
            self._warned = True
            s = self.link.settings
            print(f"rackwatch: no connection to the broker at {s.host}:{s.port} yet; judging goes on, and the "
                  f"events wait in the outbox in {s.state_dir} until it answers.", file=self.err, flush=True)

    def connected(self) -> None:
        """The link's ``on_connected`` hook (paho's thread)."""
        with self._lock:
            if self._warned:
                s = self.link.settings
                print(f"rackwatch: reached the broker at {s.host}:{s.port}; sending the waiting events",
                      file=self.err, flush=True)
                self._warned = False


class ThreadWatch:
    """While in its ``with`` block, notes the first thread that dies of an exception and calls ``on_death``.

    A thread of the rack that dies takes its work with it, silently: the MQTT network thread (nothing is sent
    or received any more), the outbox pump (nothing leaves the disk). Python reports such a death through
    :func:`threading.excepthook`, which this replaces for the time of the run; the death goes to the log, with
    its traceback (a bug to report).
    """

    def __init__(self, on_death: Callable[[], None]):
        self.on_death = on_death
        self.died: tuple[str, BaseException] | None = None   # (thread name, exception)
        self._previous: Any = None

    def __enter__(self) -> "ThreadWatch":
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def __exit__(self, *exc: object) -> None:
        threading.excepthook = self._previous

    def _hook(self, args: Any) -> None:
        name = args.thread.name if args.thread is not None else "a thread"
        log.error("the thread %s stopped", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
        if self.died is None and args.exc_value is not None:
            self.died = (name, args.exc_value)
            self.on_death()


def serve(service: RackService, link: RackLink, *, connect_grace: float = 2.0, drain_timeout: float = 10.0,
          err: TextIO | None = None) -> int:
    """Run ``service`` with its ``link`` (both not started yet) until the frames end or ``service.stop()``.

    Returns 0, or 1 after saying why if one of the rack's threads died (see :class:`ThreadWatch`).
    """
    err = err if err is not None else sys.stderr
    notes = BrokerNotes(link, err)
    link.on_connected = notes.connected
    with ThreadWatch(on_death=service.stop) as watch:
        try:
            service.start()   # takes commands first: those that waited at the broker come in at the connection
            link.start()
            if not link.wait_connected(connect_grace):
                notes.warn_unless_connected()
            service.process()
        finally:
            service.close()
            try:
                if watch.died is None:
                    link.wait_drained(drain_timeout)
            finally:
                link.close()
    if watch.died is None:
        for line in link.shutdown_report():   # what did not get through, and why; what this run lost
            print(f"rackwatch: warning: {line}", file=err, flush=True)
    if watch.died is not None:
        name, exc = watch.died
        print(f"rackwatch: error: the rack's thread {name} stopped ({type(exc).__name__}: {exc}), so its events "
              f"can no longer reach the broker. The rack stops here, with exit status 1, so that systemd starts "
              f"it again; the {link.outbox_depth} event(s) not yet sent wait in the outbox in "
              f"{link.settings.state_dir}. If it happens again, report it with the log above.", file=err, flush=True)
        return 1
    return 0


def run_command(args: Any, config: Any, load_interpreter: Callable[[], Interpreter]) -> int:
    """``rackwatch run``: everything from the parsed arguments and the config to a clean exit."""
    rack = args.rack or config.rack.id
    state_dir = Path(args.state_dir or config.rack.state_dir)
    password = args.password if args.password is not None else os.environ.get("RACKWATCH_MQTT_PASSWORD")
    settings = link_settings(rack, state_dir, config.mqtt, broker=args.broker,
                             username=args.username, password=password)
    check_tls_files(settings)   # a missing CA file named before the camera and the model are opened
    panel_settings = config.panel
    if panel_settings is None and args.virtual_panel:
        from .panel import PanelSettings
        panel_settings = PanelSettings()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        probe = state_dir / ".rackwatch-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"The state folder {state_dir} cannot be written ({exc.strerror or exc}). It keeps the "
                          "outbox and the lifter's settings; give a writable one with --state-dir.") from None
    setup_logging()
    try:   # first: it holds the state folder's lock, so a second rackwatch on this folder stops here
        outbox = Outbox(state_dir, max_events=settings.outbox_max)
    except OutboxError as exc:
        raise ConfigError(str(exc)) from None

    store = SettingsStore(state_dir)
    given = {name: value for name, value in (("load", args.load), ("one_rm", args.one_rm)) if value is not None}
    try:   # all at once: --load 120 --one-rm 130 over a saved max of 100 is a new best, not a refusal
        store.update(units=args.units, exercise=args.exercise, **given)
    except AboveOneRepMax as exc:
        raise ConfigError(exc.for_flags(saved=args.one_rm is None)) from None
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
        pin_factory = gpio_pin_factory()
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
    # Live frames idle while nobody is at the rack; a recording read at full speed is judged frame by frame.
    live = args.source == "picamera" or args.speed == "realtime"
    service = RackService(link, store, interpreter, frames, rack=rack, analysis=config.analysis, aim=config.aim,
                          panel=panel, health_interval=args.health_every,
                          idle=IdleMode.from_settings(camera) if live else None)

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
        status = serve(service, link, drain_timeout=args.drain_timeout)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if panel is not None:
            panel.close()
        outbox.close()
    c = service.counts
    rested = f" ({service.idle.skipped} more let go while idle)" if service.idle and service.idle.skipped else ""
    print(f"rackwatch: {c['frames']} frames{rested}, {c['rep']} reps, {c.get('not_counted', 0)} not counted, "
          f"{c['set']} sets published", file=sys.stderr)
    return status


def _text(value: float | None, units: str) -> str:
    return "not set" if value is None else format_weight(value, units)
