"""The overlay a coach reads, checked on the pixels of real frames: the real model on a portrait phone clip (rotated
by its metadata), a landscape clip and a side-view clip whose reps are not judged.

Each frame is drawn twice: with no pose, every pixel that changed is the header's (so its box can be found from
the pixels, and must not touch the frame's edge, where a box cut off by the edge would end); with the model's
pose, the legs must be in their side's colour.
"""

from __future__ import annotations

import numpy as np
import pytest

from rackwatch.events import NotCountedEvent
from rackwatch.overlay import (BANNER_SECONDS, BOX_COLOUR, SIDE_COLOURS, VERDICT_COLOURS, Line, OverlayWriter, draw,
                               layout, legend, rep_lines, short_reason, shown_lines)
from rackwatch.pose import KP, Pose

import cv2   # a hard dependency of rackwatch: present wherever it is installed

PORTRAIT = "lnewco/IMG_7027_front.mov"
LANDSCAPE = "calimiro_workouttracker/squat_19.mp4"
SIDE = "rohanx01/squat_side.mp4"
MIN_SCORE = 0.3


class Clip:
    """A clip analysed once: its reps, and for each rep the frame at its bottom with the model's pose.

    Every frame is kept as a JPEG while the model runs, so a clip is decoded once (a phone's HEVC .mov decodes
    slowly, and a PNG takes 0.1 s a frame to write); the checks compare what is drawn with that very image.
    """

    def __init__(self, path, interpreter):
        from rackwatch.recording import analyze_recording

        seen: dict[int, tuple[bytes, Pose]] = {}

        def keep(frame, pose, _events):
            ok, jpeg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            seen[frame.index] = (jpeg, pose)

        result = analyze_recording(path, interpreter, on_frame=keep)
        self.reps = result.reps
        self.frames = []   # (image, pose, rep)
        for rep in self.reps:
            jpeg, pose = seen[round(rep.t_bottom * result.fps)]
            self.frames.append((cv2.imdecode(jpeg, cv2.IMREAD_COLOR), pose, rep))


@pytest.fixture(scope="module")
def clips(footage_dir, interpreter):
    return {name: Clip(footage_dir / name, interpreter) for name in (PORTRAIT, LANDSCAPE, SIDE)}


NOBODY = Pose(xy=np.zeros((17, 2)), score=np.zeros(17))


def header_box(image, rep):
    """The bounding box of every pixel the header changed, found from the pixels alone."""
    changed = np.any(draw(image, NOBODY, MIN_SCORE, rep) != image, axis=2)
    ys, xs = np.nonzero(changed)
    return xs.min(), ys.min(), xs.max(), ys.max()


def pixels(canvas, colour, box=None):
    if box is not None:
        x0, y0, x1, y1 = box
        canvas = canvas[y0:y1 + 1, x0:x1 + 1]
    return int(np.all(canvas == np.array(colour, np.uint8), axis=2).sum())


@pytest.mark.footage
@pytest.mark.parametrize("name", [PORTRAIT, LANDSCAPE, SIDE])
def test_the_header_is_a_whole_box_inside_the_frame_with_the_legend_and_the_verdict(clips, name):
    clip = clips[name]
    assert clip.frames, f"no rep found in {name}"
    for image, _pose, rep in clip.frames:
        height, width = image.shape[:2]
        if name == PORTRAIT:
            assert height > width   # the phone's rotation applied: portrait, as it was filmed
        canvas = draw(image, NOBODY, MIN_SCORE, rep)
        x0, y0, x1, y1 = header_box(image, rep)
        # Inside the frame, not touching its edges: nothing was cut off.
        assert 0 < x0 and 0 < y0 and x1 < width - 1 and y1 < height - 1
        # A whole box: its border runs the full length of all four sides, in the verdict's colour.
        border = np.array(VERDICT_COLOURS[rep.verdict], np.uint8)
        for edge in (canvas[y0, x0:x1 + 1], canvas[y1, x0:x1 + 1], canvas[y0:y1 + 1, x0], canvas[y0:y1 + 1, x1]):
            assert np.all(edge == border)
        inner = (x0 + 3, y0 + 3, x1 - 3, y1 - 3)
        area = (x1 - x0 - 5) * (y1 - y0 - 5)
        assert pixels(canvas, BOX_COLOUR, inner) > 0.5 * area   # a dark backing under the text
        # The legend's swatches, one per side, big enough to see: squares of the text's height, which is
        # scaled to the frame (at least 1.5 % of its shorter side).
        swatch = max(12, int(0.015 * min(width, height)))
        for side in ("left", "right"):
            assert pixels(canvas, SIDE_COLOURS[side], inner) >= swatch * swatch, side
        # The verdict's words in its colour (inside the border).
        assert pixels(canvas, VERDICT_COLOURS[rep.verdict], inner) > 20
        # Nothing else changed: the header is all the overlay adds where there is no pose.
        outside = np.any(canvas != image, axis=2)
        outside[y0:y1 + 1, x0:x1 + 1] = False
        assert not outside.any()


@pytest.mark.footage
@pytest.mark.parametrize("name", [PORTRAIT, LANDSCAPE])
def test_each_leg_is_drawn_in_its_sides_colour(clips, name):
    for image, pose, rep in clips[name].frames:
        canvas = draw(image, pose, MIN_SCORE, rep)
        for side in ("left", "right"):
            for a, b in ((f"{side}_hip", f"{side}_knee"), (f"{side}_knee", f"{side}_ankle")):
                assert pose.score[KP[a]] >= MIN_SCORE and pose.score[KP[b]] >= MIN_SCORE, (name, a, b)
                middle = ((pose.xy[KP[a]] + pose.xy[KP[b]]) / 2).astype(int)
                assert tuple(canvas[middle[1], middle[0]]) == SIDE_COLOURS[side], (name, a, b)
        # In a front view the lifter's left leg is on the picture's right: the colours, not the position, say
        # which is which, and the legend says it in words.
        assert pose.xy[KP["left_knee"], 0] > pose.xy[KP["right_knee"], 0]
    assert SIDE_COLOURS["left"] != SIDE_COLOURS["right"]
    assert not set(SIDE_COLOURS.values()) & set(VERDICT_COLOURS.values())
    assert [line.text for line in legend()] == ["lifter's left leg", "lifter's right leg"]


@pytest.mark.footage
def test_an_unjudged_rep_reads_not_judged_with_its_reason_shortened(clips):
    frames = [(image, rep) for image, _pose, rep in clips[SIDE].frames if rep.verdict == "unjudged"]
    assert frames
    for image, rep in frames:
        height, width = image.shape[:2]
        lines = rep_lines(rep)
        assert lines[0].text == f"rep {rep.rep}: not judged"
        reason = short_reason(rep.unjudged_reason)
        assert reason and len(reason) <= 90 and rep.unjudged_reason.startswith(reason.rstrip("."))
        assert lines[1].text == reason
        header = layout(width, height, legend() + lines)
        # Every word of the reason is shown (wrapped if need be), within the box.
        assert " ".join(line.text for line in header.lines[3:]) == reason
        x0, y0, x1, y1 = header_box(image, rep)
        canvas = draw(image, NOBODY, MIN_SCORE, rep)
        last_line = (x0 + 3, y1 - header.pad - header.line_height, x1 - 3, y1 - 3)
        assert pixels(canvas, (235, 235, 235), last_line) > 20   # the reason's light text on the dark box


JUMP = NotCountedEvent(rack=None, set_id=None, exercise="squat", t_start=1.0, t_end=1.8, why="jump",
                       reason="both feet left the floor (0.21 hip heights): a jump, not a squat")


@pytest.mark.footage
def test_a_movement_not_counted_reads_not_counted_and_why(clips):
    image = clips[PORTRAIT].frames[0][0]
    assert [line.text for line in shown_lines(JUMP)] == ["not counted: a jump, not a squat"]
    canvas = draw(image, NOBODY, MIN_SCORE, JUMP)
    x0, y0, x1, y1 = header_box(image, JUMP)
    grey = np.array(VERDICT_COLOURS["unjudged"], np.uint8)
    for edge in (canvas[y0, x0:x1 + 1], canvas[y1, x0:x1 + 1], canvas[y0:y1 + 1, x0], canvas[y0:y1 + 1, x1]):
        assert np.all(edge == grey)
    assert pixels(canvas, VERDICT_COLOURS["unjudged"], (x0 + 3, y0 + 3, x1 - 3, y1 - 3)) > 20   # its words
    # One line more than the legend alone.
    assert y1 - y0 > header_box(image, None)[3] - header_box(image, None)[1]


def test_the_overlay_video_says_not_counted_for_two_seconds(tmp_path):
    fps, grey = 10, np.full((360, 640, 3), 128, np.uint8)
    path = tmp_path / "overlay.mp4"
    writer = OverlayWriter(path, fps, MIN_SCORE)
    for i in range(40):
        t = i / fps
        writer.add(t, grey, NOBODY, [JUMP] if i == 10 else [])
    writer.close()
    legend_only = layout(640, 360, legend())
    below_legend = slice(legend_only.box[3] + 4, legend_only.box[3] + legend_only.line_height)
    column = slice(legend_only.box[0] + 8, legend_only.box[0] + 40)
    video, boxed = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        # Under the legend: the header's dark box while "not counted" shows, the picture's grey otherwise.
        boxed.append(frame[below_legend, column].mean() < 80)
    video.release()
    shown = [i for i, dark in enumerate(boxed) if dark]
    assert len(boxed) == 40
    assert shown == list(range(10, 10 + round(BANNER_SECONDS * fps) + 1))


@pytest.mark.parametrize("width, height", [(360, 640), (1080, 1920), (1920, 1080), (200, 120)])
def test_long_text_wraps_and_the_box_fits_any_frame(width, height):
    words = "The camera sees the lifter too far from the side to judge the knees " * 3
    header = layout(width, height, legend() + [Line("rep 12: not judged"), Line(words.strip())])
    x0, y0, x1, y1 = header.box
    assert 0 < x0 < x1 < width - 1 and 0 < y0 < y1 < height - 1
    for line in header.lines:
        text_width = cv2.getTextSize(line.text, cv2.FONT_HERSHEY_SIMPLEX, header.font_scale, header.thickness)[0][0]
        assert x0 + header.pad + text_width <= x1
    assert len(header.lines) > 4 or height < 200   # wrapped, not cut, where there is room


@pytest.mark.footage
def test_analyze_writes_a_portrait_overlay_and_rep_pictures_for_a_portrait_clip(footage_dir, tmp_path):
    import subprocess
    import sys

    out, pictures = tmp_path / "overlay.mp4", tmp_path / "reps"
    result = subprocess.run([sys.executable, "-m", "rackwatch.cli", "analyze", str(footage_dir / PORTRAIT),
                             "--overlay", str(out), "--rep-frames", str(pictures), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out))
    ok, frame = capture.read()
    capture.release()
    assert ok and frame.shape[:2] == (1920, 1080)   # portrait, as filmed
    png = cv2.imread(str(pictures / "rep-01.png"))
    assert png.shape[:2] == (1920, 1080)
    x0, y0, _, _ = layout(1080, 1920, legend()).box
    assert tuple(png[y0 + 2, x0 + 2]) == BOX_COLOUR   # the header's dark box, inside its border
