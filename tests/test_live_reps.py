"""Live reps without waiting: `rackwatch run` publishes each rep as it ends, and a stop part-way loses none.

Real parts: a real Mosquitto, the real model, a real clip played at its own frame rate as a camera would deliver
it. Waits are on the events themselves, never on sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import FOOTAGE
from mqtt_broker import Subscriber, assert_contract, unique

pytestmark = [pytest.mark.broker, pytest.mark.footage]

NINE_REPS = FOOTAGE / "kratika" / "squat_front_bodyweight.mp4"   # 9 complete reps in 17 s


def start_rack(broker, tmp_path, source) -> subprocess.Popen:
    """``rackwatch run`` as rack01 on ``source`` at real-time pace, publishing to ``broker``."""
    return subprocess.Popen(
        [sys.executable, "-m", "rackwatch.cli", "run", "--source", str(source), "--rack", "rack01",
         "--broker", f"mqtt://{broker.host}:{broker.port}", "--speed", "realtime",
         "--state-dir", str(tmp_path / "state")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, env=dict(os.environ))


def stop_part_way(broker, tmp_path, source, *, after: int, stop: signal.Signals, what: str):
    """Run rack01 on ``source``, stop it with ``stop`` once ``after`` reps are published (the set still open), and
    check that every rep it judged was published, in order. Returns the subscriber (closed), the reps and stderr."""
    sub = Subscriber(broker, "rackwatch/rack01/#")
    rack = start_rack(broker, tmp_path, source)
    try:
        sub.wait_for(lambda s: len(unique(s.events("rackwatch/rack01/rep"))) >= after, timeout=60, what=what)
        assert not unique(sub.events("rackwatch/rack01/set")), "the set was still open"
        rack.send_signal(stop)
        out, err = rack.communicate(timeout=60)
    finally:
        if rack.poll() is None:
            rack.kill()
    assert rack.returncode == 0, err
    sub.wait_for(lambda s: unique(s.events("rackwatch/rack01/set")), timeout=30, what="the set summary")
    sub.close()
    judged = [int(n) for n in re.findall(r"^rep (\d+):", out, re.MULTILINE)]   # every rep the rack completed
    reps = sorted(unique(sub.events("rackwatch/rack01/rep")), key=lambda r: r["rep"])
    assert [r["rep"] for r in reps] == judged == list(range(1, len(judged) + 1)), err
    return sub, reps, err


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_rack_stopped_part_way_has_published_every_rep_it_completed(broker, tmp_path, stop):
    # The reps come out while the lifter squats, not when the set closes: wait for the third, then stop.
    sub, reps, err = stop_part_way(broker, tmp_path, NINE_REPS, after=3, stop=stop,
                                   what="three reps published while the clip plays")
    assert "Traceback" not in err
    assert f"{signal.Signals(stop).name}: closing the set" in err
    assert 3 <= len(reps) < 9   # stopped part-way: some, not all
    (summary,) = unique(sub.events("rackwatch/rack01/set"))
    assert summary["reps"] == len(reps) and summary["set_id"] == reps[0]["set_id"]
    assert_contract(sub, rack="rack01")


@pytest.fixture(scope="module")
def never_still(tmp_path_factory, labels):
    """The nine reps of kratika's clip with the standing between them cut to a sixth of a second: a lifter who
    never stands still long enough to calibrate (``still_s``), as a folder of frames (played at 30 fps)."""
    import cv2

    label = next(c for c in labels if c["clip"] == "kratika/squat_front_bodyweight.mp4")
    keep = [0, 0, 0]   # the opening: a moment upright (a tenth of a second), not long enough to be still
    for rep in label["reps"]:
        keep += [i for i in range(max(rep["start"] - 2, 0), rep["end"] + 3) if i > keep[-1]]
    capture = cv2.VideoCapture(str(NINE_REPS))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(image, (640, 360), interpolation=cv2.INTER_AREA))
    capture.release()
    folder = tmp_path_factory.mktemp("never_still")
    for n, i in enumerate(keep):
        assert cv2.imwrite(str(folder / f"frame_{n:04d}.jpg"), frames[i], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return folder, len(label["reps"])


def test_a_lifter_who_never_stands_still_gets_each_rep_live_and_a_stop_loses_none(broker, tmp_path, never_still):
    folder, labelled = never_still
    # Without a still moment every rep used to wait for the set to close: now they come as they end.
    sub, reps, _err = stop_part_way(broker, tmp_path, folder, after=4, stop=signal.SIGINT,
                                    what="four reps published while the lifter, never still, squats on")
    assert 4 <= len(reps) < labelled
    (summary,) = unique(sub.events("rackwatch/rack01/set"))
    assert summary["reps"] == len(reps)
    assert_contract(sub, rack="rack01")
