"""`rackwatch run` on real footage through bad days: the broker goes away mid-set, the rack is killed -9.

A set must never lose a rep: what the rack judged reaches the dashboard, once the broker is back or once the
rack is started again, and a repeated delivery is the very same event (same id).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from conftest import FOOTAGE
from mqtt_broker import Subscriber, assert_contract, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.footage]

NINE_REPS = FOOTAGE / "kratika" / "squat_front_bodyweight.mp4"   # 9 complete reps in 17 s
TWO_REPS = FOOTAGE / "calimiro_workouttracker" / "squat_19.mp4"


def start_rack(broker, state_dir, clip, speed):
    return subprocess.Popen(
        [sys.executable, "-m", "rackwatch.cli", "run", "--source", str(clip), "--rack", "rack01",
         "--broker", f"mqtt://{broker.host}:{broker.port}", "--speed", speed, "--state-dir", str(state_dir),
         "--drain-timeout", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=dict(os.environ))


def reps_by_id(sub) -> dict[str, dict]:
    return {e["id"]: e for e in sub.events("rackwatch/rack01/rep")}


def test_broker_stopped_mid_set_then_restarted_loses_no_rep(broker, tmp_path):
    sub = Subscriber(broker, "rackwatch/rack01/#", client_id="dashboard", persistent=True)
    state = tmp_path / "state"
    rack = start_rack(broker, state, NINE_REPS, "realtime")
    try:
        sub.wait_for(lambda s: len(reps_by_id(s)) >= 2, timeout=60, what="the first two reps")
        broker.stop()
        down = datetime.now(timezone.utc)
        waiting = _outbox_reps(state)   # any rep still unacknowledged when the broker went
        # The lifter goes on: wait until two more reps are judged while the broker is away, waiting on disk.
        wait_until(lambda: _outbox_reps(state) >= waiting + 2, timeout=60, what="two reps judged during the outage")
        up = datetime.now(timezone.utc)
        broker.start()
        out, err = rack.communicate(timeout=120)
        assert rack.returncode == 0, err
        sub.wait_for(lambda s: s.events("rackwatch/rack01/set"), timeout=30, what="the set summary")
    finally:
        if rack.poll() is None:
            rack.kill()
        sub.close()
    received = sub.events("rackwatch/rack01/rep")
    reps = reps_by_id(sub)
    judged = [int(n) for n in re.findall(r"^rep (\d+):", out, re.MULTILINE)]   # as the rack printed them
    assert sorted(r["rep"] for r in reps.values()) == judged, f"delivered is not judged\n{err}"   # none lost or twice
    assert judged == list(range(1, 10)), f"the rack did not find all nine reps\n{out}\n{err}"
    for event in received:                                             # a repeat is the very same event
        assert reps[event["id"]] == event
    (summary,) = {e["id"]: e for e in sub.events("rackwatch/rack01/set")}.values()
    assert summary["reps"] == 9
    judged_while_down = [r["rep"] for r in reps.values() if down <= datetime.fromisoformat(r["time"]) <= up]
    assert len(judged_while_down) >= 2, (down, up, sorted((r["rep"], r["time"]) for r in reps.values()))
    assert_contract(sub, rack="rack01")


def test_rack_killed_mid_set_delivers_its_judged_reps_after_restart(broker, tmp_path):
    state = tmp_path / "state"
    broker.stop()   # nothing can be delivered: every judged rep waits in the outbox
    rack = start_rack(broker, state, NINE_REPS, "realtime")
    try:
        # Reps are on disk as soon as they are judged; wait until a few are, then pull the plug.
        wait_until(lambda: _outbox_reps(state) >= 3, timeout=60, what="three reps in the outbox")
        rack.send_signal(signal.SIGKILL)
        rack.wait(10)
    finally:
        if rack.poll() is None:
            rack.kill()
    waiting = _outbox_reps(state)
    assert waiting >= 3

    broker.start()
    sub = Subscriber(broker, "rackwatch/rack01/#", client_id="dashboard", persistent=True)
    try:
        again = start_rack(broker, state, TWO_REPS, "max")   # the rack comes back (a short clip this time)
        out, err = again.communicate(timeout=120)
        assert again.returncode == 0, err
        sub.wait_for(lambda s: len(reps_by_id(s)) >= waiting + 2, timeout=30, what="old and new reps")
    finally:
        sub.close()
    reps = list(reps_by_id(sub).values())
    second_set = reps[-1]["set_id"]   # the outbox replays the old reps first, then the new run's
    first_run = [r for r in reps if r["set_id"] != second_set]
    assert len(first_run) == waiting                                  # every rep judged before the kill arrived
    assert sorted(r["rep"] for r in first_run) == list(range(1, waiting + 1))
    assert_contract(sub, rack="rack01")


def _outbox_reps(state) -> int:
    """Rep events waiting in the rack's outbox, read the way an installer would look (sqlite3)."""
    import sqlite3

    path = state / "outbox.sqlite3"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("select count(*) from outbox where kind = 'rep'").fetchone()[0]
    except sqlite3.Error:   # not created yet
        return 0


def test_outbox_reader_sees_rep_rows(tmp_path):
    """The helper above must see real outbox rows, or the kill test would wait for nothing."""
    from rackwatch.outbox import Outbox
    from mqtt_broker import sample_rep

    box = Outbox(tmp_path / "state")
    box.add(sample_rep("rack01", 1).to_wire(), "rackwatch/rack01/rep")
    box.add(sample_rep("rack01", 2).to_wire(), "rackwatch/rack01/rep")
    assert _outbox_reps(tmp_path / "state") == 2
    box.close()
