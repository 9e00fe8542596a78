"""Idle mode: with nobody at the rack the model rests, and a lifter who walks in and squats at once loses no rep.

The real model on real clips, each behind an empty rack: ``EMPTY_S`` seconds of black frames at the clip's own
frame rate, then the clip, in which the lifter is there from its first frame and starts squatting within a
second (a lifter walking in and squatting straight away, as the camera would see it).
"""

from __future__ import annotations

import io

import pytest

from conftest import FOOTAGE
from rackwatch.camera import CameraSettings, Frame, VideoFile
from rackwatch.host import SystemdNotifier
from rackwatch.load import SettingsStore
from rackwatch.service import IdleMode, RackService
from rackwatch.sinks import ListSink

pytestmark = pytest.mark.footage

EMPTY_S = 15.0
IDLE_AFTER_S, IDLE_FPS = CameraSettings().idle_after_s, CameraSettings().idle_fps   # the defaults: 10 s, 2 fps

# Each starts squatting almost at once (when its first rep starts, in seconds of the clip):
CLIPS = ["calimiro_workouttracker/squat_19.mp4",   # 2 reps, the first from 0.6 s
         "kratika/squat_front_bodyweight.mp4",     # 9 reps, the first from 0.08 s
         "etireznikov/squat_good.mp4"]             # 1 rep, from the first frame


class EmptyRackThenClip:
    """``empty_s`` seconds of black frames, then every frame of a clip, timed at the clip's frame rate; notes at
    which frame times the model was asked for a pose (through :class:`CountingModel`)."""

    channels = "bgr"
    dropped = 0

    def __init__(self, clip: str, empty_s: float):
        video = VideoFile(FOOTAGE / clip)
        try:
            self.images = [frame.image for frame in video.frames()]
        finally:
            video.close()
        self.fps = video.fps
        self.empty = round(empty_s * self.fps)
        self.frame_count = self.empty + len(self.images)
        self.t: float | None = None   # the frame being judged

    def frames(self):
        black = self.images[0] * 0
        for index in range(self.frame_count):
            self.t = index / self.fps
            yield Frame(index, self.t, black if index < self.empty else self.images[index - self.empty])

    def close(self) -> None:
        pass


class CountingModel:
    """The real interpreter, noting the frame time of every invoke."""

    def __init__(self, interpreter, source: EmptyRackThenClip):
        self._real, self._source = interpreter, source
        self.calls: list[float] = []

    def invoke(self) -> None:
        self.calls.append(self._source.t)
        self._real.invoke()

    def __getattr__(self, name):
        return getattr(self._real, name)


def judge(tmp_path, interpreter, clip: str, empty_s: float, idle: IdleMode | None):
    source = EmptyRackThenClip(clip, empty_s)
    model = CountingModel(interpreter, source)
    sink = ListSink()
    service = RackService(sink, SettingsStore(tmp_path / f"state-{empty_s}"), model, source, rack="rack01",
                          notifier=SystemdNotifier({}), out=io.StringIO(), idle=idle)
    assert service.run() == 0
    return sink, model.calls, source


@pytest.mark.parametrize("clip", CLIPS)
def test_an_empty_rack_idles_and_a_lifter_who_walks_in_and_squats_at_once_loses_no_rep(tmp_path, interpreter,
                                                                                      clip):
    alone, _, _ = judge(tmp_path, interpreter, clip, 0.0, None)
    reps_alone = alone.of_type("rep")
    assert reps_alone, f"{clip}: no rep even without the empty stretch"

    idle = IdleMode(IDLE_AFTER_S, IDLE_FPS)
    sink, calls, source = judge(tmp_path, interpreter, clip, EMPTY_S, idle)

    # The model rested: full rate for the first idle_after_s of the empty rack, then idle_fps until the lifter.
    awake = [t for t in calls if t < IDLE_AFTER_S]
    resting = [t for t in calls if IDLE_AFTER_S + 1 <= t < EMPTY_S]   # a whole second for the switch
    assert len(awake) == pytest.approx(IDLE_AFTER_S * source.fps, abs=2)
    assert len(resting) == pytest.approx((EMPTY_S - IDLE_AFTER_S - 1) * IDLE_FPS, abs=1)
    assert idle.skipped >= (EMPTY_S - IDLE_AFTER_S - 1) * (source.fps - IDLE_FPS) - 2

    # ...and woke at once: within one idle period of the clip's start, then every frame of the clip was judged.
    woke = min(t for t in calls if t >= EMPTY_S)
    assert woke - EMPTY_S <= 1 / IDLE_FPS + 1e-6
    clip_calls = [t for t in calls if t >= woke]
    assert len(clip_calls) == len(source.images) - round((woke - EMPTY_S) * source.fps)

    # The rack's state said so: awake, resting through the empty rack, awake again for the lifter.
    said = [state.idle for state in sink.of_type("state")]
    assert [v for i, v in enumerate(said) if i == 0 or v != said[i - 1]] == [False, True, False]
    assert {state.idle for state in alone.of_type("state")} == {None}   # judged frame by frame: never idle

    # No rep lost: the same reps as the clip alone, at the same moments of the clip.
    reps = sink.of_type("rep")
    assert [r.rep for r in reps] == [r.rep for r in reps_alone]
    for rep, rep_alone in zip(reps, reps_alone):
        assert rep.t_bottom - EMPTY_S == pytest.approx(rep_alone.t_bottom, abs=0.2)
        assert rep.verdict == rep_alone.verdict


def test_idle_mode_judges_on_the_beat_and_wakes_on_the_first_frame_with_a_lifter():
    idle = IdleMode(idle_after_s=10, idle_fps=2)
    fps = 25
    judged = []
    for index in range(20 * fps):
        t = index / fps
        if idle.wants(t):
            judged.append(t)
            idle.judged(t, lifter_seen=t >= 15.02)   # someone steps in at 15 s
    asleep = [t for t in judged if 10 <= t < 15]
    assert len(asleep) == 10                                  # 2 a second for those 5 s
    assert all(b - a == pytest.approx(0.5, abs=0.04) for a, b in zip(asleep, asleep[1:]))   # on the beat
    first_seen = min(t for t in judged if t >= 15.02)
    assert first_seen <= 15.02 + 0.5 + 1 / fps                 # seen at the next beat, at the latest
    assert [t for t in judged if t > first_seen] == [i / fps for i in range(round(first_seen * fps) + 1, 20 * fps)]
    assert not idle.idle and idle.skipped == 20 * fps - len(judged)   # every frame let go is counted


@pytest.mark.broker
def test_rackwatch_run_idles_on_live_frames_and_never_on_a_recording_at_full_speed(broker, tmp_path):
    """The wiring of ``rackwatch run``: a recording played in real time (live frames, like the camera's) idles as
    the config says; the same recording at ``--speed max`` is judged frame by frame."""
    import os
    import subprocess
    import sys

    import cv2
    import numpy as np

    from mqtt_broker import Subscriber

    frames = tmp_path / "empty-rack"   # 3 s of an empty rack at 30 fps (a folder of images plays at 30 fps)
    frames.mkdir()
    for i in range(90):
        assert cv2.imwrite(str(frames / f"{i:03d}.png"), np.zeros((120, 160, 3), np.uint8))
    config = tmp_path / "rackwatch.toml"
    config.write_text("[camera]\nidle_after_s = 1.0\nidle_fps = 2.0\n")
    results = {}
    for speed in ("realtime", "max"):
        sub = Subscriber(broker, f"rackwatch/rack-{speed}/state", client_id=f"watch-{speed}")
        result = subprocess.run(
            [sys.executable, "-m", "rackwatch.cli", "--config", str(config), "run", "--source", str(frames),
             "--speed", speed, "--rack", f"rack-{speed}", "--broker", f"mqtt://{broker.host}:{broker.port}",
             "--state-dir", str(tmp_path / f"state-{speed}")],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=dict(os.environ))
        assert result.returncode == 0, result.stderr
        sub.wait_for(lambda s: len(s.events()) >= 2, what="the states")
        results[speed] = (result.stderr, [state["idle"] for state in sub.events()])
        sub.close()
    stderr, idle = results["realtime"]
    assert True in idle and idle[0] is False   # awake at the start, resting after a second of nobody
    assert "let go while idle" in stderr
    stderr, idle = results["max"]
    assert set(idle) == {None} and "90 frames," in stderr   # every frame judged
