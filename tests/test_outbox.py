"""The durable outbox on its own: order, the full policy, and surviving a reopen or a kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import mqtt_broker
from mqtt_broker import REPO
from rackwatch.outbox import Outbox

REP = "rackwatch/rack01/rep"
STATE = "rackwatch/rack01/state"


# The outbox stores what goes on the wire: the samples are real typed events, in their wire form.
def sample_rep(*args, **kwargs) -> dict:
    return mqtt_broker.sample_rep(*args, **kwargs).to_wire()


def sample_set(*args, **kwargs) -> dict:
    return mqtt_broker.sample_set(*args, **kwargs).to_wire()


def sample_state(*args, **kwargs) -> dict:
    return mqtt_broker.sample_state(*args, **kwargs).to_wire()


def sample_health(*args, **kwargs) -> dict:
    return mqtt_broker.sample_health(*args, **kwargs).to_wire()


def ids(outbox: Outbox) -> list[str]:
    return [entry.event_id for entry in outbox]


def test_events_come_out_in_the_order_they_went_in(tmp_path):
    with Outbox(tmp_path) as box:
        events = [sample_rep("rack01", n) for n in range(1, 8)]
        seqs = [box.add(e, REP) for e in events]
        assert seqs == sorted(seqs)
        assert ids(box) == [e["id"] for e in events]
        entry = box.peek(limit=1)[0]
        assert json.loads(entry.payload) == events[0]
        assert (entry.topic, entry.qos, entry.retain, entry.kind) == (REP, 1, False, "rep")
        # peek after a seq continues from there, and never removes anything
        assert [e.event_id for e in box.peek(after=seqs[2], limit=2)] == [events[3]["id"], events[4]["id"]]
        assert box.depth == 7


def test_removing_an_acknowledged_event_keeps_the_rest_in_order(tmp_path):
    with Outbox(tmp_path) as box:
        events = [sample_rep("rack01", n) for n in range(1, 5)]
        seqs = [box.add(e, REP) for e in events]
        box.remove(seqs[1])
        assert ids(box) == [events[0]["id"], events[2]["id"], events[3]["id"]]
        box.remove(seqs[1])   # a second PUBACK for the same row is harmless
        assert box.depth == 3


def test_the_outbox_survives_a_reopen_and_keeps_its_order(tmp_path):
    events = [sample_rep("rack01", n) for n in range(1, 4)]
    with Outbox(tmp_path) as box:
        seqs = [box.add(e, REP) for e in events]
        box.add(sample_state("rack01", reps_in_set=3), "rackwatch/rack01/state", retain=True)
        box.remove(seqs[0])
    with Outbox(tmp_path) as box:
        assert ids(box)[:2] == [events[1]["id"], events[2]["id"]]
        assert box.depth == 3
        # new rows always sort after old ones, even after everything was sent (sequence numbers are not reused)
        for entry in list(box):
            box.remove(entry.seq)
        later = box.add(sample_rep("rack01", 9), REP)
        assert later > max(seqs)
        # the newest state is remembered for republishing, even once sent
        topic, payload = box.last_state()
        assert topic == "rackwatch/rack01/state" and json.loads(payload)["reps_in_set"] == 3


def test_the_file_is_in_wal_mode_and_reps_are_fsynced_but_snapshots_are_not(tmp_path):
    def level(box) -> int:   # the level the last commit ran at: 2 = FULL (fsync), 1 = NORMAL
        return box._db.execute("PRAGMA synchronous").fetchone()[0]

    with Outbox(tmp_path) as box:
        box.add(sample_rep("rack01"), REP)
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert level(box) == 2
        box.add(sample_state("rack01"), STATE)
        assert level(box) == 1
        box.add(sample_rep("rack01", 2), REP)
        assert level(box) == 2
        box.remove(box.peek()[0].seq)
        assert level(box) == 1
    # another process (a support engineer with sqlite3) can read it
    with sqlite3.connect(tmp_path / Outbox.FILENAME) as db:
        assert db.execute("SELECT kind FROM outbox ORDER BY seq").fetchall() == [("state",), ("rep",)]


def test_only_the_newest_unsent_health_snapshot_is_kept(tmp_path):
    with Outbox(tmp_path) as box:
        box.add(sample_rep("rack01", 1), REP)
        healths = [sample_health("rack01", outbox_depth=n) for n in range(5)]
        for h in healths:
            box.add(h, "rackwatch/rack01/health", qos=0)
        box.add(sample_rep("rack01", 2), REP)
        kinds = [e.kind for e in box]
        assert kinds == ["rep", "health", "rep"]
        assert [e.event_id for e in box if e.kind == "health"] == [healths[-1]["id"]]


def test_when_full_health_goes_first_then_old_state_then_the_oldest_rep_and_that_loss_is_counted(tmp_path):
    with Outbox(tmp_path, max_events=4) as box:
        rep1, rep2 = sample_rep("rack01", 1), sample_rep("rack01", 2)
        state1, state2 = sample_state("rack01", 1), sample_state("rack01", 2)
        health = sample_health("rack01")
        for event, topic in ((rep1, REP), (state1, "s"), (health, "h"), (state2, "s")):
            box.add(event, topic)
        assert box.depth == 4

        box.add(rep2, REP)                       # full: the health snapshot makes room
        assert ids(box) == [rep1["id"], state1["id"], state2["id"], rep2["id"]]
        assert box.counter("dropped_health") == 1 and box.dropped == 0

        set1 = sample_set("rack01")
        box.add(set1, "rackwatch/rack01/set")    # full, no health: the oldest state goes
        assert ids(box) == [rep1["id"], state2["id"], rep2["id"], set1["id"]]
        box.add(sample_rep("rack01", 3), REP)    # the last state goes too
        assert box.counter("dropped_state") == 2 and box.dropped == 0

        rep4 = sample_rep("rack01", 4)
        box.add(rep4, REP)                       # only reps and sets left: the oldest rep is lost, and counted
        assert box.depth == 4
        assert rep1["id"] not in ids(box) and ids(box)[-1] == rep4["id"]
        assert box.dropped == 1
    with Outbox(tmp_path, max_events=4) as box:
        assert box.dropped == 1                  # the count survives a restart, for the health report


def test_an_event_is_on_disk_when_add_returns_even_if_the_process_is_killed(tmp_path):
    """A child process adds events and prints each id after add() returns; we kill -9 it part way."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO / 'edge')!r}); sys.path.insert(0, {str(REPO / 'tests')!r})
        from mqtt_broker import sample_rep
        from rackwatch.outbox import Outbox
        box = Outbox(sys.argv[1])
        for n in range(1, 100000):
            event = sample_rep("rack01", n).to_wire()
            box.add(event, "rackwatch/rack01/rep")
            print(event["id"], flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    printed = []
    try:
        while len(printed) < 40:
            line = child.stdout.readline()
            assert line, "the child process died early"
            printed.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    with Outbox(tmp_path) as box:
        stored = ids(box)
    assert stored[:len(printed)] == printed      # every acknowledged add is there, in order


def test_events_json_cannot_carry_are_refused_clearly_and_numpy_like_scalars_become_numbers(tmp_path):
    class Int64:   # stands in for numpy.int64 without importing numpy here
        def item(self):
            return 7

    with Outbox(tmp_path) as box:
        with pytest.raises(ValueError, match="NaN"):
            box.add(sample_health("rack01") | {"fps": float("nan")}, "h", qos=0)
        with pytest.raises(TypeError, match="cannot be sent as JSON"):
            box.add(sample_rep("rack01") | {"depth": object()}, REP)
        assert box.depth == 0                    # nothing half-written
        box.add(sample_health("rack01") | {"dropped_frames": Int64()}, "h", qos=0)
        assert json.loads(box.peek()[0].payload)["dropped_frames"] == 7


def test_bad_settings_are_refused_with_a_reason(tmp_path):
    with pytest.raises(ValueError, match="max_events"):
        Outbox(tmp_path, max_events=0)
    with pytest.raises(ValueError, match="synchronous"):
        Outbox(tmp_path / "x", synchronous="OFF")
