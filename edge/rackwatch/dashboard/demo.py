"""``rackwatch demo``: the whole product on one machine, in one command.

1. a Mosquitto broker (the production broker) on a free loopback port, as a child process;
2. several racks, each a real ``rackwatch run`` child process replaying footage at real-time pace through the
   whole pipeline (model included), each with its own state folder, looping over its clips;
3. the dashboard on a SQLite file, on port 8080 (or a free port, said in one line, when 8080 is taken), with a
   demo sign-in printed with the URL.

Everything lives in a temporary folder removed at the end. Ctrl-C stops the racks (they close their set and say
``offline``), then the broker. No Mosquitto: one line on how to install it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .. import paths
from .server import DashboardError

FOOTAGE = paths.footage_dir()   # $RACKWATCH_FOOTAGE, or ../shared/footage beside a checkout
# Front-view squat clips with clean reps, caves, and one side view (its reps show as "not judged").
DEMO_CLIPS = ("trutadan/squat_tiktok_bad_good.mp4", "kratika/squat_front_bodyweight.mp4", "rohanx01/squat_side.mp4",
              "jamesrobertson/Squat_Front_View.mp4", "etireznikov/squat_bad.mp4", "liftcheck/squat_front_barbell.mp4")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
DEMO_USER, DEMO_PASSWORD = "demo", "rackwatch-demo"
# (load, one-rep max) per rack, in kg: working loads and one near the max, so the alerts differ.
LOADS = ((100, 140), (60, 100), (130, 140), (80, 120), (40, 60), (150, 200))


MOSQUITTO_PLACES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")   # Debian keeps it off a user's PATH


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PLACES if Path(p).is_file()), None)
    if found is None:
        raise DashboardError("The demo needs the Mosquitto broker: install it with `sudo apt-get install mosquitto` "
                             "(Debian/Ubuntu; `brew install mosquitto` on a Mac) and run rackwatch demo again.")
    return found


DEFAULT_PORT = 8080   # the board's address stays the same from one demo to the next (a bookmark, a tablet)


def serving_port(wanted: int | None, default: int = DEFAULT_PORT) -> tuple[int, str | None]:
    """The port to serve the board on, and a line to print when it is not the default: ``--port`` if given (it
    must be free), else ``default``, else, when another program listens there, a free one."""
    port = wanted or default
    if port_is_free(port):
        return port, None
    if wanted:
        raise DashboardError(f"--port {wanted}: another program already listens there. Stop it, or give another "
                             f"--port (or none: the demo then takes {default}, or a free port if that is taken).")
    other = free_port()
    return other, (f"rackwatch demo: port {default} is taken (another program listens there), so the board is "
                   f"on port {other} instead; --port PORT picks one.")


def port_is_free(port: int) -> bool:
    """Whether the dashboard could listen on 127.0.0.1:``port`` now (bound as uvicorn binds, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_clips(video: str | None) -> list[Path]:
    if video:
        path = Path(video)
        clips = sorted(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES) if path.is_dir() else [path]
        if not clips or not all(c.is_file() for c in clips):
            raise DashboardError(f"--video {video}: no video file there. Give a clip or a folder of clips.")
        return clips
    clips = [FOOTAGE / c for c in DEMO_CLIPS if (FOOTAGE / c).is_file()] if FOOTAGE else []
    if not clips:
        where = f"{FOOTAGE} has none of the demo clips" if FOOTAGE else "no footage folder is known here"
        raise DashboardError(f"No footage to replay: {where}. Give your own with --video FILE|DIR, or point "
                             f"${paths.FOOTAGE_ENV} at a folder of clips.")
    return clips


class Broker:
    """A throwaway Mosquitto on a free loopback port."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        config = workdir / "mosquitto.conf"
        # max_queued_messages 0: no cap on what waits for a slow subscriber (Mosquitto drops past 1000 by default).
        # As root, Mosquitto would switch to its own user, which also clears the signal that ends it with us.
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                          f"max_queued_messages 0\nlog_dest file {workdir / 'mosquitto.log'}\n"
                          + ("user root\n" if os.geteuid() == 0 else ""))
        self.process = subprocess.Popen([find_mosquitto(), "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        preexec_fn=die_with_parent)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DashboardError(f"Mosquitto stopped at start (see {workdir / 'mosquitto.log'}).")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise DashboardError(f"Mosquitto did not listen on port {self.port} within 10 s.")

    def stop(self) -> None:
        _stop(self.process)


class DemoRack:
    """One rack: ``rackwatch run`` on one clip after another, for ever, until :meth:`stop`."""

    def __init__(self, rack: str, clips: list[Path], broker_port: int, workdir: Path, load: tuple[float, float]):
        self.rack, self.clips, self.broker_port = rack, clips, broker_port
        self.state_dir = workdir / rack
        self.log_path = workdir / f"{rack}.log"
        self.load = load
        self.process: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()   # no new clip starts once stop() has begun
        self._thread = threading.Thread(target=self._loop, name=f"demo-{rack}", daemon=True)

    def start(self) -> "DemoRack":
        self._thread.start()
        return self

    def _loop(self) -> None:
        turn = 0
        with open(self.log_path, "ab") as log:
            while not self._stopping.is_set():
                clip = self.clips[turn % len(self.clips)]
                turn += 1
                command = [sys.executable, "-m", "rackwatch", "run", "--source", str(clip), "--rack", self.rack,
                           "--broker", f"mqtt://127.0.0.1:{self.broker_port}", "--speed", "realtime",
                           "--state-dir", str(self.state_dir), "--health-every", "2",
                           "--load", str(self.load[0]), "--one-rm", str(self.load[1]), "--units", "kg"]
                with self._lock:
                    if self._stopping.is_set():
                        break
                    # Its own session: Ctrl-C in the terminal reaches the demo, which stops the racks in order.
                    self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True,
                                                    preexec_fn=die_with_parent)
                code = self.process.wait()
                if code != 0 and not self._stopping.is_set():
                    self._stopping.wait(5)   # a clip that fails: do not spin; the log says why

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        if self.process is not None:
            _stop(self.process, timeout=15)
        self._thread.join(timeout=20)


def die_with_parent() -> None:
    """In a child, before it runs: end it if the command that started it dies (kill -9), so nothing is left behind
    (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(process: subprocess.Popen, timeout: float = 5) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(args) -> int:
    from .auth import hash_password
    from .server import serve
    from .store import Store

    if not 1 <= args.racks <= 12:
        raise DashboardError("--racks must be between 1 and 12 (each rack runs the pose model on this machine).")
    clips = demo_clips(args.video)
    find_mosquitto()
    port, port_note = serving_port(args.port)   # before anything starts: a taken --port stops the demo at once
    workdir = Path(tempfile.mkdtemp(prefix="rackwatch-demo-"))
    broker = racks = None
    try:
        broker = Broker(workdir)
        store = Store(args.db or str(workdir / "dashboard.db"))
        store.migrate()
        store.add_user(DEMO_USER, "admin", hash_password(DEMO_PASSWORD))
        racks = [DemoRack(f"rack{i + 1:02d}", clips[i % len(clips):] + clips[:i % len(clips)], broker.port,
                          workdir, LOADS[i % len(LOADS)]).start() for i in range(args.racks)]
        if port_note:
            print(port_note, flush=True)
        print(f"rackwatch demo: {args.racks} racks replaying {len(clips)} clips through the real pipeline, "
              f"broker on 127.0.0.1:{broker.port}, logs in {workdir}", flush=True)
        options = argparse.Namespace(broker=f"mqtt://127.0.0.1:{broker.port}", username=None, host="127.0.0.1",
                                     port=port, retention_days=1.0, share=None, plain_http=False,
                                     offline_grace=30.0)
        serve(store, options, announce=(f"rackwatch demo: open http://127.0.0.1:{port}/ and sign in as {DEMO_USER} "
                                        f"/ {DEMO_PASSWORD} (Ctrl-C stops everything)",))
    finally:
        print("rackwatch demo: stopping the racks and the broker", file=sys.stderr, flush=True)
        stoppers = [threading.Thread(target=rack.stop) for rack in racks or ()]
        for stopper in stoppers:   # in parallel: each rack closes its set and says offline
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
