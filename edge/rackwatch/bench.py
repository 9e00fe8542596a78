"""``rackwatch bench``: where a frame's time goes, measured on real footage in one run.

Everything is compared within the same run, because these machines are noisy: the full pipeline's frame rate
is set next to the model's own rate on the same frames, and the work after the keypoints next to one model
invoke.

The frames are decoded from a recording beforehand and made what the Pi camera delivers: scaled to the
camera's size and in its channel order (its ISP does both for free, so decoding is a cost of recordings, not of
the rack; it is reported apart). They reach the pipeline through a feeder thread, as camera frames do.

What is measured:

* model invoke, for every installed runtime and thread count;
* pre-processing (crop and scale into the input tensor) and post-processing (keypoints back to the frame,
  next crop), each right after a real invoke, as in the rack's loop;
* the whole pipeline: :class:`rackwatch.service.RackService` itself, the code ``rackwatch run`` runs (pose,
  squat analysis, events, outbox, MQTT to a real broker), against the model alone on the same frames;
* within the pipeline: squat analysis per frame, and events + outbox writes per frame;
* publish: the outbox's cost per rep and per state event, and acknowledged throughput, on a real broker;
* latency from the frame that completes a rep to the broker's acknowledgement of its event;
* peak memory of ``rackwatch run`` replaying the recording;
* idle mode's saving: model calls and CPU time per second of an empty rack (black camera frames at the camera's
  rate, in real time), with idle mode and without.

Each figure is a median over ``repeats`` runs, with the spread (lowest and highest run) beside it.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from . import events
from .analysis import LiftAnalyzer
from .camera import CAMERA_SIZE, CameraSettings, Frame, LiveCamera, PacedSource, Prefetched, Scaled, VideoFile
from .load import SettingsStore
from .mqtt import LinkSettings, RackLink
from .pose import PoseEstimator, available_runtimes, load_interpreter, measure_invoke_ms

CAMERA_LONG_SIDE = max(CAMERA_SIZE)   # what the Pi camera delivers by default


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def load_frames(video: Path, count: int, long_side: int = CAMERA_LONG_SIDE) -> tuple[list[np.ndarray], float, float]:
    """Up to ``count`` frames as the camera delivers them (``long_side`` pixels, RGB), the video's fps, and
    decode + scale ms per frame."""
    import cv2

    source = Scaled(VideoFile(video), long_side)
    frames, started = [], time.perf_counter()
    try:
        for frame in source.frames():
            frames.append(cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB))
            if len(frames) >= count:
                break
    finally:
        source.close()
    return frames, source.fps, 1000 * (time.perf_counter() - started) / len(frames)


class CameraFeed:
    """Frames held in memory, handed over like the camera's: RGB, timestamps at the video's rate, and each one a
    fresh copy, as Picamera2's ``capture_array`` copies every frame out of the camera's buffer."""

    channels = "rgb"
    dropped = 0

    def __init__(self, images: list[np.ndarray], fps: float):
        self.images = images
        self.fps = fps
        self.frame_count = len(images)

    def frames(self) -> Iterator[Frame]:
        for index, image in enumerate(self.images):
            yield Frame(index, index / self.fps, image.copy())

    def close(self) -> None:
        pass


class _Arrivals:
    """Another source's frames, noting when the newest one was handed to the pipeline."""

    def __init__(self, source):
        self.source = source
        self.fps, self.channels, self.frame_count = source.fps, source.channels, source.frame_count
        self.last_arrival = 0.0   # perf_counter

    @property
    def dropped(self) -> int:
        return self.source.dropped

    def frames(self) -> Iterator[Frame]:
        for frame in self.source.frames():
            self.last_arrival = time.perf_counter()
            yield frame

    def close(self) -> None:
        self.source.close()


def camera_frames(images: list[np.ndarray], fps: float, threaded: bool = True) -> _Arrivals:
    """A frame source over ``images``, fed from its own thread as the camera's are (or, with ``threaded``
    False, handed over directly)."""
    feed = CameraFeed(images, fps)
    return _Arrivals(Prefetched(feed) if threaded else feed)


class RepLatencies:
    """Per rep, how long from the frame's arrival and from the event's making until the broker acknowledged it.

    An event sink in front of the rack's link: it notes which outbox entries are reps as they are published, and
    the link's ``on_acked`` hook, called where the link takes the broker's PUBACK (so no extra thread's wake-up
    is counted), closes each one.
    """

    def __init__(self, link: RackLink, source: _Arrivals, latencies: list):
        self.link = link
        self.source = source
        self.latencies = latencies
        self._reps: dict[int, tuple[float, float]] = {}   # outbox seq -> (frame arrived, event made)
        link.on_acked = self._acked

    def publish(self, event: events.Event) -> None:
        made = time.perf_counter()
        seq = self.link.publish(event)
        if event.type == "rep":
            self._reps[seq] = (self.source.last_arrival, made)

    def _acked(self, seq: int) -> None:
        acked = time.perf_counter()
        if seq in self._reps:   # (ms from the frame's arrival, ms from the event's making) to the PUBACK
            arrived, made = self._reps.pop(seq)
            self.latencies.append((1000 * (acked - arrived), 1000 * (acked - made)))


def time_invoke(model: Path, runtime: str, threads: int, calls: int, repeats: int) -> dict[str, Any]:
    interpreter = load_interpreter(model, threads, runtime)
    runs = [measure_invoke_ms(interpreter, calls) for _ in range(repeats)]
    return {"runtime": runtime, "threads": threads, "invoke_ms": spread(runs)}


def time_stages(interpreter, frames: list[np.ndarray]) -> tuple[dict[str, float], list, list[np.ndarray]]:
    """Per-frame pre-processing, invoke and post-processing ms (medians), in the order the rack runs them; the
    poses; and the model's raw answers, frame by frame."""
    estimator = PoseEstimator(interpreter, bgr_frames=False)
    output = interpreter.tensor(interpreter.get_output_details()[0]["index"])
    pre, invoke, post, poses, answers = [], [], [], [], []
    for image in frames:
        height, width = image.shape[:2]
        crop = estimator.crop_for(width, height)
        t0 = time.perf_counter()
        estimator.prepare(image, crop)
        t1 = time.perf_counter()
        estimator.invoke()
        t2 = time.perf_counter()
        poses.append(estimator.read_pose(crop, width, height))
        t3 = time.perf_counter()
        answers.append(output().copy())
        pre.append(t1 - t0), invoke.append(t2 - t1), post.append(t3 - t2)
    return {name: 1000 * statistics.median(values) for name, values in
            (("preprocess_ms", pre), ("invoke_ms", invoke), ("postprocess_ms", post))}, poses, answers


class ReplayedModel:
    """Stands in for the interpreter with the real model's answers, recorded beforehand, one per invoke.

    On the same frames in the same order the pipeline then does all of its work (the crops follow the same
    answers) except the model's: what that work costs when it runs back to back, with the CPU warm.
    """

    def __init__(self, interpreter, answers: list[np.ndarray]):
        self._real = interpreter
        self._answers = answers
        self._calls = 0
        self._output_index = interpreter.get_output_details()[0]["index"]
        self._output = np.empty_like(answers[0])

    def get_input_details(self) -> list[dict]:
        return self._real.get_input_details()

    def get_output_details(self) -> list[dict]:
        return self._real.get_output_details()

    def tensor(self, index: int):
        if index == self._output_index:
            return lambda: self._output
        return self._real.tensor(index)

    def invoke(self) -> None:
        self._output[...] = self._answers[self._calls % len(self._answers)]
        self._calls += 1


def time_analysis_alone(poses: list, fps: float, frame_height: float, repeats: int,
                        pause_ms: float = 0.0) -> list[float]:
    """Squat analysis ms per frame on the poses, with nothing but ``pause_ms`` of busy waiting in between.

    Back to back (no pause) it is the code's own cost. After a pause as long as an invoke, but without the
    model, it shows how much of the dearer figure inside the pipeline is the machine's doing rather than the
    model's: on a virtual machine, whatever the host does at each timer tick can leave the CPU cold.
    """
    runs = []
    for _ in range(repeats):
        analyzer = LiftAnalyzer()
        spent = 0.0
        for i, pose in enumerate(poses):
            until = time.perf_counter() + pause_ms / 1000
            while time.perf_counter() < until:
                pass
            started = time.perf_counter()
            analyzer.update(i / fps, pose, frame_height)
            spent += time.perf_counter() - started
        runs.append(1000 * spent / len(poses))
    return runs


def model_only_fps(interpreter, images: list[np.ndarray], fps: float) -> float:
    """The model alone on the same frames, fed the same way: the ceiling for the pipeline."""
    source = camera_frames(images, fps)
    try:
        started = time.perf_counter()
        for _frame in source.frames():
            interpreter.invoke()
        return len(images) / (time.perf_counter() - started)
    finally:
        source.close()


def pipeline_run(interpreter, images: list[np.ndarray], fps: float, host: str, port: int,
                 latencies: list, threaded: bool = True) -> dict[str, float]:
    """``rackwatch run``'s service on the frames: frames per second, and ms per frame in analysis and publishing."""
    from .service import RackService

    source = camera_frames(images, fps, threaded)
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-rack-") as state:
        link = RackLink(LinkSettings(rack="bench-pipeline", host=host, port=port, topic_root="rackwatch-bench",
                                     state_dir=state, ha_discovery=False))
        service = RackService(RepLatencies(link, source, latencies), SettingsStore(state), interpreter, source,
                              rack="bench-pipeline", out=io.StringIO())
        service.start()
        link.start()
        try:
            if not link.wait_connected(10):
                raise RuntimeError(f"the benchmark cannot reach the broker at {host}:{port}")
            analysis_before, publish_before = service.analysis_s, service.publish_s
            started = time.perf_counter()
            service.process()
            elapsed = time.perf_counter() - started
            analysis_s, publish_s = service.analysis_s - analysis_before, service.publish_s - publish_before
        finally:
            service.close()
            link.wait_drained(10)   # the last rep's acknowledgement counts too
            link.close()
    frames = service.counts["frames"]
    return {"fps": frames / elapsed, "analysis_ms": 1000 * analysis_s / frames,
            "publish_ms": 1000 * publish_s / frames}


def empty_rack_run(interpreter, image: np.ndarray, fps: float, seconds: float, idle: bool,
                   camera: CameraSettings = CameraSettings()) -> dict[str, float]:
    """The service on ``seconds`` of an empty rack filmed at ``fps`` (``image`` over and over, in real time, behind a
    :class:`LiveCamera` as on the rack): model calls per second and CPU seconds per second (every thread of this
    process: the feeder, the model's, the service's), with idle mode already on or off; and the fps its health
    event reported."""
    from .service import IdleMode, RackService
    from .sinks import ListSink

    count = max(1, round(seconds * fps))
    source = LiveCamera(PacedSource(CameraFeed([image] * count, fps)))
    # Idle from the first frame (idle_after_s 0): the steady state of a rack that has waited a while.
    mode = IdleMode(0.0, camera.idle_fps) if idle else None
    sink = ListSink()
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-idle-") as state:
        service = RackService(sink, SettingsStore(state), interpreter, source, rack="bench-idle",
                              out=io.StringIO(), idle=mode, health_interval=3600)
        cpu, started = time.process_time(), time.perf_counter()
        service.run()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The health event's fps counts the frames that flowed, judged or not: an idle rack is not a slow one.
    return {"model_calls_per_s": service.counts["frames"] / elapsed, "cpu_s_per_s": cpu / elapsed,
            "health_fps": sink.of_type("health")[-1].fps}


def idle_saving(interpreter, image: np.ndarray, camera: CameraSettings, seconds: float,
                repeats: int) -> dict[str, Any]:
    """Idle mode against none on an empty rack filmed at the ``[camera]`` fps, ``repeats`` runs of ``seconds``
    each (medians and spreads). Black frames of ``image``'s size: the model costs the same on any picture."""
    runs: dict[bool, list] = {True: [], False: []}
    for _ in range(repeats):
        for idle in (False, True):
            runs[idle].append(empty_rack_run(interpreter, np.zeros_like(image), camera.fps, seconds, idle, camera))
    figures: dict[str, Any] = {"camera_fps": camera.fps, "idle_fps": camera.idle_fps, "seconds": seconds}
    for idle, name in ((False, "awake"), (True, "idle")):
        for key in ("model_calls_per_s", "cpu_s_per_s", "health_fps"):
            figures[f"{name}_{key}"] = spread([r[key] for r in runs[idle]])
    awake, idle = figures["awake_cpu_s_per_s"]["median"], figures["idle_cpu_s_per_s"]["median"]
    figures["cpu_saved_pct"] = 100 * (awake - idle) / awake if awake else None
    return figures


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


def run_memory_mb(video: Path, host: str, port: int) -> dict[str, float] | None:
    """Memory of ``rackwatch run`` replaying ``video`` at full speed (a child process), in MB, or ``None`` if
    the run failed: ``peak_rss`` (the kernel's high-water mark) and ``peak_private`` (the most anonymous memory
    seen: what the process itself allocated).

    The two differ by the library code mapped from disk (OpenCV, LiteRT, NumPy). Those pages are shared and can
    be dropped and re-read at any time, and how many of them count as resident depends on the state of the page
    cache more than on rackwatch (docs/performance.md), so both are reported.
    """
    with tempfile.TemporaryDirectory(prefix="rackwatch-bench-run-") as state:
        child = subprocess.Popen([sys.executable, "-m", "rackwatch.cli", "run", "--source", str(video),
                                  "--speed", "max", "--rack", "bench-rss", "--broker", f"mqtt://{host}:{port}",
                                  "--state-dir", state], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = {"VmHWM": 0, "RssAnon": 0}
        status = Path(f"/proc/{child.pid}/status")
        while child.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    name, _, value = line.partition(":")
                    if name in peak:
                        peak[name] = max(peak[name], int(value.split()[0]))
            except (OSError, IndexError, ValueError):   # gone between the check and the read
                break
            time.sleep(0.02)
        if child.wait(timeout=600) != 0 or not peak["VmHWM"]:
            return None
    return {"peak_rss": peak["VmHWM"] / 1024, "peak_private": peak["RssAnon"] / 1024}


def run(video: Path, model: Path, *, frames: int = 150, repeats: int = 5, broker: tuple[str, int] | None = None,
        camera_size: int = CAMERA_LONG_SIDE, runtime: str | None = None, threads: int | None = None,
        measure_rss: bool = True, idle_seconds: float = 4.0, camera: CameraSettings = CameraSettings(),
        progress=print) -> dict[str, Any]:
    """Every figure, measured; the pipeline and the model alone run on ``runtime`` with ``threads`` (by default
    the preferred runtime on every core, as ``rackwatch run`` does)."""
    from .bench_mqtt import bench_publish

    threads_all = os.cpu_count() or 1
    runtime = runtime or available_runtimes()[0]
    threads = threads or threads_all
    images, fps, decode_ms = load_frames(video, frames, camera_size)
    progress(f"{len(images)} frames of {video.name}, as the camera delivers them: "
             f"{images[0].shape[1]}x{images[0].shape[0]} RGB")

    interpreter = load_interpreter(model, threads, runtime)   # first: a runtime not installed is said at once
    runtimes = []
    for name in available_runtimes():
        for count in sorted({1, 2, 4, threads, threads_all} & set(range(1, max(threads, threads_all) + 1))):
            progress(f"invoke: {name}, {count} thread(s)")
            runtimes.append(time_invoke(model, name, count, calls=40, repeats=repeats))

    stages, poses, answers = time_stages(interpreter, images)
    analysis_alone = time_analysis_alone(poses, fps, images[0].shape[0], repeats)
    analysis_after_wait = time_analysis_alone(poses, fps, images[0].shape[0], repeats, pause_ms=stages["invoke_ms"])

    with (private_broker() if broker is None else nullcontext(broker)) as (host, port):
        progress(f"publishing to the broker at {host}:{port}")
        publish = bench_publish(200, host, port)
        model_runs, pipeline_runs, around_runs, latencies = [], [], [], []
        for i in range(repeats):
            progress(f"model only vs pipeline, run {i + 1} of {repeats}")
            model_runs.append(model_only_fps(interpreter, images, fps))
            pipeline_runs.append(pipeline_run(interpreter, images, fps, host, port, latencies))
            # With no model to wait for, a feeder thread would only make the two threads take turns.
            around_runs.append(1000 / pipeline_run(ReplayedModel(interpreter, answers), images, fps, host, port,
                                                   [], threaded=False)["fps"])
        memory = run_memory_mb(video, host, port) if measure_rss else None
    idle = None
    if idle_seconds > 0:
        progress(f"an empty rack at {camera.fps:g} fps, idle mode off and on, {repeats} x {idle_seconds:g} s each")
        idle = idle_saving(interpreter, images[0], camera, idle_seconds, repeats)

    invoke_ms = next(r["invoke_ms"]["median"] for r in runtimes
                     if r["threads"] == threads and r["runtime"] == runtime)
    pipeline_fps = [r["fps"] for r in pipeline_runs]
    analysis = [r["analysis_ms"] for r in pipeline_runs]
    events = [r["publish_ms"] for r in pipeline_runs]
    after = [a + e for a, e in zip(analysis, events)]
    ratios = [p / m for p, m in zip(pipeline_fps, model_runs)]
    # The ratio the pipeline would reach if the work around the model cost what it costs back to back.
    warm_ratios = [(1000 / m) / (1000 / m + w) for m, w in zip(model_runs, around_runs)]
    return {
        "video": str(video), "frames": len(images), "repeats": repeats, "runtime": runtime, "threads": threads,
        "camera_frame": f"{images[0].shape[1]}x{images[0].shape[0]}",
        "invoke_ms": invoke_ms,
        "model_fps": statistics.median(model_runs),
        "pipeline_fps": statistics.median(pipeline_fps),
        "pipeline_ratio": statistics.median(ratios),
        "preprocess_ms": stages["preprocess_ms"],
        "postprocess_ms": stages["postprocess_ms"],
        "around_model_ms_per_frame_warm": statistics.median(around_runs),
        "pipeline_ratio_if_warm": statistics.median(warm_ratios),
        "analysis_ms_per_frame": statistics.median(analysis),
        "analysis_alone_ms_per_frame": statistics.median(analysis_alone),
        "analysis_after_wait_ms_per_frame": statistics.median(analysis_after_wait),
        "events_outbox_ms_per_frame": statistics.median(events),
        "after_keypoints_ms_per_frame": statistics.median(after),
        "after_keypoints_share_of_invoke_pct": 100 * statistics.median(after) / invoke_ms,
        "decode_ms_recording_only": decode_ms,
        "publish_outbox_ms_per_rep": publish["outbox_ms_per_rep"],
        "publish_outbox_ms_per_state": publish["outbox_ms_per_state"],
        "publish_acked_per_s": publish["acked_per_s"],
        "rep_ack_latency_ms": statistics.median(a for a, _ in latencies) if latencies else None,
        "rep_ack_after_event_ms": statistics.median(m for _, m in latencies) if latencies else None,
        "frame_period_ms": 1000 / statistics.median(pipeline_fps),
        "peak_rss_mb": memory and memory["peak_rss"],
        "peak_private_mb": memory and memory["peak_private"],
        "bench_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spread": {"model_fps": spread(model_runs), "pipeline_fps": spread(pipeline_fps),
                   "pipeline_ratio": spread(ratios), "analysis_ms_per_frame": spread(analysis),
                   "after_keypoints_ms_per_frame": spread(after),
                   "rep_ack_latency_ms": spread([a for a, _ in latencies]) if latencies else None},
        "runtimes": runtimes,
        "idle": idle,
    }


def format_report(r: dict[str, Any]) -> str:
    s = r["spread"]

    def rng(name: str, fmt: str = ".1f") -> str:
        v = s[name]
        return "" if not v else f"  (runs: {v['min']:{fmt}} to {v['max']:{fmt}})"

    lines = [f"rackwatch bench: {r['frames']} frames of {Path(r['video']).name} as {r['camera_frame']} camera "
             f"frames, {r['repeats']} runs; the pipeline on {r['runtime']}, {r['threads']} thread(s)", "",
             "model invoke by runtime and threads (median ms, lowest-highest run):"]
    for rt in r["runtimes"]:
        v = rt["invoke_ms"]
        lines.append(f"  {rt['runtime']:<16} {rt['threads']} thread(s)  {v['median']:7.2f}   "
                     f"({v['min']:.2f}-{v['max']:.2f})")
    rss = "n/a" if r["peak_rss_mb"] is None else (
        f"{r['peak_rss_mb']:.0f} MB resident at most, {r['peak_private_mb']:.0f} MB of it its own (the rest is "
        f"library code mapped from disk)")
    latency = "n/a" if r["rep_ack_latency_ms"] is None else (
        f"{r['rep_ack_latency_ms']:.1f} ms after the frame that ended the rep arrived "
        f"({r['rep_ack_after_event_ms']:.1f} ms after its event was made)")
    lines += [
        "",
        "per frame (median ms):",
        f"  pre-processing       {r['preprocess_ms']:7.3f}",
        f"  model invoke         {r['invoke_ms']:7.3f}",
        f"  post-processing      {r['postprocess_ms']:7.3f}",
        f"  squat analysis       {r['analysis_ms_per_frame']:7.3f}{rng('analysis_ms_per_frame', '.3f')}",
        f"    (on its own: {r['analysis_alone_ms_per_frame']:.3f} back to back, "
        f"{r['analysis_after_wait_ms_per_frame']:.3f} after a busy wait as long as an invoke)",
        f"  events + outbox      {r['events_outbox_ms_per_frame']:7.3f}",
        f"  after the keypoints  {r['after_keypoints_ms_per_frame']:7.3f}   "
        f"= {r['after_keypoints_share_of_invoke_pct']:.2f}% of one invoke{rng('after_keypoints_ms_per_frame', '.3f')}",
        f"  (decoding a recording {r['decode_ms_recording_only']:.2f} ms: not on the camera's path)",
        "",
        f"model only      {r['model_fps']:7.1f} frames/s{rng('model_fps')}",
        f"whole pipeline  {r['pipeline_fps']:7.1f} frames/s{rng('pipeline_fps')}",
        f"ratio           {r['pipeline_ratio']:7.3f}{rng('pipeline_ratio', '.3f')}",
        f"  (the work around the model, back to back with the model's answers replayed: "
        f"{r['around_model_ms_per_frame_warm']:.3f} ms a frame; at that cost the ratio would be "
        f"{r['pipeline_ratio_if_warm']:.3f})",
        "",
        f"publish: outbox {r['publish_outbox_ms_per_rep']:.2f} ms per rep (fsync), "
        f"{r['publish_outbox_ms_per_state']:.2f} ms per state; {r['publish_acked_per_s']:.0f} events/s acknowledged",
        f"rep event acknowledged by the broker {latency}; frame period {r['frame_period_ms']:.1f} ms",
        f"memory of `rackwatch run` replaying the clip: {rss}",
        f"  (this benchmark itself: {r['bench_peak_rss_mb']:.0f} MB)",
    ]
    idle = r.get("idle")
    if idle:
        def row(name: str) -> str:
            calls, cpu = idle[f"{name}_model_calls_per_s"], idle[f"{name}_cpu_s_per_s"]
            return (f"{calls['median']:5.1f} model calls/s, {cpu['median']:.3f} CPU s/s  "
                    f"(runs: {cpu['min']:.3f} to {cpu['max']:.3f})")
        saved = "n/a" if idle["cpu_saved_pct"] is None else f"{idle['cpu_saved_pct']:.0f}% less CPU"
        lines += ["",
                  f"an empty rack ({idle['camera_fps']:g} fps black camera frames, {idle['seconds']:g} s a run): "
                  f"idle mode uses {saved}",
                  f"  idle mode off  {row('awake')}",
                  f"  idle mode on   {row('idle')}   (idle_fps {idle['idle_fps']:g})"]
    return "\n".join(lines)
