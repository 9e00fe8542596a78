"""``rackwatch demo`` as a newcomer runs it: racks on the board within a minute, Ctrl-C stops everything."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mqtt_broker import wait_until

pytestmark = [pytest.mark.broker, pytest.mark.footage]


def test_without_mosquitto_the_demo_says_how_to_install_it(monkeypatch):
    from rackwatch.dashboard import demo
    from rackwatch.dashboard.server import DashboardError

    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    monkeypatch.setattr(demo, "MOSQUITTO_PLACES", ())
    with pytest.raises(DashboardError, match="apt-get install mosquitto"):
        demo.find_mosquitto()


def test_the_demo_takes_its_default_port_or_says_which_it_took_instead():
    from rackwatch.dashboard import demo
    from rackwatch.dashboard.server import DashboardError

    with socket.socket() as holder:   # another program listening on the port the demo prefers
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        port, note = demo.serving_port(None, default=taken)
        assert port != taken and demo.port_is_free(port)
        assert f"port {taken} is taken" in note and f"on port {port} instead" in note
        with pytest.raises(DashboardError, match=f"--port {taken}: another program already listens there"):
            demo.serving_port(taken)   # a port asked for by name is not swapped for another
    assert demo.serving_port(None, default=taken) == (taken, None)   # free again: taken as it is, without a word
    assert demo.serving_port(taken) == (taken, None)


def test_the_demo_shows_racks_online_and_ctrl_c_stops_everything(tmp_path):
    import httpx

    from rackwatch.dashboard.demo import DEFAULT_PORT

    # Its default port taken (by this test, or already by something else): the demo says so and serves elsewhere.
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", DEFAULT_PORT))
        holder.listen()
    except OSError:
        pass
    process = subprocess.Popen([sys.executable, "-m", "rackwatch", "demo", "--racks", "2"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def read_until(pattern: str) -> re.Match:
        while True:
            line = process.stdout.readline()
            assert line, "the demo exited early:\n" + "".join(lines)
            lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    try:
        broker_port = int(read_until(r"broker on 127\.0\.0\.1:(\d+), logs in (\S+)").group(1))
        workdir = Path(re.search(r"logs in (\S+)", lines[-1]).group(1))
        url, name, password = read_until(r"open (http://\S+) and sign in as (\S+) / (\S+) ").groups()
        assert f"port {DEFAULT_PORT} is taken" in "".join(lines) and f":{DEFAULT_PORT}/" not in url
        with httpx.Client(base_url=url) as client:
            token = client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
            assert client.post("/login", data={"name": name, "password": password, "csrf_token": token}).status_code == 303

            def both_online() -> bool:
                board = client.get("/").text
                return all(f'id="tile-{r}" class="tile online' in board for r in ("rack01", "rack02"))

            wait_until(both_online, timeout=60, interval=0.5, what="both demo racks online on the board")
        process.send_signal(signal.SIGINT)   # Ctrl-C
        assert process.wait(timeout=60) in (0, 130)
    finally:
        holder.close()
        if process.poll() is None:   # the test failed midway: still stop the demo as a user would
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    output = "".join(lines) + process.stdout.read()
    assert "Traceback" not in output
    with socket.socket() as s:   # the broker is gone with the demo
        assert s.connect_ex(("127.0.0.1", broker_port)) != 0
    assert not workdir.exists()
    leftover = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout
    assert leftover == "", f"processes left behind: {leftover}"


def test_a_demo_killed_outright_leaves_no_broker_behind():
    process = subprocess.Popen([sys.executable, "-m", "rackwatch", "demo", "--racks", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    found = None
    try:
        for line in process.stdout:
            found = re.search(r"broker on 127\.0\.0\.1:(\d+), logs in (\S+)", line)
            if found:
                break
        else:
            pytest.fail("the demo exited before starting its broker")
        port = int(found.group(1))
        process.kill()                     # kill -9: no Ctrl-C handling at all
        process.wait()

        def broker_gone() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) != 0

        wait_until(broker_gone, timeout=15, what="the demo's broker to end with it")
    finally:
        if found:   # a demo killed outright cannot remove its temporary folder: the test does
            shutil.rmtree(found.group(2), ignore_errors=True)
        if process.poll() is None:
            process.kill()
            process.wait()
