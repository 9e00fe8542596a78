"""``bench_publish``: how fast a rack can hand events to the broker, and what the durable outbox costs.

What matters on a Pi:

* ``outbox_ms_per_rep`` -- the time ``RackLink.publish`` blocks the caller (the frame loop) for a rep, which is
  one SQLite commit with fsync: the price of never losing a rep to a power cut.
* ``outbox_ms_per_state`` -- the same for a state snapshot, committed without fsync (several come per rep).
* ``acked_per_s`` -- events per second from the first ``publish`` until the broker has acknowledged the last
  one. A rack needs a few per second; the figure shows the headroom for a replay after a long outage.

The events go to a throwaway topic root (``rackwatch-bench``) and rack id, and a throwaway state directory, so a
benchmark never mixes with a real rack's outbox or topics.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from . import events
from .mqtt import LinkSettings, RackLink


def _bench_rep(rack: str, n: int) -> events.RepEvent:
    return events.RepEvent(
        rack=rack, set_id="bench", rep=n + 1, exercise="squat", working_leg="both", t_start=n, t_bottom=n + 1.0,
        t_end=n + 2.0, load=events.load_info(100.0, "kg", 140.0),
        valgus={side: events.LegValgus(severity="none", measured="none", cave=-0.02, peak_phase="ascent",
                                       t_peak=n + 1.5) for side in ("left", "right")},
        severity="none", verdict="clean", depth=0.4, descent_s=1.0, ascent_s=1.0, ascent_speed=0.5,
        stance_ratio=1.2, hip_shift=0.0)


def bench_publish(n: int, broker_host: str = "localhost", broker_port: int = 1883, *,
                  username: str | None = None, password: str | None = None, timeout: float = 120.0,
                  topic_root: str = "rackwatch-bench") -> dict[str, Any]:
    """Publish ``n`` rep events, each followed by a state event, through a :class:`RackLink` and measure.

    Returns a dict of plain numbers.

    Raises ``RuntimeError`` if the broker cannot be reached or does not acknowledge everything in ``timeout``.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rack = f"bench-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-") as state_dir:
        settings = LinkSettings(rack=rack, host=broker_host, port=broker_port, topic_root=topic_root,
                                username=username, password=password, state_dir=state_dir, ha_discovery=False)
        link = RackLink(settings).start()
        try:
            if not link.wait_connected(10):
                raise RuntimeError(f"cannot reach the MQTT broker at {broker_host}:{broker_port} "
                                   f"({link.last_error or 'no answer'}); is it running?")
            pairs = [(_bench_rep(rack, i), events.StateEvent(rack=rack, phase="standing", lifter_seen=True,
                                                             load=None, exercise="squat", set_id="bench",
                                                             reps_in_set=i)) for i in range(n)]
            in_rep = in_state = 0.0
            started = time.perf_counter()
            for rep, state in pairs:
                t0 = time.perf_counter()
                link.publish(rep)
                t1 = time.perf_counter()
                link.publish(state)
                in_rep += t1 - t0
                in_state += time.perf_counter() - t1
            if not link.wait_drained(timeout):
                raise RuntimeError(f"the broker acknowledged only {2 * n - link.outbox_depth} of {2 * n} events "
                                   f"in {timeout:.0f} s")
            elapsed = time.perf_counter() - started
            return {
                "events": 2 * n,
                "acked": 2 * n - link.outbox_depth,
                "seconds": round(elapsed, 3),
                "acked_per_s": round(2 * n / elapsed, 1),
                "outbox_ms_per_rep": round(1000.0 * in_rep / n, 3),
                "outbox_ms_per_state": round(1000.0 * in_state / n, 3),
                "broker": f"{broker_host}:{broker_port}",
            }
        finally:
            link.close()
