"""The Pi's frame rate: real footage thinned to 10 fps (as `rackwatch eval --fps 10`), counted against the labels.

A Pi 4 judges 9-10 frames a second; the footage was filmed at 24-30. Every usable clip, thinned as the rack would
have seen it and run through the real model, must give the labelled number of reps, each near its labelled
bottom, in one set, exactly as at full rate (tests/test_footage.py).
"""

from __future__ import annotations

import json

import pytest

from conftest import FOOTAGE

pytestmark = pytest.mark.footage

LABELS = json.loads((FOOTAGE / "labels.json").read_text()) if (FOOTAGE / "labels.json").is_file() else []
USABLE = [c for c in LABELS if c.get("usable", True)]
RACK_FPS = 10.0


@pytest.mark.parametrize("clip", USABLE, ids=[c["clip"] for c in USABLE])
def test_rep_count_at_10_fps_matches_the_labels(analysed_at, clip):
    result, poses, _ = analysed_at(clip, RACK_FPS)
    assert result.fps == RACK_FPS
    # Thinned, not merely relabelled: about ten frames a second of the clip were judged.
    assert abs(len(poses) - clip["frames"] / clip["fps"] * RACK_FPS) <= 1.5
    assert len(result.reps) == len(clip["reps"]), clip["notes"]
    for found, labelled in zip(result.reps, clip["reps"]):
        assert abs(found.t_bottom - labelled["bottom"] / clip["fps"]) <= 0.6
    assert len(result.sets) == 1 and result.sets[0].reps == len(clip["reps"])


@pytest.mark.parametrize("clip", USABLE, ids=[c["clip"] for c in USABLE])
def test_each_rep_at_10_fps_is_handed_on_within_a_second_of_its_end(analysed_at, clip):
    # As the rack would publish it: the frame that hands a rep on comes at most a second after the rep ended
    # (plant_after_s to see that the feet stayed down, and a frame), calibrated or not.
    result, _, emitted = analysed_at(clip, RACK_FPS)
    came = [(t, e) for t, e in emitted if e.type == "rep"]
    assert [e.id for _, e in came] == [e.id for e in result.reps]
    for t, rep in came:
        assert 0 <= t - rep.t_end <= 1.0, (rep.rep, rep.t_end, t)
