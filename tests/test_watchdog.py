"""The systemd watchdog, through a real notify socket: pings while frames flow, silence when they stall.

The test binds a Unix datagram socket, as systemd does, and hands its path to the service as ``NOTIFY_SOCKET``.
The frame source is the real footage under the test's control: it plays frames until told to stall, then hangs
inside ``frames()`` exactly as a wedged camera would. With ``WatchdogSec=30`` in the unit, the silence that
follows is what makes systemd restart the service.
"""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest

from conftest import FOOTAGE
from rackwatch.camera import VideoFile
from rackwatch.host import SystemdNotifier
from rackwatch.load import SettingsStore
from rackwatch.mqtt import LinkSettings, RackLink
from rackwatch.rack import serve
from rackwatch.service import RackService

pytestmark = [pytest.mark.broker, pytest.mark.footage]

CLIP = "calimiro_workouttracker/squat_19.mp4"


class StallingCamera:
    """Real frames, over and over, until ``stall`` is set; then it hangs until ``release`` is set."""

    channels = "bgr"
    dropped = 0   # (a FrameSource has it: the health event at the end reads it)

    def __init__(self):
        self.fps = 30.0
        self.stall = threading.Event()
        self.stalled = threading.Event()
        self.release = threading.Event()
        video = VideoFile(FOOTAGE / CLIP)
        self.images = [frame.image for _, frame in zip(range(30), video.frames())]
        video.close()

    def frames(self):
        from rackwatch.camera import Frame

        index = 0
        while not self.stall.is_set():
            yield Frame(index, index / self.fps, self.images[index % len(self.images)])
            index += 1
        self.stalled.set()
        self.release.wait(timeout=60)

    def close(self) -> None:
        self.release.set()


class NotifySocket:
    """What systemd listens on: a datagram socket; ``messages()`` reads what arrived within ``timeout``."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(4096).decode()
        except TimeoutError:
            return None

    def drain(self) -> list[str]:
        got = []
        while (message := self.receive(0.01)) is not None:
            got.append(message)
        return got

    def close(self):
        self.sock.close()


def test_watchdog_pings_while_frames_flow_and_stops_when_they_stall(broker, tmp_path, interpreter):
    systemd = NotifySocket(tmp_path / "notify")
    camera = StallingCamera()
    link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=tmp_path / "state",
                                 ha_discovery=False))
    service = RackService(link, SettingsStore(tmp_path / "state"), interpreter, camera, rack="rack01",
                          notifier=SystemdNotifier({"NOTIFY_SOCKET": systemd.path}), out=io.StringIO())
    runner = threading.Thread(target=lambda: serve(service, link, drain_timeout=2, err=io.StringIO()), daemon=True)
    runner.start()
    try:
        first = systemd.receive(30)
        assert first is not None and first.startswith("READY=1"), first
        # Frames flow: a ping about once a second (the notifier holds back the ones in between).
        pings = []
        deadline = time.monotonic() + 30
        while len(pings) < 3 and time.monotonic() < deadline:
            message = systemd.receive(5)
            assert message is not None, f"no watchdog ping within 5 s while frames flow (got {pings})"
            pings.append(message)
        assert pings == ["WATCHDOG=1"] * 3
        frames_before = service.counts["frames"]
        assert frames_before > 3

        # The camera wedges: after the ping already on its way, nothing for well over the ping interval.
        camera.stall.set()
        assert camera.stalled.wait(30)
        systemd.drain()
        assert systemd.receive(3.0) is None, "the watchdog was still fed with no frame coming in"

        # Shutting down says so, so that systemd does not count the silence that follows as a hang.
        camera.release.set()
        service.stop()
        runner.join(30)
        assert not runner.is_alive()
        assert "STOPPING=1" in systemd.drain()
    finally:
        camera.release.set()
        service.stop()
        runner.join(30)
        systemd.close()
