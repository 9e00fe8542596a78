"""`--fps N`: a recording thinned to the frames a slower rack would have taken, at the times it took them."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import FOOTAGE
from rackwatch.camera import Frame, SourceError, Thinned, VideoFile

TWO_REPS = FOOTAGE / "calimiro_workouttracker" / "squat_19.mp4"   # 25 fps, 143 frames, 2 reps


class Numbered:
    """A recording of ``count`` tiny frames at ``fps``, timed as VideoFile times them (index / fps)."""

    channels = "bgr"
    dropped = 0

    def __init__(self, fps: float, count: int):
        self.fps, self.frame_count = fps, count
        self.closed = False

    def frames(self):
        for i in range(self.frame_count):
            yield Frame(i, i / self.fps, np.zeros((2, 2, 3), np.uint8))

    def close(self):
        self.closed = True


@pytest.mark.parametrize("recorded, wanted", [(30.0, 10.0), (29.97, 10.0), (25.0, 10.0), (23.976, 8.0),
                                              (30.0, 9.0), (30.401, 8.0)])
def test_thinned_keeps_one_frame_per_tick_at_the_recordings_own_times(recorded, wanted):
    seconds = 60
    thinned = Thinned(Numbered(recorded, int(seconds * recorded)), wanted)
    kept = list(thinned.frames())
    assert thinned.fps == wanted
    # Exactly `wanted` a second, every second: one frame per tick, none drifting over a minute.
    per_second = np.bincount([int(f.t) for f in kept], minlength=seconds)
    assert set(per_second.tolist()) == {wanted}
    assert abs(len(kept) - seconds * wanted) <= 1
    for frame in kept:   # the recording's own index and time, untouched
        assert frame.t == frame.index / recorded
    # Each kept frame is the first at or after its tick: the one a camera at `wanted` fps would have taken.
    for frame in kept:
        tick = math.floor(frame.t * wanted + 1e-6)
        assert frame.index == 0 or (frame.index - 1) / recorded < tick / wanted - 1e-9
    gaps = set(np.diff([f.index for f in kept]))
    assert gaps <= {math.floor(recorded / wanted), math.ceil(recorded / wanted)}


def test_a_frame_exactly_on_a_tick_is_kept_despite_rounding():
    # 30 fps to 10: frames 0, 3, 6, ... fall exactly on the ticks (3/30 s is 0.1 s only up to rounding).
    kept = [f.index for f in Thinned(Numbered(30.0, 300), 10.0).frames()]
    assert kept == list(range(0, 300, 3))


def test_a_rate_at_or_above_the_recordings_keeps_every_frame():
    for wanted in (25.0, 60.0):
        thinned = Thinned(Numbered(25.0, 100), wanted)
        assert [f.index for f in thinned.frames()] == list(range(100))
        assert thinned.fps == 25.0


def test_a_rate_of_zero_or_less_is_refused_and_closing_closes_the_recording():
    for wanted in (0.0, -5.0):
        with pytest.raises(SourceError, match="above 0"):
            Thinned(Numbered(30.0, 10), wanted)
    source = Numbered(30.0, 10)
    Thinned(source, 10.0).close()
    assert source.closed


@pytest.mark.footage
def test_a_real_recording_thinned_to_10_fps():
    video = VideoFile(TWO_REPS)
    try:
        kept = list(Thinned(video, 10.0).frames())
    finally:
        video.close()
    # 143 frames at 25 fps last 5.68 s: ticks at 0, 0.1, ... 5.6 s, each met by the frame at or just after it.
    assert len(kept) == 57
    assert [f.index for f in kept[:6]] == [0, 3, 5, 8, 10, 13]


def rackwatch(*args):
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


@pytest.mark.footage
def test_analyze_fps_judges_the_thinned_recording_and_finds_its_rep_pictures(tmp_path):
    result = rackwatch("analyze", str(TWO_REPS), "--fps", "10", "--quiet", "--rep-frames", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "57 frames at 10.0 fps, thinned from 25.0" in result.stdout
    # The pictures are looked up by the recording's own frame numbers, which thinning keeps: one per rep found.
    reps = int(re.search(r": (\d+) reps in", result.stdout).group(1))
    assert reps >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"rep-{n:02d}.png" for n in range(1, reps + 1)]


@pytest.mark.parametrize("command", ["analyze", "eval"])
@pytest.mark.parametrize("value", ["0", "-3", "ten"])
def test_fps_that_is_no_frame_rate_is_refused_with_a_clear_message(tmp_path, command, value):
    target = str(TWO_REPS) if command == "analyze" else str(tmp_path)
    result = rackwatch(command, target, "--fps", value)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--fps" in result.stderr and ("out of range" in result.stderr or "not a number" in result.stderr)


def test_help_says_what_a_rate_above_the_recordings_does():
    for command in ("analyze", "eval"):
        result = rackwatch(command, "--help")
        assert "keeps every frame" in " ".join(result.stdout.split())
