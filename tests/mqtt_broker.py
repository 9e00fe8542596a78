"""A real Mosquitto broker for tests, on a free port, with a generated config.

The MQTT tests never mock the broker: they start ``mosquitto`` (found as ``deploy/dev-setup.sh`` finds it: PATH,
then ``/usr/sbin``; ``$RACKWATCH_MOSQUITTO`` overrides) as a child process, point the code at
it, and stop it again (also mid-test, to simulate an outage). Use it directly::

    with MosquittoBroker(tmp_path) as broker:
        ...  # broker.host, broker.port
        broker.stop(); broker.start()   # an outage; the port stays the same

or through the ``broker`` / ``secure_broker`` fixtures below (import them into a test module with
``from mqtt_broker import broker``).

Options: a password file (``users={"rack01": "secret"}``, hashed with ``mosquitto_passwd``), an ACL file (text or
a path, e.g. the one shipped in ``deploy/mosquitto``), persistence (on by default, so that sessions and retained
messages survive a restart as in a real gym), and an optional TLS listener.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import real_parts

REPO = Path(__file__).resolve().parents[1]

# The tests import the package from the source tree when it is not installed in the venv.
if str(REPO / "edge") not in sys.path:
    try:
        import rackwatch  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(REPO / "edge"))


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    if predicate():
        return
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class MosquittoBroker:
    """One Mosquitto process with its own config, data and log in ``workdir``."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, acl: str | Path | None = None,
                 persistence: bool = True, tls: dict[str, Path] | None = None, port: int | None = None,
                 config_text: str | None = None):
        self.mosquitto = real_parts.mosquitto()   # missing: a failure under CI=true, a skip elsewhere
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.users = dict(users or {})
        self.acl = acl
        self.persistence = persistence
        self.tls = tls
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path = self.workdir / "mosquitto.conf"
        self.process: subprocess.Popen | None = None
        if config_text is None:
            self._write_config()
        else:   # a config of the caller's own (e.g. the shipped one, adapted); it must listen on self.port
            self.config_path.write_text(config_text)

    # -- configuration -------------------------------------------------------------------------------------------

    def _write_config(self) -> None:
        lines = [
            "per_listener_settings false",
            "user root" if os.geteuid() == 0 else "",  # as root, Mosquitto would otherwise switch to 'mosquitto'
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"listener {self.port} {self.host}",
        ]
        if self.users:
            passwd = self.workdir / "passwd"
            passwd.write_text("")
            mosquitto_passwd = real_parts.mosquitto_passwd()
            for name, password in self.users.items():
                subprocess.run([mosquitto_passwd, "-b", str(passwd), name, password], check=True,
                               capture_output=True)
            passwd.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl is not None:
            acl_path = Path(self.acl) if isinstance(self.acl, Path) else self.workdir / "acl"
            if not isinstance(self.acl, Path):
                acl_path.write_text(self.acl)
            lines += [f"acl_file {acl_path}"]
        if self.tls:
            lines += [f"listener {self.tls_port} {self.host}", f"cafile {self.tls['ca']}",
                      f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
        self.config_path.write_text("\n".join(line for line in lines if line) + "\n")

    # -- life cycle ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> "MosquittoBroker":
        """Start the broker and wait until it accepts TCP connections."""
        assert self.process is None, "broker already running"
        self.process = subprocess.Popen([self.mosquitto, "-c", str(self.config_path)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                self.process = None
                raise RuntimeError(f"mosquitto exited at start-up: {err}\n{self.log()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s\n{self.log()}")

    def stop(self) -> None:
        """Stop the broker gracefully (it saves its persistence file), killing it if it hangs."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """The broker's log so far (handy in assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def assert_contract(sub: "Subscriber", rack: str | None = None) -> None:
    """Every message the subscriber saw under rackwatch/ is what the contract promises (and from ``rack``)."""
    from rackwatch import contract
    from rackwatch.mqtt import ROUTES

    for message in sub.received("rackwatch/#"):
        leaf = message.topic.split("/", 2)[2]
        if leaf == "availability":
            assert message.payload in (b"online", b"offline")
        elif leaf in ROUTES:
            event = json.loads(message.payload)
            assert event["type"] == leaf
            assert rack is None or event["rack"] == rack
            contract.validate(event)


# -- pytest fixtures (import them into a test module by name) -------------------------------------------------------

@pytest.fixture
def broker(tmp_path):
    """An anonymous broker, persistence on."""
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "aclfile"
TEST_USERS = {"rack01": "rack01-pass", "rack02": "rack02-pass", "dashboard": "dashboard-pass",
              "dashboard-live": "dashboard-pass"}


@pytest.fixture
def secure_broker(tmp_path):
    """A broker with a password file and the ACL shipped in deploy/mosquitto (racks confined to their subtree)."""
    with MosquittoBroker(tmp_path / "broker", users=TEST_USERS, acl=SHIPPED_ACL) as b:
        yield b


def unique(events: list[dict]) -> list[dict]:
    """QoS 1 is at least once: the events with repeats of the same event id dropped, in the order first seen."""
    return list({e["id"]: e for e in events}.values())


# -- a test subscriber -------------------------------------------------------------------------------------------

class Subscriber:
    """A plain paho client that records every message it receives (thread-safe), for assertions.

    ``persistent=True`` gives it a persistent session (MQTT 3.1.1, clean_session False), so that the broker
    queues QoS 1 messages for it while it is reconnecting after a broker restart.
    """

    def __init__(self, broker: MosquittoBroker, topics: str | list[str] = "#", *, client_id: str = "test-sub",
                 username: str | None = None, password: str | None = None, persistent: bool = False):
        import threading

        import paho.mqtt.client as mqtt

        self._lock = threading.Lock()
        self.messages: list = []
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent, protocol=mqtt.MQTTv311)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 2)
        self.subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "test subscriber could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        for topic in self.topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append(message)

    def received(self, topic_filter: str = "#") -> list:
        """Messages so far whose topic matches ``topic_filter`` (MQTT wildcards allowed)."""
        import paho.mqtt.client as mqtt

        with self._lock:
            return [m for m in self.messages if mqtt.topic_matches_sub(topic_filter, m.topic)]

    def payloads(self, topic_filter: str = "#") -> list[bytes]:
        return [m.payload for m in self.received(topic_filter)]

    def events(self, topic_filter: str = "#") -> list[dict]:
        """The JSON payloads received on matching topics, decoded."""
        import json

        return [json.loads(p) for p in self.payloads(topic_filter)]

    def wait_for(self, predicate, timeout: float = 15.0, what: str = "messages") -> None:
        wait_until(lambda: predicate(self), timeout=timeout, what=what)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- sample events (built with the real types) --------------------------------------------------------------------

def sample_rep(rack: str | None, rep: int = 1, *, set_id: str = "set-1", load: bool = True):
    from rackwatch.events import LegValgus, RepEvent, Valgus, load_info

    return RepEvent(
        rack=rack, set_id=set_id, rep=rep, exercise="squat", working_leg="both",
        t_start=10.0 + rep * 3, t_bottom=11.2 + rep * 3, t_end=12.6 + rep * 3,
        load=load_info(100.0, "kg", 140.0) if load else None,
        valgus=Valgus(left=LegValgus(severity="none", measured="none", cave=-0.02, peak_phase="ascent",
                                     t_peak=12.0 + rep * 3, fppa_change_deg=-4.1, medial_shift=-0.01),
                      right=LegValgus(severity="minor", measured="moderate", cave=0.075, peak_phase="bottom",
                                      t_peak=11.3 + rep * 3, fppa_change_deg=9.8, medial_shift=0.04)),
        severity="minor", verdict="note", depth=0.42, descent_s=1.2, ascent_s=1.4, ascent_speed=0.61,
        stance_ratio=1.3, hip_shift=None)


def sample_not_counted(rack: str | None, *, set_id: str | None = None):
    from rackwatch.events import NotCountedEvent

    return NotCountedEvent(rack=rack, set_id=set_id, exercise="squat", t_start=30.1, t_end=31.0, why="jump",
                           reason="both feet left the floor (0.16 hip heights): a jump, not a squat")


def sample_set(rack: str | None):
    from rackwatch.events import Advice, SetEvent, load_info

    return SetEvent(
        rack=rack, set_id="set-1", exercise="squat", load=load_info(100.0, "kg", 140.0), reps=5, clean_reps=4,
        worst_rep=5, cave_onset_rep=5, weaker_side="right", velocity_loss_pct=18.25,
        remarks=["right knee moved in on the last rep"], cues=["push the knees out over the toes"],
        advice=Advice(action="hold", next_load=100.0, text="stay at 100 kg until every rep is clean"))


def sample_state(rack: str | None, reps_in_set: int = 0):
    from rackwatch.events import StateEvent, load_info

    return StateEvent(rack=rack, phase="standing", lifter_seen=True, load=load_info(100.0, "kg", None),
                      exercise="squat", set_id="set-1", reps_in_set=reps_in_set)


def sample_health(rack: str | None, outbox_depth: int = 0):
    from rackwatch.events import HealthEvent

    return HealthEvent(rack=rack, fps=14.87, inference_ms=41.3, dropped_frames=3, cpu_temp_c=61.2,
                       throttled=False, outbox_depth=outbox_depth)
