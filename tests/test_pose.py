"""The pose stage: the crop that follows the lifter, keypoints mapped back to frame pixels, recovery when the
lifter leaves and comes back, model loading, channel order.

Everything except the pure geometry of :func:`next_crop` runs the real MoveNet model on real footage.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import standing_pose
from rackwatch.camera import VideoFile
from rackwatch.pose import (
    DEFAULT_MIN_SCORE,
    KP,
    Crop,
    Pose,
    PoseError,
    PoseEstimator,
    available_runtimes,
    load_interpreter,
    next_crop,
)

CLIP = "kratika/squat_front_bodyweight.mp4"  # 1280x720, front view, full body, 9 bodyweight reps
LEGS = [KP[f"{side}_{joint}"] for joint in ("hip", "knee", "ankle") for side in ("left", "right")]


@pytest.fixture(scope="module")
def clip_frames(footage_dir) -> list[np.ndarray]:
    """The first 140 frames of the clip (BGR, as VideoFile yields them): three reps and the start of a fourth."""
    video = VideoFile(footage_dir / CLIP)
    try:
        frames = []
        for frame in video.frames():
            frames.append(frame.image)
            if len(frames) == 140:
                break
    finally:
        video.close()
    assert frames[0].shape == (720, 1280, 3)
    return frames


@pytest.fixture(scope="module")
def rep_starts(labels) -> list[int]:
    """Frames where the lifter stands tall (start of each labelled rep) among the frames loaded."""
    clip = next(c for c in labels if c["clip"] == CLIP)
    return [rep["start"] for rep in clip["reps"] if rep["start"] < 140]


def _leg_length(pose: Pose) -> float:
    """Mean over both sides of hip->knee + knee->ankle, in pixels."""
    lengths = []
    for side in ("left", "right"):
        hip, knee, ankle = (pose.xy[KP[f"{side}_{j}"]] for j in ("hip", "knee", "ankle"))
        lengths.append(np.linalg.norm(knee - hip) + np.linalg.norm(ankle - knee))
    return float(np.mean(lengths))


def _contains(crop: Crop, point: np.ndarray, margin: float) -> bool:
    x, y = point
    return (crop.x0 + margin <= x <= crop.x0 + crop.size - margin
            and crop.y0 + margin <= y <= crop.y0 + crop.size - margin)


# -- next_crop: pure geometry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", [["left_hip"], ["right_hip"], ["left_hip", "right_hip"]])
def test_no_crop_when_a_hip_is_missing(missing):
    pose = standing_pose()
    score = pose.score.copy()
    score[[KP[name] for name in missing]] = 0.1
    assert next_crop(Pose(pose.xy, score), 1920, 1080) is None


def test_no_crop_when_too_few_joints_are_confident():
    """Hips alone (plus knees and ankles: 6 joints) are not "clearly there": look at the whole frame."""
    pose = standing_pose()
    score = np.full(17, 0.1, np.float32)
    score[LEGS] = 0.9
    assert next_crop(Pose(pose.xy, score), 1920, 1080) is None
    score[[KP["left_shoulder"], KP["right_shoulder"]]] = 0.9  # 8 confident joints: enough
    assert next_crop(Pose(pose.xy, score), 1920, 1080) is not None


@pytest.mark.parametrize("stance", [120.0, 300.0, 420.0])
def test_wide_stance_fits_in_the_crop_with_a_margin(stance):
    pose = standing_pose(stance=stance, x=960.0)
    crop = next_crop(pose, 1920, 1080)
    assert crop is not None
    # Centred on the hips.
    hips = pose.xy[[KP["left_hip"], KP["right_hip"]]].mean(axis=0)
    np.testing.assert_allclose([crop.x0 + crop.size / 2, crop.y0 + crop.size / 2], hips, atol=1e-3)
    # Every confident joint, ankles of the wide stance included, lies inside with at least 5 % of the crop to spare.
    for i in np.flatnonzero(pose.visible()):
        assert _contains(crop, pose.xy[i], 0.05 * crop.size), (i, pose.xy[i], crop)


def test_unconfident_joints_do_not_stretch_the_crop():
    pose = standing_pose(x=960.0)
    reference = next_crop(pose, 1920, 1080)
    xy, score = pose.xy.copy(), pose.score.copy()
    xy[KP["left_wrist"]] = (1900.0, 50.0)  # a wild, unconfident guess far away
    score[KP["left_wrist"]] = 0.1
    assert next_crop(Pose(xy, score), 1920, 1080) == reference


@pytest.mark.parametrize("width,height", [(1920, 1080), (480, 848)])
def test_crop_size_is_clamped_between_a_quarter_of_the_long_side_and_the_long_side(width, height):
    long_side = max(width, height)
    tiny = standing_pose(x=width / 2)
    hips = tiny.xy[[KP["left_hip"], KP["right_hip"]]].mean(axis=0)
    # A lifter a few pixels tall (far away): the crop is still a quarter of the frame's long side.
    small = Pose(hips + (tiny.xy - hips) * 0.02, tiny.score)
    crop = next_crop(small, width, height)
    assert crop is not None and crop.size == pytest.approx(long_side / 4)
    # A lifter far bigger than the frame: the crop is never bigger than the long side.
    huge = Pose(hips + (tiny.xy - hips) * 10, tiny.score)
    crop = next_crop(huge, width, height)
    assert crop is not None and crop.size == pytest.approx(long_side)


def test_whole_frame_crop_is_the_frame_padded_to_a_square_about_its_centre():
    crop = Crop.whole(1280, 720)
    assert (crop.x0, crop.y0, crop.size) == (0.0, -280.0, 1280.0)
    crop = Crop.whole(480, 848)
    assert (crop.x0, crop.y0, crop.size) == (-184.0, 0.0, 848.0)


# -- the real model on real frames -----------------------------------------------------------------------------


def test_keypoints_map_back_to_frame_pixels(interpreter, clip_frames, rep_starts):
    """Whole frame vs the crop the estimator chose: the same legs, in the same frame pixels.

    The whole 1280x720 frame is squeezed into 192x192 (one model pixel is ~7 frame pixels), so the two estimates
    differ by model noise; a mapping error (wrong offset, scale or axis) would be off by hundreds of pixels.
    Tolerance, as a share of the standing leg length (hip->knee->ankle, ~250 px here): the median joint within
    10 % (~25 px, ~3.5 % of the frame height), every joint within 25 % (~60 px: one knee of the small whole-frame
    view can be ~50 px off).
    """
    estimator = PoseEstimator(interpreter)
    assert rep_starts, "the clip's labels should put rep starts in the first frames"
    for index in rep_starts:
        frame = clip_frames[index]
        estimator.reset()
        whole = estimator.estimate(frame)
        crop = estimator.crop
        assert crop is not None, f"frame {index}: the lifter should be found in the whole frame"
        assert crop.size < 1280  # a real zoom on the lifter, not the whole frame again
        cropped = estimator.estimate(frame)
        both = [i for i in LEGS if whole.score[i] >= DEFAULT_MIN_SCORE and cropped.score[i] >= DEFAULT_MIN_SCORE]
        assert len(both) >= 5, f"frame {index}: too few confident leg joints in both estimates"
        leg = _leg_length(cropped)
        distance = np.linalg.norm(whole.xy[both] - cropped.xy[both], axis=1)
        report = (index, dict(zip(both, distance.round(1))), round(leg))
        assert np.median(distance) <= 0.10 * leg, report
        assert distance.max() <= 0.25 * leg, report
        # And they are where a standing lifter's legs are in this frame: hips above knees above ankles.
        for side in ("left", "right"):
            assert cropped.xy[KP[f"{side}_hip"], 1] < cropped.xy[KP[f"{side}_knee"], 1] \
                < cropped.xy[KP[f"{side}_ankle"], 1]


def _shift_check(interpreter, frame: np.ndarray, padded: np.ndarray, shift: tuple[int, int]) -> int:
    """Follow the lifter in ``frame`` and, in step, in ``padded`` (the same frame with black bands added).

    At every step the crop in ``padded`` must be the crop in ``frame`` moved by ``shift``, the model input cut
    from it the same picture (the warp's fixed-point rounding may differ by one level on a handful of values),
    and the keypoints read back from one model output must land exactly ``shift`` apart. The model itself is not
    compared: this int8 MoveNet answers a single input value changed by one level with keypoints several pixels
    apart, which says nothing about the mapping. Returns how many steps went through a crop.
    """
    here, there = PoseEstimator(interpreter), PoseEstimator(interpreter)
    model_input = interpreter.tensor(interpreter.get_input_details()[0]["index"])
    cropped = 0
    for _ in range(3):  # the whole frame, then the crops the estimator chose
        h, w = frame.shape[:2]
        ph, pw = padded.shape[:2]
        crop, other = here.crop_for(w, h), there.crop_for(pw, ph)
        cropped += here.crop is not None
        assert other.size == pytest.approx(crop.size, abs=1e-3)
        assert (other.x0 - crop.x0, other.y0 - crop.y0) == pytest.approx(shift, abs=1e-3)
        there.prepare(padded, other)
        padded_input = model_input().astype(int)
        here.prepare(frame, crop)   # the estimators share the interpreter: the model then runs on this one
        differ = np.abs(model_input().astype(int) - padded_input)
        assert differ.max() <= 1 and np.count_nonzero(differ) <= 20
        here.invoke()
        a = here.read_pose(crop, w, h)
        b = there.read_pose(other, pw, ph)  # the same model output, read through the shifted crop
        np.testing.assert_array_equal(b.score, a.score)
        np.testing.assert_allclose(b.xy - shift, a.xy, atol=1e-3)
    return cropped


def test_black_bands_shift_the_keypoints_by_exactly_the_band(interpreter, clip_frames, footage_dir):
    """Add black bands above and below a landscape frame (inside the square the whole-frame view pads to anyway):
    the model sees the very same input, so every keypoint must move down by exactly the band, through the whole
    frame view and through the crops that follow. Same with bands left and right of a portrait frame (whole-frame
    view). This pins the crop -> frame mapping in both axes, including crops that reach past the frame's edges."""
    frame = clip_frames[0]  # 1280x720
    band = 100
    padded = np.zeros((frame.shape[0] + 2 * band, frame.shape[1], 3), np.uint8)
    padded[band:-band] = frame
    assert _shift_check(interpreter, frame, padded, (0, band)) >= 1, "the lifter should be followed by a crop"

    # A portrait frame, scaled so that its long side is 768 px: the whole-frame view is then an exact 1/4 scale
    # and the bands shift it by whole model pixels. (With an inexact scale, sub-pixel rounding in the warp changes
    # a few hundred input values at the band edges, and the int8 model's scores on this dim side view move by
    # up to 0.2: model sensitivity, not mapping.)
    video = VideoFile(footage_dir / "khammingfatt/Correct_Demo.mp4")  # portrait 480x848, a side view
    try:
        portrait = next(iter(video.frames())).image
    finally:
        video.close()
    import cv2

    portrait = cv2.resize(portrait, (432, 768), interpolation=cv2.INTER_AREA)
    band = 64
    padded = np.zeros((768, 432 + 2 * band, 3), np.uint8)
    padded[:, band:-band] = portrait
    here, there = PoseEstimator(interpreter), PoseEstimator(interpreter)
    a, b = here.estimate(portrait), there.estimate(padded)
    np.testing.assert_allclose(b.score, a.score, atol=0.02)
    np.testing.assert_allclose(b.xy - (band, 0), a.xy, atol=1.0)


def test_lifter_who_leaves_and_comes_back_is_found_again(interpreter, clip_frames):
    estimator = PoseEstimator(interpreter)
    for frame in clip_frames[:5]:
        estimator.estimate(frame)
    assert estimator.crop is not None, "after a few real frames the estimator should follow the lifter"

    black = np.zeros_like(clip_frames[0])  # the lifter has left (same size frame, nothing in it)
    for _ in range(3):
        pose = estimator.estimate(black)
        assert estimator.crop is None, "an empty frame must send the next look back to the whole frame"
        assert pose.visible().sum() < 8
        assert not pose.visible()[LEGS].any(), pose.score[LEGS]

    found_after = None
    for n, frame in enumerate(clip_frames[5:10], start=1):
        pose = estimator.estimate(frame)
        if pose.visible()[LEGS].all():
            found_after = n
            break
    assert found_after is not None and found_after <= 2, f"lifter found again only after {found_after} frames"
    assert estimator.crop is not None


def test_channel_order_bgr_frames_equals_rgb_frames_converted(interpreter, clip_frames):
    import cv2

    bgr = clip_frames[0]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from_bgr = PoseEstimator(interpreter, bgr_frames=True)
    from_rgb = PoseEstimator(interpreter, bgr_frames=False)
    for _ in range(2):  # the whole frame, then the crop each chose
        a, b = from_bgr.estimate(bgr), from_rgb.estimate(rgb)
        np.testing.assert_allclose(a.xy, b.xy, atol=1.0)
        np.testing.assert_allclose(a.score, b.score, atol=0.01)
        assert from_bgr.crop == from_rgb.crop


def test_channel_order_matters(interpreter, clip_frames):
    """Guard for the test above: reading a BGR frame as RGB does change what the model sees and says."""
    bgr = clip_frames[0]
    right = PoseEstimator(interpreter, bgr_frames=True).estimate(bgr)
    swapped = PoseEstimator(interpreter, bgr_frames=False).estimate(bgr)
    assert not np.allclose(right.score, swapped.score, atol=0.01)


# -- loading the model -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"this is not a model\n" * 50, bytes(range(256)) * 40])
def test_load_interpreter_rejects_a_file_that_is_not_a_model(tmp_path, content):
    path = tmp_path / "movenet.tflite"
    path.write_bytes(content)
    with pytest.raises(PoseError) as info:
        load_interpreter(path)
    message = str(info.value)
    assert str(path) in message
    assert "not a usable TFLite model" in message
    assert "rackwatch models fetch" in message  # says what to do


def test_load_interpreter_missing_file(tmp_path):
    with pytest.raises(PoseError, match="rackwatch models fetch"):
        load_interpreter(tmp_path / "nowhere.tflite")


def test_load_interpreter_unknown_runtime(tmp_path):
    with pytest.raises(PoseError, match="not installed"):
        load_interpreter(tmp_path / "nowhere.tflite", runtime="no_such_litert_runtime")


def test_available_runtimes_lists_what_is_installed_ai_edge_litert_first():
    import importlib.util

    runtimes = available_runtimes()
    installed = [name for name in ("ai_edge_litert", "tflite_runtime") if importlib.util.find_spec(name)]
    # ``installed`` is in the order of preference: ai_edge_litert first wherever it is installed.
    assert runtimes == installed and runtimes, "no LiteRT runtime is installed: pip install ai-edge-litert"
