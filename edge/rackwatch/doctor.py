"""``rackwatch doctor``: is this rack ready to judge squats? Every part checked, every problem said in words.

It checks, in this order, and says for each what it found and, when something is wrong, what to do:

version       the rackwatch running, and the release installed under /opt/rackwatch (deploy/install.sh)
model         the pose model file against its manifest, and how fast it runs on this machine
camera        the Pi camera present and streaming (or ``--source VIDEO``: a recording in its place)
aim           where the camera points (:mod:`rackwatch.aim`), from the same frames, when someone is in view
gpio          the rack panel's pins free to use (on a Pi; elsewhere a warning that there is no GPIO)
broker        the gym's broker reachable, over TLS when configured, and accepting this rack's credentials
clock         the clock synchronised (events carry the time; TLS certificates need it)
disk          free space in the state folder (the outbox keeps events there while the broker is away)
temperature   CPU temperature and throttling (under-voltage, heat)

A finding is ``ok``, a ``warning`` (worth knowing, the rack still works) or a ``problem`` (the rack will not
work right). The exit status is 1 when there is a problem, 0 otherwise; ``--json`` prints one object for scripts
and the dashboard. deploy/install.sh runs ``rackwatch doctor`` after an upgrade and rolls back on a problem.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from . import __version__
from .host import cpu_temperature, throttled

CHECKS = ("version", "model", "camera", "aim", "gpio", "broker", "clock", "disk", "temperature")
INSTALL_ROOT = Path("/opt/rackwatch")
ENVIRONMENT_FILE = Path("/etc/rackwatch/environment")
PI_MODEL_FILE = Path("/proc/device-tree/model")


@dataclass(frozen=True)
class Finding:
    """One thing checked: ``status`` is ``ok``, ``warning`` or ``problem``; ``advice`` says what to do."""

    check: str
    status: str
    summary: str
    advice: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def is_raspberry_pi(model_file: Path = PI_MODEL_FILE) -> bool:
    try:
        return "Raspberry Pi" in model_file.read_text(errors="replace")
    except OSError:
        return False


# -- version and model ------------------------------------------------------------------------------------------------

def check_version(install_root: Path = INSTALL_ROOT) -> Finding:
    current = install_root / "current"
    if current.is_symlink():
        release = Path(os.readlink(current)).name
        if release != __version__:
            return Finding("version", "warning", f"rackwatch {__version__} is running, but release {release} is "
                           f"the one installed in {install_root}.", "Run the installed one "
                           f"({current}/venv/bin/rackwatch), or reinstall with deploy/install.sh.")
        return Finding("version", "ok", f"rackwatch {__version__} (release {release} in {install_root})")
    return Finding("version", "ok", f"rackwatch {__version__}")


def check_model(configured: str | None, threads: int | None = None, runtime: str | None = None,
                wanted_fps: float = 15.0, min_fps: float = 8.0) -> tuple[list[Finding], Any, float | None]:
    """The model file against its manifest, then timed: findings, the loaded model (or ``None``) and its fps."""
    from .models import ModelError, find_model
    from .pose import PoseError, load_interpreter, measure_invoke_ms

    try:
        path = find_model(configured)
    except ModelError as exc:
        summary, _, advice = str(exc).partition(". ")
        return [Finding("model", "problem", summary + ".", advice)], None, None
    try:
        interpreter = load_interpreter(path, threads, runtime)
    except PoseError as exc:
        return [Finding("model", "problem", f"The model at {path} cannot be loaded: {exc}",
                        "Reinstall rackwatch (deploy/install.sh): the model runtime is missing or broken.")], None, None
    invoke_ms = measure_invoke_ms(interpreter)
    fps = 1000.0 / invoke_ms if invoke_ms > 0 else float("inf")
    found = [Finding("model", "ok", f"Model {path.name} verified; one frame takes {invoke_ms:.0f} ms here "
                     f"(up to {fps:.0f} frames a second).")]
    if fps < min_fps:
        found.append(Finding("model", "warning", f"The model keeps up with only {fps:.1f} frames a second on this "
                             f"machine (the camera asks for {wanted_fps:g}); quick reps may be judged on few frames.",
                             "Check `rackwatch doctor`'s temperature line (a hot Pi slows down); stop other programs; "
                             "a Pi 5 keeps up with about 20 frames a second."))
    return found, interpreter, fps


# -- camera -----------------------------------------------------------------------------------------------------------

def _first_frames(source, count: int, timeout: float) -> tuple[int, BaseException | None]:
    """How many frames ``source`` delivers (up to ``count``) within ``timeout`` s, and the error if one came.

    Read on a helper thread: a camera that hangs would otherwise hang the doctor too.
    """
    got = [0]
    error: list[BaseException] = []

    def read():
        try:
            for _ in source.frames():
                got[0] += 1
                if got[0] >= count:
                    return
        except BaseException as exc:   # reported, not raised: the doctor goes on to the other checks
            error.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    return got[0], (error[0] if error else None)


def check_camera(source: str | None, size: tuple[int, int], fps: float, *, on_pi: bool,
                 timeout: float = 10.0) -> Finding:
    from .camera import SourceError, open_frames

    if source is None and not on_pi:
        return Finding("camera", "warning", "No Pi camera on this machine (it is not a Raspberry Pi).",
                       "On the rack's Pi, run `rackwatch doctor` there; here, check a recording with --source VIDEO.")
    spec = source or "picamera"
    try:
        frames = open_frames(spec, "max", size, fps)
    except SourceError as exc:
        return Finding("camera", "problem", str(exc), _camera_advice(spec, exc))
    except Exception as exc:   # picamera2 and libcamera raise their own kinds; say it in words all the same
        return Finding("camera", "problem", f"The camera could not be opened ({type(exc).__name__}: {exc}).",
                       _camera_advice(spec, exc))
    try:
        count, error = _first_frames(frames, 10, timeout)
    finally:
        try:
            frames.close()
        except Exception:
            pass
    what = "The camera" if spec == "picamera" else f"The recording {spec}"
    if error is not None and count == 0:
        return Finding("camera", "problem", f"{what} opened but gave no frame: {error}", _camera_advice(spec, error))
    if count == 0:
        return Finding("camera", "problem", f"{what} opened but gave no frame within {timeout:g} s.",
                       _camera_advice(spec, None))
    return Finding("camera", "ok", f"{what} is streaming ({count} frames read, {frames.fps:.0f} frames a second).")


def _camera_advice(spec: str, error: BaseException | None) -> str:
    if spec != "picamera":
        return "Check the path, and that the file plays in a video player."
    text = str(error or "").lower()
    if "busy" in text or "in use" in text:
        return ("Another program holds the camera, most likely the rackwatch service itself: stop it first "
                "(sudo systemctl stop rackwatch), run the doctor, then start it again.")
    return ("Check the camera's ribbon cable (contacts facing the right way, latch closed, at both ends), then run "
            "`rpicam-hello --list-cameras`: it must list the camera. Reboot after plugging a camera in.")


# -- GPIO -------------------------------------------------------------------------------------------------------------

def panel_pins(settings: PanelSettings | None) -> list[int]:
    """The BCM pins the config's [panel] uses (none without a [panel] table or when it is disabled)."""
    if settings is None or not settings.enabled:
        return []
    pins = []
    for value in settings.pins.model_dump().values():
        for pin in (value if isinstance(value, (tuple, list)) else [value]):
            if pin is not None:
                pins.append(int(pin))
    return pins


def check_gpio(pins: list[int], pin_factory: Any, *, on_pi: bool) -> Finding:
    if not pins:
        return Finding("gpio", "ok", "No rack panel configured ([panel] table absent or disabled).")
    if pin_factory is None:
        if not on_pi:
            return Finding("gpio", "warning", "No GPIO on this machine (it is not a Raspberry Pi): the panel's pins "
                           "were not checked.", "Run `rackwatch doctor` on the rack's Pi to check them.")
        return Finding("gpio", "problem", "This Pi's GPIO cannot be used: gpiozero found no working pin library.",
                       "Install it: sudo apt install python3-lgpio python3-gpiozero (deploy/install.sh does), and "
                       "make sure the rackwatch user is in the gpio group.")
    busy = []
    for number in pins:
        try:
            pin = pin_factory.pin(number)
            try:
                pin.function = "input"
            finally:
                pin.close()
        except Exception as exc:
            busy.append(f"GPIO{number} ({exc})")
    if busy:
        return Finding("gpio", "problem", f"Panel pins in use or not usable: {', '.join(busy)}.",
                       "Another program holds them (the rackwatch service: stop it first with sudo systemctl stop "
                       "rackwatch), or another HAT or overlay claims them: check /boot/firmware/config.txt and "
                       "[panel.pins] in the config.")
    return Finding("gpio", "ok", f"The panel's {len(pins)} pins are free to use.")


def default_pin_factory() -> Any:
    """gpiozero's pin factory on a machine with GPIO pins, else ``None``."""
    from .host import gpio_pin_factory

    return gpio_pin_factory()


# -- broker -----------------------------------------------------------------------------------------------------------

# MQTT 5 "Bad user name or password" and "Not authorized" (Mosquitto answers the latter to a wrong password
# when it has a password file), and their MQTT 3.1.1 counterparts.
REFUSED_CREDENTIALS = {134, 135, 4, 5}


def check_broker(settings, timeout: float = 5.0) -> Finding:
    """Connect once as the rack (TLS when ``settings.tls_ca`` is set) and wait for the broker's answer."""
    import paho.mqtt.client as mqtt

    where = f"{settings.host}:{settings.port}"
    tls = " over TLS" if settings.tls_ca else ""
    who = settings.username or "(no username)"
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{settings.client_id}-doctor-{os.getpid()}",
                         protocol=mqtt.MQTTv5)
    client.connect_timeout = timeout
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    answer: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.setdefault("reason", reason)
    client.on_disconnect = lambda _c, _u, _f, reason, _p: answer.setdefault("closed", reason)
    try:
        if settings.tls_ca:
            client.tls_set(ca_certs=settings.tls_ca, certfile=settings.tls_cert, keyfile=settings.tls_key,
                           cert_reqs=ssl.CERT_REQUIRED)
        client.connect(settings.host, settings.port, keepalive=10)
        deadline = time.monotonic() + timeout
        while "reason" not in answer and "closed" not in answer and time.monotonic() < deadline:
            client.loop(timeout=0.1)
    except ssl.SSLCertVerificationError as exc:
        return Finding("broker", "problem", f"The broker at {where} showed a certificate that tls_ca does not "
                       f"vouch for ({exc.verify_message}).", f"Check that tls_ca ({settings.tls_ca}) is the CA that "
                       "signed the broker's certificate, and that [mqtt] host is the name in that certificate.")
    except (ssl.SSLError, FileNotFoundError) as exc:
        return Finding("broker", "problem", f"The TLS connection to {where} failed ({exc}).",
                       "Check tls_ca, tls_cert and tls_key in [mqtt] (files readable, matching the broker), and "
                       "that the port is the broker's TLS port (usually 8883).")
    except socket.gaierror:
        return Finding("broker", "problem", f"The broker's name {settings.host!r} cannot be found.",
                       "Check [mqtt] host in the config, and that this Pi is on the gym's network (Wi-Fi) with DNS.")
    except ConnectionRefusedError:
        return Finding("broker", "problem", f"Nothing accepts connections at {where}.",
                       "Check that Mosquitto runs on the broker machine and [mqtt] port (1883 plain, 8883 TLS).")
    except OSError as exc:
        return Finding("broker", "problem", f"No answer from {where} ({exc.strerror or exc}).",
                       "Check that this Pi is on the gym's network and that no firewall blocks the port.")
    finally:
        try:
            client.disconnect()
        except Exception:
            pass
    reason = answer.get("reason")
    if reason is None:
        return Finding("broker", "problem", f"The broker at {where} did not answer within {timeout:g} s"
                       f"{' (it closed the connection)' if 'closed' in answer else ''}.",
                       "Check that the port is an MQTT port, and that TLS is on exactly when the broker expects it "
                       "(tls_ca set for port 8883, unset for 1883).")
    code = getattr(reason, "value", reason)
    if code == 0:
        return Finding("broker", "ok", f"The broker at {where} accepts {who}{tls}.")
    if code in REFUSED_CREDENTIALS:
        return Finding("broker", "problem", f"The broker at {where} refused {who}: wrong username or password "
                       "(or the user is not let in).", "Set the rack's password as RACKWATCH_MQTT_PASSWORD=... in "
                       "/etc/rackwatch/environment, the same as registered for it on the broker (mosquitto_passwd); "
                       "the username is [mqtt] username. If both are right, check the broker's ACL "
                       "(deploy/mosquitto/).")
    return Finding("broker", "problem", f"The broker at {where} refused the connection ({reason}).",
                   "Check the broker's log for why.")


def rack_password(environ=os.environ, environment_file: Path = ENVIRONMENT_FILE) -> str | None:
    """$RACKWATCH_MQTT_PASSWORD, else the service's environment file when it is readable to us."""
    if environ.get("RACKWATCH_MQTT_PASSWORD"):
        return environ["RACKWATCH_MQTT_PASSWORD"]
    try:
        for line in environment_file.read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key == "RACKWATCH_MQTT_PASSWORD":
                words = shlex.split(value)   # the quoting systemd's EnvironmentFile= reads too
                return words[0] if words else ""
    except OSError:
        pass
    return None


# -- clock, disk, temperature -----------------------------------------------------------------------------------------

TIME_ERROR = 5   # adjtimex(2): the clock is not synchronised


def clock_synchronised() -> bool | None:
    """``timedatectl``'s NTPSynchronized, else the kernel's own view (adjtimex); ``None`` if neither answers."""
    timedatectl = shutil.which("timedatectl")
    if timedatectl:
        try:
            out = subprocess.run([timedatectl, "show", "--property=NTPSynchronized", "--value"], capture_output=True,
                                 text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return out.stdout.strip() == "yes"
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        timex = ctypes.create_string_buffer(512)   # struct timex, modes = 0: read only
        state = libc.adjtimex(timex)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != TIME_ERROR


def check_clock(synchronised: Callable[[], bool | None] = clock_synchronised) -> Finding:
    state = synchronised()
    if state is None:
        return Finding("clock", "warning", "Could not tell whether the clock is synchronised.",
                       "Check with `timedatectl status`.")
    if not state:
        return Finding("clock", "problem", "The clock is not synchronised: events would carry the wrong time and "
                       "TLS certificates may be refused.", "A Pi has no battery clock: it needs a time server. "
                       "Check the network, then `timedatectl status`; in a gym without internet set NTP= in "
                       "/etc/systemd/timesyncd.conf to the gym's own time server.")
    return Finding("clock", "ok", "The clock is synchronised.")


def check_disk(state_dir: Path, min_free_mb: float = 200.0, warn_free_mb: float = 1000.0) -> Finding:
    folder = Path(state_dir)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    free_mb = usage.free / 1e6
    where = f"the state folder {folder}" + ("" if probe == folder else f" (not created yet; checked {probe})")
    if free_mb < min_free_mb:
        return Finding("disk", "problem", f"Only {free_mb:.0f} MB free for {where}: the outbox cannot keep events "
                       "while the broker is away.", "Free space on the SD card (old logs: sudo journalctl "
                       "--vacuum-size=50M; old releases in /opt/rackwatch/releases), or use a bigger card.")
    if free_mb < warn_free_mb:
        return Finding("disk", "warning", f"{free_mb:.0f} MB free for {where}.",
                       "Free some space soon (sudo journalctl --vacuum-size=50M).")
    return Finding("disk", "ok", f"{free_mb / 1000:.1f} GB free for {where}.")


def check_temperature(read_temperature: Callable[[], float | None] = cpu_temperature,
                      read_throttled: Callable[[], bool | None] = throttled) -> list[Finding]:
    found = []
    temp = read_temperature()
    if temp is None:
        found.append(Finding("temperature", "ok", "This machine reports no CPU temperature."))
    elif temp >= 80:
        found.append(Finding("temperature", "problem", f"The CPU is at {temp:.0f} °C: the Pi slows itself down.",
                             "Give it a heatsink and a fan (the Pi 5's active cooler), and air around the case."))
    elif temp >= 70:
        found.append(Finding("temperature", "warning", f"The CPU is at {temp:.0f} °C, close to slowing down (80).",
                             "Give it a heatsink or a fan, and keep the case out of the sun."))
    else:
        found.append(Finding("temperature", "ok", f"The CPU is at {temp:.0f} °C."))
    state = read_throttled()
    if state:
        found.append(Finding("temperature", "problem", "The Pi is throttling right now (under-voltage or heat).",
                             "Use the official power supply (5 V 3 A for a Pi 4, 5 V 5 A for a Pi 5) and a short "
                             "cable; see `vcgencmd get_throttled`."))
    return found


# -- all together -----------------------------------------------------------------------------------------------------

@dataclass
class DoctorReport:
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        return not any(f.status == "problem" for f in self.findings)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "version": __version__, "findings": [f.as_dict() for f in self.findings]}


def run_doctor(args: Any, config: Any, *, pin_factory: Any = None, on_pi: bool | None = None) -> DoctorReport:
    """Every check that ``args.check`` selects (all by default), from ``rackwatch doctor``'s arguments.

    ``pin_factory``: gpiozero's, found on this machine by default (tests pass a ``MockFactory``); ``on_pi``:
    whether this is a Raspberry Pi, read from the device tree by default.
    """
    from .rack import link_settings

    wanted = set(getattr(args, "check", None) or CHECKS)
    on_pi = is_raspberry_pi() if on_pi is None else on_pi
    findings: list[Finding] = []
    if "version" in wanted:
        findings.append(check_version())
    interpreter = model_fps = None
    if wanted & {"model", "aim"}:
        model_findings, interpreter, model_fps = check_model(getattr(args, "model", None) or config.model.path or None,
                                                             config.model.threads or None,
                                                             config.model.runtime or None, config.camera.fps)
        if "model" in wanted:
            findings += model_findings
    camera = config.camera
    camera_ok = False
    if wanted & {"camera", "aim"}:
        finding = check_camera(args.source, (camera.width, camera.height), camera.fps, on_pi=on_pi)
        camera_ok = finding.status == "ok"
        if "camera" in wanted:
            findings.append(finding)
    if "aim" in wanted and camera_ok and interpreter is not None:
        from .aim import check_aim
        from .camera import open_frames

        frames = open_frames(args.source or "picamera", "max", (camera.width, camera.height), camera.fps)
        report = check_aim(frames, interpreter, analysis=config.analysis, settings=config.aim,
                           seconds=None if args.source else getattr(args, "aim_seconds", 15.0), model_fps=model_fps)
        findings += report.findings
    if "gpio" in wanted:
        pins = panel_pins(config.panel)   # checked with the config file when it was loaded
        factory = pin_factory if pin_factory is not None else (default_pin_factory() if pins else None)
        findings.append(check_gpio(pins, factory, on_pi=on_pi))
    state_dir = Path(getattr(args, "state_dir", None) or config.rack.state_dir)
    if "broker" in wanted:
        password = args.password if getattr(args, "password", None) is not None else rack_password()
        settings = link_settings(getattr(args, "rack", None) or config.rack.id, state_dir, config.mqtt,
                                 broker=getattr(args, "broker", None), username=getattr(args, "username", None),
                                 password=password)
        findings.append(check_broker(settings))
    if "clock" in wanted:
        findings.append(check_clock())
    if "disk" in wanted:
        findings.append(check_disk(state_dir))
    if "temperature" in wanted:
        findings += check_temperature()
    return DoctorReport(findings)


MARKS = {"ok": "ok  ", "warning": "WARN", "problem": "FAIL"}


def format_findings(findings: Iterable[Finding]) -> str:
    lines = []
    for f in findings:
        lines.append(f"[{MARKS[f.status]}] {f.check}: {f.summary}")
        if f.advice and f.status != "ok":
            lines.append(f"       what to do: {f.advice}")
    return "\n".join(lines)
