"""``rackwatch loadtest`` end to end, small: its own broker and dashboard, every event accounted for."""

from __future__ import annotations

import json

import pytest

from dashboard_parts import rackwatch

pytestmark = pytest.mark.broker


def test_a_small_load_test_accounts_for_every_event():
    done = rackwatch("loadtest", "--racks", "5", "--seconds", "4", "--clients", "3", "--json")
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert {"events_per_s", "p50_ms", "p99_ms", "published", "stored", "lost", "duplicates"} <= set(figures)
    assert figures["published"] >= 5 * 4          # each rack's first state, then a busy rack's stream
    assert (figures["stored"], figures["lost"], figures["duplicates"]) == (figures["published"], 0, 0)
    assert figures["latency_samples"] > 0 and figures["p50_ms"] <= figures["p99_ms"]
    cpu = figures["cpu_cores"]   # the conditions: what each part took, and the rest of the machine
    assert {"loadtest", "dashboard", "broker", "others", "cores", "seconds"} <= set(cpu)
    assert cpu["dashboard"] > 0 and cpu["loadtest"] > 0 and 0 <= cpu["others"] <= cpu["cores"]


def test_a_load_test_stopped_with_sigterm_leaves_nothing_running(tmp_path):
    """A load test ended by a timeout or a cancelled job (SIGTERM) stops the dashboard and the broker it started."""
    import os
    import signal
    import subprocess
    import sys

    from mqtt_broker import wait_until

    process = subprocess.Popen([sys.executable, "-m", "rackwatch", "loadtest", "--racks", "5", "--seconds", "60",
                                "--clients", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "TMPDIR": str(tmp_path)})

    def children() -> list[int]:
        found = []
        for task in os.listdir(f"/proc/{process.pid}/task"):
            try:
                with open(f"/proc/{process.pid}/task/{task}/children") as listed:
                    found += [int(pid) for pid in listed.read().split()]
            except FileNotFoundError:   # that thread ended since the listing; its children are its process's
                pass
        return found

    def started_both() -> bool:   # the broker and the dashboard (the dashboard only once it serves)
        assert process.poll() is None, process.stderr.read().decode()
        workdirs = list(tmp_path.glob("rackwatch-loadtest-*"))
        return len(children()) >= 2 and any(b"(live board)" in (d / "dashboard.log").read_bytes()
                                             for d in workdirs if (d / "dashboard.log").exists())

    wait_until(started_both, timeout=60, what="the load test starting its broker and dashboard")
    started = children()
    process.send_signal(signal.SIGTERM)
    process.wait(30)

    def ended(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    wait_until(lambda: all(ended(pid) for pid in started), timeout=20, what="the dashboard and broker to stop")
    assert not list(tmp_path.glob("rackwatch-loadtest-*")), "the load test left its temporary folder"
