"""A real Mosquitto broker for tests, on a free port, with a generated config.

The MQTT tests never mock the broker: they start ``/usr/sbin/mosquitto`` as a child process, point the code at
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

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

MOSQUITTO = os.environ.get("RACKWATCH_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = os.environ.get("RACKWATCH_MOSQUITTO_PASSWD", shutil.which("mosquitto_passwd") or
                                  "/usr/bin/mosquitto_passwd")
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
                 persistence: bool = True, tls: dict[str, Path] | None = None, port: int | None = None):
        if not Path(MOSQUITTO).exists():
            pytest.skip(f"Mosquitto is not installed at {MOSQUITTO}")
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
        self._write_config()

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
            for name, password in self.users.items():
                subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), name, password], check=True,
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
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config_path)],
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


# -- pytest fixtures (import them into a test module by name) -------------------------------------------------------

@pytest.fixture
def broker(tmp_path):
    """An anonymous broker, persistence on."""
    with MosquittoBroker(tmp_path / "broker") as b:
        yield b


SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "aclfile"
TEST_USERS = {"rack01": "rack01-pass", "rack02": "rack02-pass", "dashboard": "dashboard-pass"}


@pytest.fixture
def secure_broker(tmp_path):
    """A broker with a password file and the ACL shipped in deploy/mosquitto (racks confined to their subtree)."""
    with MosquittoBroker(tmp_path / "broker", users=TEST_USERS, acl=SHIPPED_ACL) as b:
        yield b
