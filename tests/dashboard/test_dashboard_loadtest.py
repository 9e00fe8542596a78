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
