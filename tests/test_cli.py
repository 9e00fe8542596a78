"""The rackwatch command as a user meets it: real subprocesses, real files, clear errors instead of tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FOOTAGE
from rackwatch.pose import available_runtimes

# Nearly every test here runs the command on a real clip: without the footage they fail under CI=true.
pytestmark = pytest.mark.footage

CLIP = FOOTAGE / "calimiro_workouttracker" / "squat_19.mp4"


def rackwatch(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rackwatch.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def assert_clear_failure(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_analyze_prints_a_table_and_a_set_summary():
    result = rackwatch("analyze", str(CLIP), "--load", "60", "--one-rm", "100", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "2 reps" in result.stdout
    assert "Set at 60 kg (60% of max): 2 reps" in result.stdout


def test_analyze_json_is_the_event_stream(labels):
    label = next(label for label in labels if label["clip"] == "calimiro_workouttracker/squat_19.mp4")
    result = rackwatch("analyze", str(CLIP), "--json", "--load", "100", "--units", "lb")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    reps = [e for e in events if e["type"] == "rep"]
    assert [e["rep"] for e in reps] == [1, 2]
    assert events[-1]["type"] == "set" and events[-1]["reps"] == 2
    for rep in reps:
        assert rep["load"] == {"value": 100.0, "units": "lb", "one_rm": None, "percent_1rm": None}
        for leg in ("left", "right"):   # labelled: knees over the feet on both reps
            assert rep["valgus"][leg]["severity"] == label["reps"][rep["rep"] - 1][f"valgus_{leg}"] == "none"
        assert rep["verdict"] == "clean"
    # each rep bottoms out where the labels say, within a quarter of a second (the smoothing's lag)
    assert [rep["t_bottom"] for rep in reps] == pytest.approx([r["bottom"] / label["fps"] for r in label["reps"]],
                                                             abs=0.25)
    assert len({e["id"] for e in events}) == len(events)


def test_overlay_video_is_written(tmp_path):
    import cv2

    out = tmp_path / "overlay.mp4"
    result = rackwatch("analyze", str(CLIP), "--overlay", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 143


def test_missing_model_says_where_to_get_it(tmp_path):
    result = rackwatch("analyze", str(CLIP), env={"RACKWATCH_MODEL": str(tmp_path / "nope.tflite")})
    assert_clear_failure(result, "No pose model", "rackwatch models fetch")


def test_corrupt_model_is_refused(tmp_path):
    bad = tmp_path / "movenet.tflite"
    bad.write_bytes(b"not a model" * 1000)
    result = rackwatch("analyze", str(CLIP), env={"RACKWATCH_MODEL": str(bad)})
    assert_clear_failure(result, "damaged")


def test_unreadable_video(tmp_path):
    junk = tmp_path / "clip.mp4"
    junk.write_bytes(os.urandom(20000))
    assert_clear_failure(rackwatch("analyze", str(junk)), str(junk))


def test_missing_video(tmp_path):
    assert_clear_failure(rackwatch("analyze", str(tmp_path / "none.mp4")), "No video")


def test_video_with_nobody_in_it(tmp_path):
    import cv2

    empty = tmp_path / "empty.mp4"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"mp4v"), 25, (320, 240))
    for i in range(50):
        writer.write(np.full((240, 320, 3), 40 + i, np.uint8))
    writer.release()
    assert_clear_failure(rackwatch("analyze", str(empty)), "Nobody was found")


@pytest.mark.parametrize("text, words", [
    ("[analysis.judge]\nmoderate_cave = 'lots'\n", ["moderate_cave", "must be a number"]),
    ("[analysis.reps]\nstart_depht = 0.1\n", ["no setting 'start_depht'", "start_depth"]),
    ("[analysis.judge]\nminor_cave = 0.2\n", ["minor_cave < moderate_cave"]),
    ("[analysis\n", ["not valid TOML"]),
])
def test_wrong_config_is_explained(tmp_path, text, words):
    config = tmp_path / "rackwatch.toml"
    config.write_text(text)
    assert_clear_failure(rackwatch("--config", str(config), "analyze", str(CLIP)), *words)


def test_bad_load_is_refused():
    result = rackwatch("analyze", str(CLIP), "--load", "-20")
    assert result.returncode == 2 and "out of range" in result.stderr


def test_eval_scoring_of_one_clip():
    from mqtt_broker import sample_rep
    from rackwatch.evaluation import score_clip, totals
    from rackwatch.events import LegValgus, Valgus

    label = {"clip": "x.mp4", "view": "front", "exercise": "squat", "fps": 10.0,
             "reps": [{"bottom": 20, "valgus_left": "clear", "valgus_right": "none"},
                      {"bottom": 60, "valgus_left": "none", "valgus_right": "slight"}]}
    def rep(t_bottom, left, right):
        return sample_rep(None).model_copy(update={"t_bottom": t_bottom, "valgus": Valgus(
            left=left and LegValgus(severity=left, measured=left, cave=0.1, peak_phase="bottom", t_peak=t_bottom),
            right=right and LegValgus(severity=right, measured=right, cave=0.1, peak_phase="bottom", t_peak=t_bottom))})

    found = [rep(2.3, "moderate", "minor"), rep(9.0, "severe", None)]
    score = score_clip(label, found)
    assert score.reps_matched == 1 and score.count_exact  # two found for two labelled, one of them too late
    assert (score.cave["left"].tp, score.cave["right"].tn) == (1, 1)
    summary = totals([score])
    assert summary["cave"]["both"]["f1"] == 1.0
    assert summary["rep_recall"] == 0.5


def test_rep_pictures_show_each_rep_at_its_worst(tmp_path):
    import cv2

    result = rackwatch("analyze", str(CLIP), "--rep-frames", str(tmp_path / "reps"), "--quiet")
    assert result.returncode == 0, result.stderr
    pictures = sorted((tmp_path / "reps").glob("*.png"))
    assert [p.name for p in pictures] == ["rep-01.png", "rep-02.png"]
    assert cv2.imread(str(pictures[0])).shape == (720, 1280, 3)


def test_an_overlay_that_cannot_be_written_is_explained(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = rackwatch("analyze", str(CLIP), "--rep-frames", str(blocker / "reps"), "--quiet")
    assert_clear_failure(result, str(blocker))


def test_bench_prints_every_figure_as_json():
    # Figures only, no judgement of speed: that is the benchmark's job, read by people (docs/performance.md).
    result = rackwatch("bench", str(CLIP), "--frames", "30", "--repeats", "1", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for key in ("invoke_ms", "model_fps", "pipeline_fps", "analysis_ms_per_frame", "events_outbox_ms_per_frame",
                "peak_rss_mb", "peak_private_mb", "publish_outbox_ms_per_rep", "publish_outbox_ms_per_state",
                "publish_acked_per_s", "around_model_ms_per_frame_warm", "pipeline_ratio_if_warm"):
        assert figures[key] > 0, key
    assert (figures["frames"], figures["repeats"], figures["threads"]) == (30, 1, os.cpu_count())
    assert figures["runtime"] == available_runtimes()[0]
    # The figures fit together, whatever the machine's speed: the ratios are of the figures printed beside them.
    assert figures["pipeline_ratio"] == pytest.approx(figures["pipeline_fps"] / figures["model_fps"], rel=1e-6)
    assert figures["after_keypoints_share_of_invoke_pct"] == pytest.approx(
        100 * figures["after_keypoints_ms_per_frame"] / figures["invoke_ms"], rel=1e-6)
    assert 50 < figures["peak_rss_mb"] < 2000   # megabytes: Python, OpenCV and LiteRT take some 150 here
    assert figures["peak_private_mb"] < figures["peak_rss_mb"]
    assert figures["camera_frame"] == "320x180"   # the camera's default size, for a 16:9 clip
    assert {r["runtime"] for r in figures["runtimes"]} == set(available_runtimes())   # each runtime installed here
    # Idle mode on an empty rack: the model at idle_fps (2), not at the camera's 15 fps, and the CPU rests.
    idle = figures["idle"]
    assert (idle["camera_fps"], idle["idle_fps"]) == (15.0, 2.0)
    assert idle["idle_model_calls_per_s"]["median"] == pytest.approx(2.0, abs=0.5)
    assert idle["awake_model_calls_per_s"]["median"] > 3 * idle["idle_model_calls_per_s"]["median"]
    assert idle["idle_cpu_s_per_s"]["median"] < idle["awake_cpu_s_per_s"]["median"]
    # ...while its health says frames flow at the camera's rate: an idle rack is not a slow one on the dashboard.
    assert idle["idle_health_fps"]["median"] > 10 and idle["awake_health_fps"]["median"] > 10
    assert idle["cpu_saved_pct"] == pytest.approx(
        100 * (1 - idle["idle_cpu_s_per_s"]["median"] / idle["awake_cpu_s_per_s"]["median"]), rel=1e-6)


def test_bench_on_a_runtime_that_is_not_installed_says_how_to_install_it(tmp_path):
    # tflite_runtime made missing whether or not it is installed: a package of that name that will not import.
    (tmp_path / "tflite_runtime").mkdir()
    (tmp_path / "tflite_runtime" / "__init__.py").write_text('raise ImportError("No module named tflite_runtime")\n')
    result = rackwatch("bench", str(CLIP), "--frames", "10", "--repeats", "1", "--runtime", "tflite_runtime",
                       env={"PYTHONPATH": str(tmp_path)})
    assert_clear_failure(result, "tflite_runtime", "pip install tflite-runtime")


def test_bench_refuses_zero_threads():
    assert_clear_failure(rackwatch("bench", str(CLIP), "--threads", "0"), "--threads")


def test_a_load_beyond_what_the_rack_accepts_is_refused_with_the_limit():
    result = rackwatch("analyze", str(CLIP), "--load", "1500", "--units", "kg")
    assert_clear_failure(result, "1000 kg")


def test_analyze_refuses_a_load_above_the_max_and_says_which_flag_fixes_it():
    result = rackwatch("analyze", str(CLIP), "--load", "125", "--one-rm", "100")
    assert_clear_failure(result, "The load of 125 kg is above the one-rep max of 100 kg",
                         "--one-rm 125 or more", "--load 100 or less")
    assert "XNNPACK" not in result.stderr   # refused before the model was loaded
    result = rackwatch("analyze", str(CLIP), "--load", "225", "--one-rm", "220", "--units", "lb")
    assert_clear_failure(result, "225 lb", "220 lb")


def test_run_refuses_a_load_above_the_max_saved_on_the_rack(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "settings.json").write_text('{"load": 80, "one_rm": 100, "units": "kg"}')
    result = rackwatch("run", "--source", str(CLIP), "--state-dir", str(state), "--broker", "mqtt://127.0.0.1:9",
                       "--load", "120")
    assert_clear_failure(result, "The load of 120 kg is above the one-rep max saved on this rack of 100 kg",
                         "--one-rm 120 or more")
    assert json.loads((state / "settings.json").read_text())["load"] == 80   # nothing changed
    result = rackwatch("run", "--source", str(CLIP), "--state-dir", str(state), "--broker", "mqtt://127.0.0.1:9",
                       "--load", "120", "--one-rm", "110")
    assert_clear_failure(result, "The load of 120 kg is above the one-rep max of 110 kg")


@pytest.mark.parametrize("command", ["analyze", "bench"])
def test_without_a_video_on_a_rack_the_missing_sample_clip_is_explained(command, monkeypatch, capsys):
    from rackwatch import cli, paths

    monkeypatch.setattr(paths, "CHECKOUT", None)           # installed from a wheel: no ../shared beside it
    monkeypatch.delenv("RACKWATCH_FOOTAGE", raising=False)
    assert cli.main([command]) == 2
    message = capsys.readouterr().err
    assert f"rackwatch {command} VIDEO" in message and "$RACKWATCH_FOOTAGE" in message
    assert "Traceback" not in message


def test_a_footage_folder_without_the_sample_clip_is_named(monkeypatch, tmp_path, capsys):
    from rackwatch import cli

    monkeypatch.setenv("RACKWATCH_FOOTAGE", str(tmp_path))
    assert cli.main(["analyze"]) == 2
    assert str(tmp_path / "kratika" / "squat_front_bodyweight.mp4") in capsys.readouterr().err
