"""`rackwatch aim` on real footage: each badly aimed camera gets the advice an installer can act on.

The views come from labels.json: a front view that films the whole lifter, a side view, a 60° oblique view. No
clip of the footage has the feet cut off, so one is made here from the good front view by cropping the bottom
fifth off every frame and writing the frames to a folder of images (a frame source rackwatch reads like a video).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import cv2
import pytest

from conftest import FOOTAGE
from rackwatch.aim import AimSettings, check_aim
from rackwatch.camera import VideoFile, open_frames
from rackwatch.config import load_config
from rackwatch.events import parse_event
from rackwatch.host import SystemdNotifier
from rackwatch.load import SettingsStore
from rackwatch.service import RackService
from rackwatch.sinks import ListSink

pytestmark = pytest.mark.footage

GOOD_FRONT = "etireznikov/squat_good.mp4"
SIDE = "khammingfatt/Correct_Demo.mp4"
OBLIQUE = "erayBD/squat_3_oblique.mp4"


def view_of(labels, clip) -> str:
    return next(label["view"] for label in labels if label["clip"] == clip)


def aim(interpreter, source):
    return check_aim(open_frames(str(source), "max"), interpreter)


def problems(report) -> list:
    return [f for f in report.findings if f.status == "problem"]


def test_a_good_front_view_passes(interpreter, labels):
    assert view_of(labels, GOOD_FRONT) == "front"
    report = aim(interpreter, FOOTAGE / GOOD_FRONT)
    assert report.camera_ready and report.reason == "camera ready"
    assert [f.status for f in report.findings] == ["ok"], report.findings
    assert report.measures["test_squats"] == 1 and report.measures["knees_seen_at_bottom"] >= 0.8


def test_a_side_view_is_told_to_move_the_camera_in_front(interpreter, labels):
    assert view_of(labels, SIDE) == "side"
    report = aim(interpreter, FOOTAGE / SIDE)
    assert not report.camera_ready
    [square] = problems(report)
    assert square.check == "aim: square" and "from the side" in square.summary
    assert "in front of the rack" in square.advice
    assert report.reason == square.summary


def test_an_oblique_view_is_told_it_makes_false_knee_caves(interpreter, labels):
    assert view_of(labels, OBLIQUE).startswith("side-oblique")
    report = aim(interpreter, FOOTAGE / OBLIQUE)
    [square] = problems(report)
    assert square.check == "aim: square" and "at an angle" in square.summary
    assert "false knee caves" in square.summary and "straight on" in square.advice


def feet_cut_off(folder):
    """The good front view with the bottom fifth of every frame (feet and shins) cut off, as a folder of images."""
    video = VideoFile(FOOTAGE / GOOD_FRONT)
    folder.mkdir()
    for frame in video.frames():
        height = frame.image.shape[0]
        cropped = frame.image[: int(height * 0.8)]    # the bottom fifth, feet and shins, gone
        small = cv2.resize(cropped, (cropped.shape[1] // 2, cropped.shape[0] // 2), interpolation=cv2.INTER_AREA)
        assert cv2.imwrite(str(folder / f"{frame.index:04d}.png"), small)
    video.close()
    return folder


def test_feet_cut_off_are_told_to_tilt_down_or_step_back(interpreter, tmp_path):
    report = aim(interpreter, feet_cut_off(tmp_path / "feet-cut"))
    [framing] = problems(report)
    assert framing.check == "aim: framing" and "feet are out of the picture" in framing.summary
    assert "Tilt the camera down" in framing.advice and "step" in framing.advice


def test_nobody_in_view_is_a_warning_not_a_verdict(interpreter, tmp_path):
    # An empty rack: the first frame of the good clip with the lifter painted out, ten times.
    frame = next(VideoFile(FOOTAGE / GOOD_FRONT).frames()).image
    frame[:] = 90
    for i in range(10):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), frame)
    report = aim(interpreter, tmp_path)
    assert report.camera_ready
    assert [(f.check, f.status) for f in report.findings] == [("aim: lifter", "warning")]


def test_too_few_frames_a_second_is_a_problem(interpreter):
    report = check_aim(open_frames(str(FOOTAGE / GOOD_FRONT), "max"), interpreter, model_fps=4.0)
    [slow] = problems(report)
    assert slow.check == "aim: frame rate" and "4.0 frames a second" in slow.summary
    assert report.fps == 4.0 and AimSettings().min_fps > 4.0


def test_the_aim_command_says_it_in_words_and_exits_non_zero(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rackwatch.cli", "aim", "--source", str(FOOTAGE / SIDE)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "[FAIL] aim: square: The camera sees the lifter from the side" in result.stdout
    assert "what to do: Mount the camera in front of the rack" in result.stdout
    as_json = subprocess.run([sys.executable, "-m", "rackwatch.cli", "aim", "--json", "--source",
                              str(FOOTAGE / GOOD_FRONT)], capture_output=True, text=True, timeout=300)
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["camera_ready"] is True and report["reason"] == "camera ready"


def test_the_aim_command_judges_by_the_config_files_aim_table(tmp_path):
    """The good front view, which passes with the defaults, asked for more frames a second than the clip has."""
    config = tmp_path / "rackwatch.toml"
    config.write_text("[aim]\nmin_fps = 100\n")
    result = subprocess.run([sys.executable, "-m", "rackwatch.cli", "--config", str(config), "aim", "--json",
                             "--source", str(FOOTAGE / GOOD_FRONT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert not report["camera_ready"] and "at least 100 are needed" in report["reason"], report["reason"]


# -- the same checks in the rack's state, for the dashboard's tile ---------------------------------------------------

@pytest.mark.parametrize("view, camera, reason", [
    (GOOD_FRONT, "ready", "camera ready"),
    (SIDE, "needs attention", "The camera sees the lifter from the side"),
    (OBLIQUE, "needs attention", "false knee caves"),
    ("feet cut off", "needs attention", "feet are out of the picture")])
def test_the_rack_publishes_in_its_state_whether_the_camera_is_ready_and_why(interpreter, tmp_path, view, camera,
                                                                             reason):
    source = feet_cut_off(tmp_path / "feet-cut") if view == "feet cut off" else FOOTAGE / view
    sink = ListSink()
    service = RackService(sink, SettingsStore(tmp_path / "state"), interpreter, open_frames(str(source), "max"),
                          rack="rack01", notifier=SystemdNotifier({}), out=io.StringIO())
    assert service.run() == 0
    states = sink.of_type("state")
    assert states[0].camera is None and states[0].camera_reason is None   # nothing known before a lifter stood
    told = [s for s in states if s.camera is not None]
    # Told while the lifter is there (once they stood still or, feet unseen, 2 s after they came), not only at the
    # end, and on every state after that.
    assert told and told[0] is not states[-1]
    assert all(s.camera is not None for s in states[states.index(told[0]):])
    last = states[-1]
    assert last.camera == camera and reason in last.camera_reason
    assert parse_event(last.to_json()).to_wire() == last.to_wire()   # on the wire and back, as the dashboard reads it


def test_the_rack_judges_its_aim_by_the_config_files_aim_table(interpreter, tmp_path):
    config = tmp_path / "rackwatch.toml"
    config.write_text("[aim]\nmin_fps = 100\n")
    sink = ListSink()
    service = RackService(sink, SettingsStore(tmp_path / "state"), interpreter,
                          open_frames(str(FOOTAGE / GOOD_FRONT), "max"), rack="rack01",
                          aim=load_config(config).aim, notifier=SystemdNotifier({}), out=io.StringIO())
    assert service.run() == 0
    last = sink.of_type("state")[-1]
    assert last.camera == "needs attention" and "at least 100 are needed" in last.camera_reason, last.camera_reason
