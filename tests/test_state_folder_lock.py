"""One rackwatch per state folder: a second `rackwatch run` on the same folder stops at once, with a message.

The state folder holds the outbox and the lifter's settings; two processes on it would send every event twice and
fight over the settings. The first one holds an ``flock`` on ``<state_dir>/rackwatch.lock`` (rackwatch.outbox).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import FOOTAGE
from mqtt_broker import Subscriber, unique

pytestmark = [pytest.mark.broker, pytest.mark.footage]

SQUAT = "calimiro_workouttracker/squat_19.mp4"     # 2 clean reps, 143 frames


def label_of(labels, clip):
    return next(label for label in labels if label["clip"] == clip)


def rackwatch_run(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", "run", *map(str, args)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=timeout, stdin=subprocess.DEVNULL)


def test_a_second_rackwatch_on_the_same_state_folder_stops_at_once_and_the_first_carries_on(broker, tmp_path, labels):
    """Two `rackwatch run` on one state folder would send every event twice and fight over the settings."""
    label = label_of(labels, SQUAT)
    state = tmp_path / "state"
    sub = Subscriber(broker, "rackwatch/#")
    first = subprocess.Popen([sys.executable, "-m", "rackwatch.cli", "run", "--source", str(FOOTAGE / SQUAT),
                              "--speed", "realtime", "--broker", f"mqtt://{broker.host}:{broker.port}",
                              "--state-dir", str(state)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        started = first.stderr.readline()
        while "judging" not in started:
            assert started, "the first rackwatch ended before it started judging"
            started = first.stderr.readline()
        second = rackwatch_run("--source", FOOTAGE / SQUAT, "--speed", "max", "--broker",
                               f"mqtt://{broker.host}:{broker.port}", "--state-dir", state, timeout=30)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"another rackwatch (process {first.pid}) is using the state folder {state}" in second.stderr
        assert "--state-dir" in second.stderr
        assert first.poll() is None                      # the first one was not disturbed ...
        assert first.wait(60) == 0
        first.stderr.read()
    finally:
        first.kill()
        first.wait()
        first.stderr.close()
    sub.wait_for(lambda s: b"offline" in s.payloads("rackwatch/rack01/availability"), what="offline")
    reps = unique(sub.events("rackwatch/rack01/rep"))    # ... and published every rep, once each
    assert [r["rep"] for r in reps] == list(range(1, len(label["reps"]) + 1))
    sub.close()
