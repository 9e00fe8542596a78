"""``rackwatch bench``: where a frame's time goes, measured on real footage in one run.

Everything is compared within the same run, because these machines are noisy: the full pipeline's frame rate
is set next to the model's own rate on the same frames, and the analysis cost next to one model invoke.

What is measured, on frames decoded from a recording beforehand and scaled to the size the Pi camera delivers
(its ISP scales for free, so decoding is a cost of recordings, not of the rack; it is reported apart):

* model invoke, for every installed runtime and thread count;
* pre-processing (crop, scale, channel swap into the input tensor) and post-processing (keypoints back to the
  frame, next crop);
* squat analysis per frame (smoothing, geometry, rep tracking, judging);
* model-only frames per second vs. the whole pipeline's (pose + analysis + events + outbox + MQTT);
* publish: the outbox's cost per event and acknowledged throughput, on a real broker;
* latency from the frame that completes a rep to the broker's acknowledgement of its event;
* peak memory of ``rackwatch run`` replaying the recording.

Each figure is a median over ``repeats`` runs, with the spread (lowest and highest run) beside it.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .analysis import LiftAnalyzer
from .camera import VideoFile
from .pose import PoseEstimator, available_runtimes, load_interpreter

CAMERA_LONG_SIDE = 640  # what the Pi camera's main stream is configured to deliver


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def load_frames(video: Path, count: int) -> tuple[list[np.ndarray], float, float]:
    """Up to ``count`` frames scaled to camera size, the video's fps, and decode+scale ms per frame."""
    import cv2

    source = VideoFile(video)
    frames, started = [], time.perf_counter()
    try:
        for frame in source.frames():
            height, width = frame.image.shape[:2]
            scale = CAMERA_LONG_SIDE / max(height, width)
            frames.append(cv2.resize(frame.image, (round(width * scale), round(height * scale)),
                                     interpolation=cv2.INTER_AREA))
            if len(frames) >= count:
                break
    finally:
        source.close()
    return frames, source.fps, 1000 * (time.perf_counter() - started) / len(frames)


def time_invoke(model: Path, runtime: str, threads: int, calls: int, repeats: int) -> dict[str, Any]:
    interpreter = load_interpreter(model, threads, runtime)
    estimator = PoseEstimator(interpreter)
    for _ in range(5):  # warm-up: first calls allocate and pick kernels
        estimator.invoke()
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            estimator.invoke()
        runs.append(1000 * (time.perf_counter() - started) / calls)
    return {"runtime": runtime, "threads": threads, "invoke_ms": spread(runs)}


def time_stages(estimator: PoseEstimator, frames: list[np.ndarray]) -> tuple[dict, list]:
    """Per-frame pre-processing, invoke and post-processing ms; and the poses, for the analysis timing."""
    pre, invoke, post, poses = [], [], [], []
    estimator.reset()
    for image in frames:
        height, width = image.shape[:2]
        crop = estimator.crop_for(width, height)
        t0 = time.perf_counter()
        estimator.prepare(image, crop)
        t1 = time.perf_counter()
        estimator.invoke()
        t2 = time.perf_counter()
        pose = estimator.read_pose(crop, width, height)
        t3 = time.perf_counter()
        pre.append(t1 - t0), invoke.append(t2 - t1), post.append(t3 - t2)
        poses.append(pose)
    ms = {name: 1000 * statistics.median(values) for name, values in
          (("preprocess_ms", pre), ("invoke_ms", invoke), ("postprocess_ms", post))}
    return ms, poses


def time_analysis(poses: list, fps: float, frame_height: float, repeats: int) -> list[float]:
    runs = []
    for _ in range(repeats):
        analyzer = LiftAnalyzer()
        started = time.perf_counter()
        for i, pose in enumerate(poses):
            analyzer.update(i / fps, pose, frame_height)
        analyzer.finish()
        runs.append(1000 * (time.perf_counter() - started) / len(poses))
    return runs


def model_only_fps(estimator: PoseEstimator, frames: list[np.ndarray]) -> float:
    started = time.perf_counter()
    for _ in frames:
        estimator.invoke()
    return len(frames) / (time.perf_counter() - started)


def pipeline_fps(estimator: PoseEstimator, frames: list[np.ndarray], fps: float, link, latencies: list) -> float:
    """The rack's whole loop on frames as the camera hands them over; rep events go through the outbox."""
    estimator.reset()
    analyzer = LiftAnalyzer(rack=link.settings.rack if link else None)
    height = frames[0].shape[0]
    started = time.perf_counter()
    for i, image in enumerate(frames):
        arrived = time.perf_counter()
        pose = estimator.estimate(image)
        for event in analyzer.update(i / fps, pose, height):
            if link is not None:
                made = time.perf_counter()
                seq = link.publish(event)
                if event["type"] == "rep":
                    _measure_ack(link, seq, arrived, made, latencies)
    elapsed = time.perf_counter() - started
    for event in analyzer.finish():
        if link is not None:
            link.publish(event)
    return len(frames) / elapsed


def _measure_ack(link, seq: int, arrived: float, made: float, latencies: list) -> None:
    """Record (ms from the frame's arrival, ms from the event's creation) once the broker acknowledges it."""
    def wait() -> None:
        if link.wait_acked(seq, 10):
            acked = time.perf_counter()
            latencies.append((1000 * (acked - arrived), 1000 * (acked - made)))
    threading.Thread(target=wait, daemon=True).start()


@contextmanager
def private_broker() -> Iterator[tuple[str, int]]:
    """A throwaway Mosquitto on a free local port, for a bench run without ``--broker``."""
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if binary is None:
        raise RuntimeError("No broker to measure against: install mosquitto or pass --broker mqtt://HOST:PORT.")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-broker-") as folder:
        conf = Path(folder) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the private Mosquitto for the benchmark did not start")
                    time.sleep(0.05)
            yield "127.0.0.1", port
        finally:
            process.terminate()
            process.wait(timeout=10)


def run_peak_rss_mb(video: Path, host: str, port: int) -> float | None:
    """Peak resident memory of ``rackwatch run`` replaying ``video`` at full speed (a child process)."""
    # A child forked from this (large) process would report this process's memory as its own high-water mark,
    # so a small Python starts the replay and reports the replay's peak.
    launcher = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:], capture_output=True).returncode;"
                " print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if code == 0 else -1)")
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-run-") as state:
        result = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-m", "rackwatch.cli", "run",
                                 "--source", str(video), "--speed", "max", "--rack", "bench-rss",
                                 "--broker", f"mqtt://{host}:{port}", "--state-dir", state],
                                capture_output=True, text=True, timeout=600)
    kilobytes = int(result.stdout.strip() or -1)
    return None if kilobytes < 0 else kilobytes / 1024


def run(video: Path, model: Path, *, frames: int = 150, repeats: int = 5, broker: tuple[str, int] | None = None,
        measure_rss: bool = True, progress=print) -> dict[str, Any]:
    from .bench_mqtt import bench_publish
    from .mqtt import LinkSettings, RackLink

    threads_all = os.cpu_count() or 1
    images, fps, decode_ms = load_frames(video, frames)
    progress(f"{len(images)} frames of {video.name}, scaled to {images[0].shape[1]}x{images[0].shape[0]}")

    runtimes = []
    for runtime in available_runtimes():
        for threads in sorted({1, 2, 4, threads_all} & set(range(1, threads_all + 1))):
            progress(f"invoke: {runtime}, {threads} thread(s)")
            runtimes.append(time_invoke(model, runtime, threads, calls=40, repeats=repeats))

    estimator = PoseEstimator(load_interpreter(model, threads_all))
    stages, poses = time_stages(estimator, images)
    analysis_runs = time_analysis(poses, fps, images[0].shape[0], repeats)

    with (private_broker() if broker is None else nullcontext(broker)) as (host, port):
        progress(f"publishing to the broker at {host}:{port}")
        publish = bench_publish(200, host, port)
        with tempfile.TemporaryDirectory(prefix="rackwatch-bench-outbox-") as state:
            link = RackLink(LinkSettings(rack="bench-pipeline", host=host, port=port, topic_root="rackwatch-bench",
                                         state_dir=state, ha_discovery=False)).start()
            try:
                link.wait_connected(10)
                model_runs, pipeline_runs, latencies = [], [], []
                for i in range(repeats):
                    progress(f"model only vs pipeline, run {i + 1} of {repeats}")
                    model_runs.append(model_only_fps(estimator, images))
                    pipeline_runs.append(pipeline_fps(estimator, images, fps, link, latencies))
                link.wait_drained(10)
            finally:
                link.close()
        rss = run_peak_rss_mb(video, host, port) if measure_rss else None

    invoke_ms = statistics.median(r["invoke_ms"]["median"] for r in runtimes
                                  if r["threads"] == threads_all and r["runtime"] == available_runtimes()[0])
    analysis_ms = statistics.median(analysis_runs)
    ratios = [p / m for p, m in zip(pipeline_runs, model_runs)]
    return {
        "video": str(video), "frames": len(images), "repeats": repeats, "threads": threads_all,
        "invoke_ms": invoke_ms,
        "model_fps": statistics.median(model_runs),
        "pipeline_fps": statistics.median(pipeline_runs),
        "pipeline_ratio": statistics.median(ratios),
        "analysis_ms_per_frame": analysis_ms,
        "analysis_share_of_invoke_pct": 100 * analysis_ms / invoke_ms,
        "preprocess_ms": stages["preprocess_ms"],
        "postprocess_ms": stages["postprocess_ms"],
        "decode_ms_recording_only": decode_ms,
        "publish_outbox_ms_per_event": publish["outbox_ms_per_event"],
        "publish_acked_per_s": publish["acked_per_s"],
        "rep_ack_latency_ms": statistics.median(a for a, _ in latencies) if latencies else None,
        "rep_ack_after_event_ms": statistics.median(m for _, m in latencies) if latencies else None,
        "frame_period_ms": 1000 / statistics.median(pipeline_runs),
        "peak_rss_mb": rss,
        "bench_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spread": {"model_fps": spread(model_runs), "pipeline_fps": spread(pipeline_runs),
                   "pipeline_ratio": spread(ratios), "analysis_ms_per_frame": spread(analysis_runs),
                   "rep_ack_latency_ms": spread([a for a, _ in latencies]) if latencies else None},
        "runtimes": runtimes,
    }


def format_report(r: dict[str, Any]) -> str:
    s = r["spread"]

    def rng(name: str, fmt: str = ".1f") -> str:
        v = s[name]
        return "" if not v else f"  (runs: {v['min']:{fmt}} to {v['max']:{fmt}})"

    lines = [f"rackwatch bench: {r['frames']} frames of {Path(r['video']).name}, {r['repeats']} runs, "
             f"{r['threads']} thread(s)", "", "model invoke by runtime and threads (median ms, lowest-highest run):"]
    for rt in r["runtimes"]:
        v = rt["invoke_ms"]
        lines.append(f"  {rt['runtime']:<16} {rt['threads']} thread(s)  {v['median']:7.2f}   "
                     f"({v['min']:.2f}-{v['max']:.2f})")
    rss = "n/a" if r["peak_rss_mb"] is None else f"{r['peak_rss_mb']:.0f} MB"
    latency = "n/a" if r["rep_ack_latency_ms"] is None else (
        f"{r['rep_ack_latency_ms']:.1f} ms after the frame that ended the rep arrived "
        f"({r['rep_ack_after_event_ms']:.1f} ms after its event was made)")
    lines += [
        "",
        "per frame (median ms):",
        f"  pre-processing       {r['preprocess_ms']:7.3f}",
        f"  model invoke         {r['invoke_ms']:7.3f}",
        f"  post-processing      {r['postprocess_ms']:7.3f}",
        f"  squat analysis       {r['analysis_ms_per_frame']:7.3f}   "
        f"= {r['analysis_share_of_invoke_pct']:.2f}% of one invoke{rng('analysis_ms_per_frame', '.3f')}",
        f"  (decoding a recording {r['decode_ms_recording_only']:.2f} ms: not on the camera's path)",
        "",
        f"model only      {r['model_fps']:7.1f} frames/s{rng('model_fps')}",
        f"whole pipeline  {r['pipeline_fps']:7.1f} frames/s{rng('pipeline_fps')}",
        f"ratio           {r['pipeline_ratio']:7.3f}{rng('pipeline_ratio', '.3f')}",
        "",
        f"publish: outbox {r['publish_outbox_ms_per_event']:.2f} ms per event, "
        f"{r['publish_acked_per_s']:.0f} events/s acknowledged",
        f"rep event acknowledged by the broker {latency}; frame period {r['frame_period_ms']:.1f} ms",
        f"peak memory of `rackwatch run` replaying the clip: {rss} (this benchmark: {r['bench_peak_rss_mb']:.0f} MB)",
    ]
    return "\n".join(lines)
