"""A damaged outbox under a running link, with a real broker: the rack keeps publishing, and says what it lost."""

from __future__ import annotations

import logging
import random
import sqlite3
import subprocess
import sys

import cv2
import numpy as np
import pytest

from mqtt_broker import (MosquittoBroker, Subscriber, assert_contract, free_port, sample_health, sample_rep,
                         wait_until)
from rackwatch.mqtt import LinkSettings, RackLink
from rackwatch.outbox import Outbox

pytestmark = pytest.mark.broker


def corrupt_the_page_holding(path, text: str) -> None:
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    page = data.index(text.encode()) // page_size
    data[page * page_size:(page + 1) * page_size] = random.Random(3).randbytes(page_size)
    path.write_bytes(bytes(data))


def test_a_page_corrupted_while_the_rack_runs_is_healed_and_every_other_event_goes_out(tmp_path, caplog):
    """The case of the issue: one corrupted page, found by the pump while the rack runs; before, the pump logged
    "failed; retrying" once and never sent anything again."""
    broker = MosquittoBroker(tmp_path / "broker", port=free_port())    # configured, started later
    settings = LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=tmp_path / "state",
                            reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)
    link = RackLink(settings).start()
    box = link.outbox
    try:
        waiting = [sample_rep("rack01", n) for n in range(1, 301)]
        for event in waiting:
            link.publish(event)
        box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")           # the rows are in the main file now
        corrupt_the_page_holding(box.path, waiting[150].id)
        with sqlite3.connect(box.path) as other:                     # another writer: the link's page cache is
            other.execute("INSERT OR REPLACE INTO memory VALUES ('x', 'y')")   # no longer trusted, it reads the disk

        broker.start()
        sub = Subscriber(broker, "rackwatch/#")
        with caplog.at_level(logging.ERROR, logger="rackwatch.outbox"):
            assert link.wait_connected(10), link.last_error
            later = sample_rep("rack01", 999)
            link.publish(later)
            assert link.wait_drained(20), "the pump stalled"
        lost = link.losses()["events_unreadable"]
        assert 0 < lost < 20
        sub.wait_for(lambda s: later.id in {e["id"] for e in s.events("rackwatch/rack01/rep")}, what="the new rep")
        got = {e["id"] for e in sub.events("rackwatch/rack01/rep")}
        assert waiting[150].id not in got
        assert len([e for e in waiting if e.id in got]) == len(waiting) - lost   # all but the counted ones
        assert link.pump_failures == 0
        assert any("damaged" in r.getMessage() and f"{lost} more could not be read" in r.getMessage()
                   for r in caplog.records)
        assert [p.name for p in box.set_aside] and box.set_aside[0].exists()

        link.publish(sample_health("rack01").model_copy(update=link.losses()))           # and the dashboard hears of it
        sub.wait_for(lambda s: s.events("rackwatch/rack01/health"), what="health")
        health = sub.events("rackwatch/rack01/health")[-1]
        assert health["events_unreadable"] == lost and health["outbox_damaged"] == 1
        assert_contract(sub, rack="rack01")
        sub.close()
    finally:
        link.close()
        broker.stop()
    report = link.shutdown_report()
    assert any(f"{lost} event(s) lost in a damaged outbox" in line and box.set_aside[0].name in line
               for line in report), report


def test_the_exit_message_says_why_events_were_not_delivered_and_where_they_are(tmp_path):
    settings = LinkSettings(rack="rack01", host="127.0.0.1", port=free_port(), state_dir=tmp_path / "state",
                            reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)   # nothing listens there
    link = RackLink(settings).start()
    try:
        for n in range(1, 4):
            link.publish(sample_rep("rack01", n))
        wait_until(lambda: link.last_error, what="the connection to fail")
    finally:
        link.close()
    [line] = link.shutdown_report()
    assert line.startswith("3 event(s) not delivered: cannot reach the broker at 127.0.0.1:")
    assert "connection refused" in line and f"3 stay in the outbox in {tmp_path / 'state'}" in line


def test_a_row_no_broker_could_take_is_set_aside_counted_and_the_queue_goes_on(broker, tmp_path, caplog):
    state = tmp_path / "state"
    with Outbox(state) as box:                                        # e.g. written by an older version, or by hand
        box.add(sample_rep("rack01", 1).to_wire(), "rackwatch/rack01/#")
    sub = Subscriber(broker, "rackwatch/#")
    link = RackLink(LinkSettings(rack="rack01", host=broker.host, port=broker.port, state_dir=state,
                                 reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)).start()
    try:
        good = sample_rep("rack01", 2)
        with caplog.at_level(logging.ERROR, logger="rackwatch.mqtt"):
            link.publish(good)
            assert link.wait_drained(10), "the queue stalled on the bad row"
        sub.wait_for(lambda s: good.id in {e["id"] for e in s.events("rackwatch/rack01/rep")}, what="the rep")
        assert link.losses()["events_unreadable"] == 1 and link.pump_failures == 0
        assert any("cannot be sent" in r.getMessage() for r in caplog.records)
    finally:
        link.close()
        sub.close()


def test_reps_dropped_for_a_full_outbox_in_a_long_outage_are_logged_counted_in_health_and_said_at_exit(tmp_path,
                                                                                                     caplog):
    settings = LinkSettings(rack="rack01", host="127.0.0.1", port=free_port(), state_dir=tmp_path / "state",
                            outbox_max=5, reconnect_min_s=1, reconnect_max_s=1, ha_discovery=False)   # broker away
    link = RackLink(settings).start()
    try:
        with caplog.at_level(logging.WARNING, logger="rackwatch.outbox"):
            for n in range(1, 9):
                link.publish(sample_rep("rack01", n))
        assert any("the outbox is full (5 events): dropped the oldest rep" in r.getMessage() for r in caplog.records)
        assert link.losses()["events_dropped"] == 3
    finally:
        link.close()
    report = link.shutdown_report()
    assert "5 stay in the outbox" in report[0]
    assert "3 event(s) dropped because the outbox was full" in report[1]


def test_rackwatch_run_on_a_damaged_outbox_starts_publishes_and_says_what_it_found(broker, tmp_path):
    """The issue's crash loop under systemd: a text file (or garbage, a directory ...) where the outbox should be."""
    frames = tmp_path / "frames"                                   # three black frames: state and health go out
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.zeros((240, 320, 3), np.uint8))
    state = tmp_path / "state"
    state.mkdir()
    (state / Outbox.FILENAME).write_text("not a database\n")
    sub = Subscriber(broker, "rackwatch/#")
    try:
        done = subprocess.run([sys.executable, "-m", "rackwatch.cli", "run", "--source", str(frames), "--speed", "max",
                               "--broker", f"mqtt://{broker.host}:{broker.port}", "--state-dir", str(state)],
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        [kept] = [p for p in state.iterdir() if ".damaged-" in p.name]
        assert kept.read_text() == "not a database\n"              # kept as it was
        assert f"was damaged (it is not an SQLite database (wrong header)): moved it aside to {kept.name}" \
            in done.stderr
        assert f"this run: 1 time(s) the outbox was found damaged; damaged files kept: {kept.name}" in done.stderr
        sub.wait_for(lambda s: s.events("rackwatch/rack01/health"), what="the health event")
        assert sub.events("rackwatch/rack01/health")[-1]["outbox_damaged"] == 1
        assert_contract(sub, rack="rack01")
    finally:
        sub.close()
