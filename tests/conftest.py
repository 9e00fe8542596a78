"""Shared fixtures: the real model, the real footage, and synthetic lifters for the pure stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

import real_parts
from rackwatch.pose import KP, Pose

# The broker fixtures start a real Mosquitto on a free port for the tests that ask for them.
from mqtt_broker import broker, secure_broker  # noqa: F401

PROJECT = real_parts.PROJECT
FOOTAGE = real_parts.FOOTAGE

# Property tests judge values, never speed: a busy machine (CI, a neighbour's job) must not fail one on the time
# an example took (Hypothesis's default 200 ms deadline).
settings.register_profile("rackwatch", deadline=None)
settings.load_profile("rackwatch")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """A test marked ``footage`` needs the labelled footage: a failure under CI=true, a skip elsewhere.

    First, before pytest's own skips: a test parametrized over the clips of a missing labels.json has an empty
    parameter set, which pytest would otherwise skip quietly.
    """
    if item.get_closest_marker("footage"):
        real_parts.footage()


def pytest_report_header(config):
    return (f"real parts: {'CI=true: a missing one FAILS' if real_parts.in_ci() else 'a missing one skips'}; "
            f"mosquitto {real_parts.find_program('mosquitto', 'RACKWATCH_MOSQUITTO')[0]}, footage {FOOTAGE}")


@pytest.fixture(scope="session")
def footage_dir() -> Path:
    return real_parts.footage()


@pytest.fixture(scope="session")
def labels(footage_dir) -> list[dict]:
    return json.loads((footage_dir / "labels.json").read_text())


@pytest.fixture(scope="session")
def interpreter():
    from rackwatch.models import find_model
    from rackwatch.pose import load_interpreter

    return load_interpreter(find_model())


@pytest.fixture(scope="session")
def analysed_at(interpreter, footage_dir):
    """``get(clip, fps=None)``: a labelled clip analysed by the real model, at its own rate or thinned to ``fps``
    (as ``rackwatch analyze --fps``), once per session; returns the result, every frame's ``(t, pose, height)``
    so that a test can replay the poses through the analysis without the model, and ``(t, event)`` for every
    event as it came out of the frame at ``t`` (those of the recording's end at its last frame's time)."""
    from rackwatch.load import LifterSettings
    from rackwatch.recording import analyze_recording

    cache = {}

    def get(clip: dict, fps: float | None = None):
        key = (clip["clip"], fps)
        if key not in cache:
            poses, emitted = [], []

            def on_frame(frame, pose, events):
                poses.append((frame.t, pose, frame.image.shape[0]))
                emitted.extend((frame.t, event) for event in events)

            result = analyze_recording(footage_dir / clip["clip"], interpreter, fps=fps,
                                       lifter=LifterSettings(exercise=clip["exercise"]), on_frame=on_frame)
            emitted.extend((poses[-1][0], event) for event in result.events[len(emitted):])
            cache[key] = (result, poses, emitted)
        return cache[key]
    return get


def standing_pose(*, hip_height: float = 400.0, knee_in: float = 0.0, depth: float = 0.0, x: float = 500.0,
                  stance: float = 120.0, shoulder_drop: float = 0.0, score: float = 0.9) -> Pose:
    """A front-view lifter drawn by numbers (pixels; image y points down).

    ``depth`` is the share of standing hip height lost; ``knee_in`` moves both knees toward the midline;
    ``shoulder_drop`` lowers the shoulders toward the hips (bending over).
    """
    ankle_y = 900.0
    hip_y = ankle_y - hip_height * (1 - depth)
    knee_y = (hip_y + ankle_y) / 2
    xy = np.zeros((17, 2), np.float32)
    # The lifter faces the camera: their left side is on the image's right (+x).
    for side, sign in (("left", 1), ("right", -1)):
        xy[KP[f"{side}_hip"]] = (x + sign * 60, hip_y)
        xy[KP[f"{side}_knee"]] = (x + sign * (stance - knee_in), knee_y)
        xy[KP[f"{side}_ankle"]] = (x + sign * stance, ankle_y)
        xy[KP[f"{side}_shoulder"]] = (x + sign * 90, hip_y - 250 + shoulder_drop)
        xy[KP[f"{side}_elbow"]] = (x + sign * 110, hip_y - 130)
        xy[KP[f"{side}_wrist"]] = (x + sign * 110, hip_y - 20)
        xy[KP[f"{side}_eye"]] = (x + sign * 15, hip_y - 340)
        xy[KP[f"{side}_ear"]] = (x + sign * 30, hip_y - 335)
    xy[KP["nose"]] = (x, hip_y - 330)
    return Pose(xy=xy, score=np.full(17, score, np.float32))
