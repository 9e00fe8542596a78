"""Frame sources on real footage: phone rotation, decoded frame counts, image folders, the Pi camera off a Pi,
prefetching, the live (newest-frame) camera and damaged files."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rackwatch.camera import (
    ImageFolder,
    LiveCamera,
    PacedSource,
    Prefetched,
    SourceError,
    VideoFile,
    open_frames,
    open_source,
)

HYVA2 = "tuxotiikeri/hyva2.mp4"  # 1280x720, 25 fps: 227 frames decode though the container claims 276
FOLDER_FRAMES = 60


def _capture_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "capture" and t.is_alive()]


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "rackwatch-decode" and t.is_alive()]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, footage_dir):
    """The first 60 frames of hyva2.mp4, halved to 640x360 to keep PNG coding quick, as PNGs; and the frames."""
    import cv2

    folder = tmp_path_factory.mktemp("frames")
    video = VideoFile(footage_dir / HYVA2)
    images = []
    try:
        for frame in video.frames():
            images.append(cv2.resize(frame.image, (640, 360), interpolation=cv2.INTER_AREA))
            if len(images) == FOLDER_FRAMES:
                break
    finally:
        video.close()
    for i, image in enumerate(images):
        # Names whose order is only right when sorted as text with zero padding (frame_0009 before frame_0010).
        assert cv2.imwrite(str(folder / f"frame_{i:04d}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return folder, images


# -- VideoFile -------------------------------------------------------------------------------------------------


def test_phone_video_comes_out_upright(footage_dir, labels):
    """Correct_Demo.mp4 is stored landscape (848x480) with a 90 degree display rotation; VideoFile yields the
    upright portrait frames a phone would show."""
    import cv2

    path = footage_dir / "khammingfatt/Correct_Demo.mp4"
    # The premise: the stream is stored landscape, with rotation metadata.
    raw = cv2.VideoCapture(str(path))
    try:
        assert abs(raw.get(cv2.CAP_PROP_ORIENTATION_META)) == 90
        raw.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
        ok, stored = raw.read()
        assert ok and stored.shape[:2] == (480, 848)
    finally:
        raw.release()

    video = VideoFile(path)
    try:
        frames = list(video.frames())
    finally:
        video.close()
    label = next(c for c in labels if c["clip"] == "khammingfatt/Correct_Demo.mp4")
    assert len(frames) == label["frames"] == 96
    assert video.fps == pytest.approx(30.0)
    for frame in frames:
        assert frame.image.shape == (848, 480, 3)  # height > width: portrait
        assert frame.image.dtype == np.uint8
    assert [f.index for f in frames] == list(range(96))
    assert [f.t for f in frames] == pytest.approx([i / video.fps for i in range(96)])


@pytest.mark.parametrize("clip", [HYVA2, "calimiro_workouttracker/squat_19.mp4",
                                  "liftcheck/squat_front_barbell.mp4"])
def test_frame_count_matches_labels(footage_dir, labels, clip):
    label = next(c for c in labels if c["clip"] == clip)
    video = VideoFile(footage_dir / clip)
    try:
        indices = [frame.index for frame in video.frames()]
    finally:
        video.close()
    assert len(indices) == label["frames"]
    assert indices == list(range(label["frames"]))
    if clip == HYVA2:
        assert video.frame_count == 276  # the container's claim; what decodes (and labels.json counts) is 227
    assert video.fps == pytest.approx(label["fps"], abs=0.01)


def test_missing_video_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="No video at"):
        open_source(tmp_path / "nowhere.mp4")


# -- damaged files ---------------------------------------------------------------------------------------------


def _damaged_files(tmp_path, footage_dir):
    head = tmp_path / "head_10k.mp4"  # the first 10 KB of a real mp4: no decodable frame
    head.write_bytes((footage_dir / HYVA2).read_bytes()[:10_240])
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    return [head, noise, empty]


def test_damaged_video_is_a_source_error_not_a_crash(tmp_path, footage_dir):
    for path in _damaged_files(tmp_path, footage_dir):
        with pytest.raises(SourceError) as info:
            source = open_source(path)
            try:
                list(source.frames())
            finally:
                source.close()
        assert str(path) in str(info.value)


def test_damaged_video_through_prefetched_reaches_the_consumer(tmp_path, footage_dir):
    head = _damaged_files(tmp_path, footage_dir)[0]
    source = open_frames(str(head), speed="max")
    assert isinstance(source, Prefetched)
    try:
        with pytest.raises(SourceError, match="no frame that can be decoded"):
            list(source.frames())
    finally:
        source.close()


def test_damaged_video_played_in_realtime_reaches_the_consumer(tmp_path, footage_dir):
    head = _damaged_files(tmp_path, footage_dir)[0]
    source = open_frames(str(head), speed="realtime")
    assert isinstance(source, LiveCamera)
    try:
        with pytest.raises(SourceError, match="no frame that can be decoded"):
            list(source.frames())
    finally:
        source.close()


# -- ImageFolder -----------------------------------------------------------------------------------------------


def test_image_folder_yields_the_images_in_name_order(image_folder):
    folder, images = image_folder
    source = open_source(folder)
    assert isinstance(source, ImageFolder)
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert source.fps == 30.0 and source.frame_count == FOLDER_FRAMES
    assert [f.index for f in frames] == list(range(FOLDER_FRAMES))
    assert [f.t for f in frames] == pytest.approx([i / 30.0 for i in range(FOLDER_FRAMES)])
    for frame, image in zip(frames, images):
        np.testing.assert_array_equal(frame.image, image)  # PNG is lossless: the very frames, in order


def test_image_folder_uses_the_given_fps(image_folder):
    folder, _ = image_folder
    frames = list(open_source(folder, fps=12.5).frames())
    assert frames[-1].t == pytest.approx((FOLDER_FRAMES - 1) / 12.5)


def test_image_folder_ignores_files_that_are_not_images(image_folder, tmp_path):
    import shutil

    folder, _ = image_folder
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("frame_0001.png", "frame_0000.png"):
        shutil.copy(folder / name, mixed / name)
    (mixed / "notes.txt").write_text("filmed on a Tuesday")
    (mixed / "frame_0000.png.json").write_text("{}")
    source = ImageFolder(mixed)
    assert source.frame_count == 2
    assert [f.index for f in source.frames()] == [0, 1]


@pytest.mark.parametrize("contents", [[], ["notes.txt", "clip.mp4"]])
def test_folder_without_images_is_a_source_error(tmp_path, contents):
    for name in contents:
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(SourceError, match="holds no images"):
        open_source(tmp_path)


def test_single_image_is_a_source_error_with_a_hint(image_folder):
    folder, _ = image_folder
    with pytest.raises(SourceError) as info:
        open_source(folder / "frame_0000.png")
    assert "single image" in str(info.value)
    assert "folder of images" in str(info.value)


def test_unreadable_image_in_a_folder_is_a_source_error(tmp_path):
    (tmp_path / "frame_0000.png").write_bytes(b"not a png")
    source = open_source(tmp_path)
    with pytest.raises(SourceError, match="not a readable image"):
        list(source.frames())


# -- the Pi camera off a Pi ------------------------------------------------------------------------------------


@pytest.mark.parametrize("opener", [open_source, open_frames], ids=["open_source", "open_frames"])
def test_picamera_off_a_pi_says_how_to_install_picamera2(opener, monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)   # a machine without picamera2, wherever this runs
    with pytest.raises(SourceError) as info:
        opener("picamera")
    assert "python3-picamera2" in str(info.value)
    assert "--source VIDEO" in str(info.value)


# -- the Pi camera through a stand-in for Picamera2 -------------------------------------------------------------


@pytest.fixture
def pi_camera(monkeypatch, footage_dir):
    """The stand-in for Picamera2 (tests/fake_picamera), filming the first frame of a real clip, RGB, 320x180."""
    import importlib.util
    import sys

    import cv2

    spec = importlib.util.spec_from_file_location("picamera2", Path(__file__).parent / "fake_picamera/picamera2.py")
    picamera2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(picamera2)
    monkeypatch.setitem(sys.modules, "picamera2", picamera2)   # gone again after the test

    source = VideoFile(footage_dir / "kratika/squat_front_bodyweight.mp4")
    bgr = cv2.resize(next(iter(source.frames())).image, (320, 180), interpolation=cv2.INTER_AREA)
    source.close()
    monkeypatch.setattr(picamera2, "IMAGES", [cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)])
    monkeypatch.setattr(picamera2, "instances", [])
    return bgr


def test_the_pi_camera_is_asked_for_small_rgb_frames_at_the_configured_rate(pi_camera):
    frames = open_frames("picamera", camera_size=(320, 240), camera_fps=10)
    try:
        assert frames.channels == "rgb"
        import picamera2

        [camera] = picamera2.instances
        main = camera.config["main"]
        assert main == {"size": (320, 240), "format": "BGR888"}
        assert camera.config["controls"]["FrameDurationLimits"] == (100_000, 100_000)   # 10 fps, no faster
        first = next(iter(frames.frames()))
        assert first.image.shape == (180, 320, 3)
    finally:
        frames.close()
    assert not camera.started and camera.closed


def test_camera_frames_give_the_same_keypoints_as_the_same_picture_from_a_recording(pi_camera, interpreter,
                                                                                    tmp_path):
    # The service reads the camera's RGB frames without a swap, and a recording's BGR frames with one: the
    # same picture must give the same keypoints either way.
    from rackwatch.load import SettingsStore
    from rackwatch.pose import PoseEstimator
    from rackwatch.service import RackService
    from rackwatch.sinks import ListSink

    frames = open_frames("picamera", camera_size=(320, 240), camera_fps=10)
    service = RackService(ListSink(), SettingsStore(tmp_path), interpreter, frames, rack="rack01")
    try:
        from_camera = service.estimator.estimate(next(iter(frames.frames())).image)
    finally:
        frames.close()
    from_recording = PoseEstimator(interpreter).estimate(pi_camera)
    np.testing.assert_array_equal(from_camera.score, from_recording.score)
    np.testing.assert_array_equal(from_camera.xy, from_recording.xy)
    assert (from_camera.score > 0.3).sum() >= 12   # the lifter is really there


# -- Prefetched ------------------------------------------------------------------------------------------------


def test_prefetched_yields_every_frame_in_order(footage_dir):
    clip = footage_dir / "calimiro_workouttracker/squat_19.mp4"
    plain = VideoFile(clip)
    try:
        expected = [(f.index, f.t, f.image[::97, ::97].copy()) for f in plain.frames()]
    finally:
        plain.close()
    prefetched = Prefetched(VideoFile(clip))
    try:
        got = [(f.index, f.t, f.image[::97, ::97].copy()) for f in prefetched.frames()]
    finally:
        prefetched.close()
    assert len(got) == len(expected) == 143
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    for (index, _, image), (_, _, reference) in zip(got, expected):
        np.testing.assert_array_equal(image, reference, err_msg=f"frame {index}")
    assert not _decode_threads()


def test_prefetched_close_half_way_stops_cleanly(footage_dir):
    video = VideoFile(footage_dir / HYVA2)
    prefetched = Prefetched(video, depth=4)
    seen = []
    for frame in prefetched.frames():
        seen.append(frame.index)
        if len(seen) == 50:
            break
    assert seen == list(range(50))
    assert _decode_threads(), "the decode thread should still be running, blocked on a full queue"
    prefetched.close()  # returns promptly: no hang (a hang would stall the test run)
    assert not _decode_threads(), "the decode thread should have ended"
    assert not video._capture.isOpened(), "the file should be released"
    prefetched.close()  # twice is harmless


# -- LiveCamera ------------------------------------------------------------------------------------------------


def test_live_camera_drops_stale_frames_for_a_slow_consumer(image_folder):
    """60 frames delivered at 60 fps to a consumer that needs 50 ms a frame: stale frames are dropped and
    counted, the ones handed over are ever newer, and the newest (last) frame is never lost."""
    folder, _ = image_folder
    camera = LiveCamera(PacedSource(ImageFolder(folder, fps=60.0)))
    indices = []
    try:
        for frame in camera.frames():
            indices.append(frame.index)
            time.sleep(0.05)  # a slow pipeline
    finally:
        camera.close()
    assert camera.dropped > 0
    assert all(b > a for a, b in itertools.pairwise(indices)), indices  # increasing, never repeated
    assert indices[-1] == FOLDER_FRAMES - 1  # the newest frame is never lost
    assert len(indices) + camera.dropped == FOLDER_FRAMES  # every frame either handed over or counted as dropped


def test_live_camera_close_half_way_ends_the_capture_thread(image_folder):
    folder, _ = image_folder
    camera = LiveCamera(PacedSource(ImageFolder(folder, fps=60.0)))
    indices = []
    for frame in camera.frames():
        indices.append(frame.index)
        if len(indices) == 5:
            break
    camera.close()
    deadline = time.monotonic() + 2.0
    while _capture_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _capture_threads(), "the capture thread should end soon after close()"
    assert indices == sorted(set(indices))


def test_scaled_source_delivers_camera_sized_frames(footage_dir):
    from rackwatch.camera import Scaled

    source = Scaled(VideoFile(footage_dir / "calimiro_workouttracker/squat_19.mp4"), 640)
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert len(frames) == 143
    assert {f.image.shape[:2] for f in frames} == {(360, 640)}
    assert [f.index for f in frames] == list(range(143))


def test_distant_source_shrinks_the_picture_onto_a_plain_background(image_folder):
    from rackwatch.camera import Distant

    folder, originals = image_folder
    source = Distant(open_source(folder), 4)
    try:
        frames = list(source.frames())
    finally:
        source.close()
    assert [f.image.shape for f in frames] == [im.shape for im in originals]
    for frame, original in zip(frames, originals):
        height, width = original.shape[:2]
        inside = (frame.image != Distant.BACKGROUND).any(axis=2)
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        # What is not background is the picture, a quarter of its size, low in the frame and centred.
        assert rows[-1] - rows[0] + 1 <= height / 4 + 1 and cols[-1] - cols[0] + 1 <= width / 4 + 1
        assert rows[0] > height / 2 and abs((cols[0] + cols[-1]) / 2 - width / 2) <= 2
        assert frame.image.mean() != pytest.approx(original.mean(), abs=0.5)


@pytest.mark.parametrize("distance", [0.5, 11])
def test_a_distance_that_makes_no_sense_is_refused(image_folder, distance):
    from rackwatch.camera import Distant

    with pytest.raises(SourceError, match="makes no sense"):
        Distant(open_source(image_folder[0]), distance)
