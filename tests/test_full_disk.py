"""A full disk under the state folder: the rack degrades, keeps judging and publishing, and heals by itself.

The small disk is real: a 1 MiB ``tmpfs`` mounted by the test on a temporary folder (``mount -t tmpfs -o size=1m``),
filled to the last byte by a filler file, then freed again. This works as root (the case on this machine, in the
project's CI container and on a Pi under ``sudo``). Without the right to mount, the tests skip, and under
``CI=true`` they fail, as every missing real part does.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

import real_parts
from conftest import FOOTAGE
from mqtt_broker import (Subscriber, assert_contract, sample_health, sample_not_counted, sample_rep, sample_state,
                         wait_until)
from rackwatch.mqtt import LinkSettings, RackLink
from rackwatch.outbox import Outbox

REP = "rackwatch/rack01/rep"
SQUAT = "calimiro_workouttracker/squat_19.mp4"     # 2 clean reps


class SmallDisk:
    """A tmpfs of ``size`` bytes at ``path``; :meth:`fill` takes every free byte, :meth:`free` gives them back."""

    def __init__(self, path: Path, size: str = "1m"):
        self.path = path
        path.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        real_parts.require(done.returncode == 0,
                           f"a small tmpfs cannot be mounted here ({done.stderr.strip() or done.returncode})",
                           "run the tests as root (CI does), so that they can mount one")
        self.filler = path / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for size in (65536, 4096, 512, 64, 1):   # big blocks, then the last crumbs
                while True:
                    try:
                        if os.write(fd, b"\xff" * size) < size:
                            break
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
                        break
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk")
    try:
        yield disk
    finally:
        disk.unmount()


def add_until_the_disk_refuses(box: Outbox, start: int = 1, most: int = 5000) -> list[str]:
    """Reps until one lands in memory: a full disk still takes a few, in pages SQLite holds already."""
    ids = []
    for n in range(start, start + most):
        event = sample_rep("rack01", n)
        box.add(event.to_wire(), REP)
        ids.append(event.id)
        if box.losses()["disk_full"]:
            return ids
    raise AssertionError(f"the full disk took {most} reps")


def test_the_outbox_keeps_reps_in_memory_on_a_full_disk_and_writes_them_when_space_returns(small_disk, caplog):
    state = small_disk.path / "state"
    with Outbox(state) as box:
        before = [sample_rep("rack01", n) for n in range(1, 6)]
        for event in before:
            box.add(event.to_wire(), REP)
        small_disk.fill()
        refused = add_until_the_disk_refuses(box, start=6)
        more = [sample_rep("rack01", n) for n in range(1000, 1010)]
        for event in more:
            box.add(event.to_wire(), REP)
            box.add(sample_state("rack01", event.rep).to_wire(), "rackwatch/rack01/state")   # snapshots: only the newest waits
            box.add(sample_health("rack01").to_wire(), "rackwatch/rack01/health", qos=0)
        losses = box.losses()
        assert losses["disk_full"] and losses["events_in_memory"] >= len(more)
        assert losses["snapshots_skipped"] > 0 and losses["events_dropped"] == 0
        waiting = [e for e in box if e.kind == "rep"]
        every_rep = [e.id for e in before] + refused + [e.id for e in more]
        assert [e.event_id for e in waiting] == every_rep              # nothing lost, all in order
        kinds = [e.kind for e in box if e.seq > waiting[-1].seq or e.kind != "rep"]
        assert kinds.count("state") <= 2 and kinds.count("health") == 1
        assert any("cannot be written" in r.getMessage() and "Free some space" in r.getMessage()
                   for r in caplog.records)

        small_disk.free()
        assert box.retry(force=True)                                   # space is back: written, in order
        assert not box.losses()["disk_full"] and box.losses()["events_in_memory"] == 0
        assert any("takes writes again" in r.getMessage() for r in caplog.records)
    with Outbox(state) as box:                                         # and on disk for real
        assert [e.event_id for e in box if e.kind == "rep"] == every_rep


def test_memory_full_on_a_full_disk_loses_a_movement_not_counted_before_a_rep(small_disk):
    with Outbox(small_disk.path / "state", memory_max=3) as box:
        small_disk.fill()
        refused = add_until_the_disk_refuses(box)            # the first rep in memory
        jump = sample_not_counted("rack01")
        box.add(jump.to_wire(), "rackwatch/rack01/not_counted")
        later = [sample_rep("rack01", n) for n in (9001, 9002)]
        for event in later:                                   # memory full at the second: the movement goes
            box.add(event.to_wire(), REP)
        kept = [e.event_id for e in box]
        assert jump.id not in kept and kept[-3:] == [refused[-1]] + [r.id for r in later]
        assert box.losses()["events_dropped"] == 1


def test_a_rack_on_a_full_disk_keeps_publishing_to_the_broker_and_reports_it_in_health(small_disk, broker):
    sub = Subscriber(broker, "rackwatch/#")
    settings = LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=small_disk.path / "state",
                            reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)
    link = RackLink(settings).start()
    try:
        assert link.wait_connected(10)
        small_disk.fill()
        refused = add_until_the_disk_refuses(link.outbox)
        reps = [sample_rep("rack01", n) for n in range(2000, 2005)]
        for event in reps:
            link.publish(event)
        health = sample_health("rack01").model_copy(update=link.losses())
        link.publish(health)
        every_rep = refused + [e.id for e in reps]
        sub.wait_for(lambda s: set(every_rep) <= {e["id"] for e in s.events("rackwatch/rack01/rep")},
                     what="the reps made while the disk was full")
        sub.wait_for(lambda s: s.events("rackwatch/rack01/health"), what="the health event")
        said = sub.events("rackwatch/rack01/health")[-1]
        assert said["disk_full"] is True and said["events_in_memory"] >= 1

        small_disk.free()
        wait_until(lambda: not link.losses()["disk_full"], what="the link to notice the space is back")
        after = sample_rep("rack01", 3000)
        link.publish(after)
        assert link.wait_drained(10)
        sub.wait_for(lambda s: after.id in {e["id"] for e in s.events("rackwatch/rack01/rep")}, what="the rep")
        assert link.losses()["events_dropped"] == 0 and link.pump_failures == 0
        assert_contract(sub, rack="rack01")
    finally:
        link.close()
        sub.close()


@pytest.mark.footage
def test_rackwatch_run_on_a_full_disk_judges_publishes_and_says_so(small_disk, broker, tmp_path, labels):
    """The whole rack, state folder on a full disk from the start: the reps reach the broker, the exit is clean."""
    small_disk.fill()
    sub = Subscriber(broker, "rackwatch/#")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "rackwatch.cli", "run", "--source", str(FOOTAGE / SQUAT), "--speed", "max",
             "--broker", f"mqtt://{broker.host}:{broker.port}", "--state-dir", str(small_disk.path / "state")],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert "cannot be written" in result.stderr and "Free some space" in result.stderr
        sub.wait_for(lambda s: b"offline" in s.payloads("rackwatch/rack01/availability"), what="offline")
        reps = {e["id"]: e for e in sub.events("rackwatch/rack01/rep")}
        label = next(label for label in labels if label["clip"] == SQUAT)
        assert sorted(r["rep"] for r in reps.values()) == list(range(1, len(label["reps"]) + 1))
        assert sub.events("rackwatch/rack01/set")
        health = sub.events("rackwatch/rack01/health")[-1]
        assert health["disk_full"] is True
        assert "lost now" not in result.stderr        # every rep and set went out from memory before the exit
        assert_contract(sub, rack="rack01")
    finally:
        sub.close()


def test_a_restart_on_a_full_disk_still_sends_what_waits_on_it(small_disk, broker):
    """The issue's crash loop: on a full disk SQLite cannot even make the WAL's -shm file, so the events already
    on disk were never read, let alone sent."""
    state = small_disk.path / "state"
    with Outbox(state) as box:                                        # a long outage, then a clean stop
        waiting = [sample_rep("rack01", n) for n in range(1, 51)]
        for event in waiting:
            box.add(event.to_wire(), REP)
    small_disk.fill()
    sub = Subscriber(broker, "rackwatch/#")
    settings = LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=state,
                            reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)
    link = RackLink(settings).start()
    try:
        sub.wait_for(lambda s: {e.id for e in waiting} <= {e["id"] for e in s.events("rackwatch/rack01/rep")},
                     what="the reps that waited on the full disk")
        assert link.wait_drained(10) and link.losses()["disk_full"]
        small_disk.free()                                             # the acknowledgements reach the disk too
        wait_until(lambda: not link.losses()["disk_full"], what="the link to notice the space is back")
    finally:
        link.close()
        sub.close()
    with Outbox(state) as box:
        assert box.depth == 0                                         # nothing is sent twice at the next start


def test_a_full_disk_is_reported_until_it_takes_writes_again_even_with_nothing_waiting(small_disk):
    state = small_disk.path / "state"
    Outbox(state).close()
    small_disk.fill()
    with Outbox(state) as box:                                        # it could not even note that it is open
        assert box.losses()["disk_full"] and box.depth == 0
        assert not box.retry(force=True) and box.losses()["disk_full"]   # an empty commit would have "worked"
        small_disk.free()
        assert box.retry(force=True) and not box.losses()["disk_full"]
