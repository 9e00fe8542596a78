"""The ``rackwatch`` command.

``rackwatch analyze VIDEO``   judge the reps of a recording
``rackwatch eval DIR``        score rackwatch against a labelled footage folder
``rackwatch run``             be a rack: camera (or a recording) in, events out over MQTT, the panel driven
``rackwatch bench``           measure the model, the pipeline, publishing and memory
``rackwatch models fetch``    download (or copy) and verify the pose model
``rackwatch doctor``          check every part of a rack and say in words what to fix (``aim``: the camera's aim)
``rackwatch provision CSV``   first-boot seeds (cloud-init) for many racks
``rackwatch dashboard``       the gym staff's web dashboard (needs the ``dashboard`` extra)
``rackwatch demo``            a broker, racks replaying footage, and the dashboard, on this machine
``rackwatch loadtest``        how many racks a dashboard takes (events/s, latency, nothing lost)

Every expected failure (no model, unreadable video, bad config) ends with a one-paragraph message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__, paths
from .camera import SPEEDS, SourceError
from .config import ConfigError, load_config
from .doctor import CHECKS as DOCTOR_CHECKS
from .events import EXERCISES, UNITS
from .load import AboveOneRepMax, LifterSettings
from .models import ModelError
from .pose import PoseError

# OSError: files that cannot be written (--overlay, --rep-frames to a full disk or a folder not ours).
EXPECTED_ERRORS = (ConfigError, ModelError, PoseError, SourceError, OSError)


def _weight(text: str) -> float:
    """A weight as typed; the limits per unit are the lifter's settings' to check (rackwatch.load)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is out of range: a weight is 0 or more")
    return value


def _frame_rate(text: str) -> float:
    """A frame rate to thin a recording to; above the recording's own rate every frame is kept."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of frames a second") from None
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"{text} is out of range: give a frame rate above 0, e.g. 10 for a Pi 4")
    return value


FPS_HELP = ("thin the recording to N frames a second first, as a rack that slow sees it (a Pi 4 judges about 9-10, "
            "a Pi 5 about 20); N at or above the recording's own rate keeps every frame")


def _distance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(f"{text} is out of range: 1 (as filmed) to 10 times further back")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rackwatch", description="Squat-rack form monitor.")
    parser.add_argument("--version", action="version", version=f"rackwatch {__version__}")
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--model", help="pose model file (default: $RACKWATCH_MODEL, then models/ "
                        "or the installed model folder: see models/README.md)")
    sub = parser.add_subparsers(dest="command", required=True)

    analyze = sub.add_parser("analyze", help="count and judge the reps of a recording")
    analyze.add_argument("video", nargs="?",
                         help="video file or folder of images (default: a sample clip from $RACKWATCH_FOOTAGE or "
                              "../shared/footage)")
    analyze.add_argument("--load", type=_weight, help="bar load")
    analyze.add_argument("--one-rm", type=_weight, help="the lifter's one-rep max")
    analyze.add_argument("--units", choices=UNITS, default="kg")
    analyze.add_argument("--exercise", choices=EXERCISES, default="squat")
    analyze.add_argument("--json", action="store_true", help="print events as JSON lines instead of a table")
    analyze.add_argument("--overlay", metavar="OUT.mp4", help="also write the video with skeleton and knee lines")
    analyze.add_argument("--rep-frames", metavar="DIR",
                         help="also save a picture of each rep at its worst moment (DIR/rep-01.png, ...)")
    analyze.add_argument("--fps", type=_frame_rate, metavar="N", help=FPS_HELP)
    analyze.add_argument("--quiet", action="store_true", help="no progress bar")

    evaluate = sub.add_parser("eval", help="score rep counts and knee-cave calls against labelled footage")
    evaluate.add_argument("footage", help="folder holding labels.json and the clips")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--all", action="store_true", help="also clips labelled not usable")
    evaluate.add_argument("--camera-size", type=int, metavar="PIXELS",
                          help="first scale frames down to this long side, as the Pi camera delivers them "
                               "(320 with the default [camera] size)")
    evaluate.add_argument("--fps", type=_frame_rate, metavar="N", help=FPS_HELP)
    evaluate.add_argument("--distance", type=_distance, metavar="K",
                          help="shrink every frame K times on a grey background, as a camera K times further back "
                               "would see the lifter (1 to 10)")

    run = sub.add_parser("run", help="run the rack: camera (or a video in its place) to MQTT events and the panel")
    run.add_argument("--source", default="picamera",
                     help="'picamera' (default) or a video file / folder of images in place of the camera")
    run.add_argument("--rack", help="rack id (default: [rack] id of the config, rack01)")
    run.add_argument("--broker", metavar="URL",
                     help="mqtt://HOST:PORT or mqtts://HOST:PORT (default: [mqtt] host and port of the config)")
    run.add_argument("--username", help="broker username (default: [mqtt] username)")
    run.add_argument("--password", help="broker password (default: $RACKWATCH_MQTT_PASSWORD, then [mqtt])")
    run.add_argument("--speed", choices=SPEEDS, default="realtime",
                     help="for a recording: every frame as fast as possible (max), or at its own frame rate, "
                          "dropping frames like the camera when behind (realtime, the default)")
    run.add_argument("--state-dir", help="folder for the outbox and the lifter's settings (default: [rack] state_dir)")
    run.add_argument("--virtual-panel", action="store_true", help="the rack panel in this terminal (keys and text)")
    run.add_argument("--load", type=_weight, help="bar load, in --units (else in the saved units)")
    run.add_argument("--one-rm", type=_weight, help="the lifter's one-rep max")
    run.add_argument("--units", choices=UNITS, help="kg or lb (default: as saved, kg at first)")
    run.add_argument("--exercise", choices=EXERCISES, help="squat or single-leg (default: as saved)")
    run.add_argument("--drain-timeout", type=float, default=10.0, metavar="S",
                     help="at shutdown, wait this long for the broker to take the last events (default 10)")
    run.add_argument("--health-every", type=float, default=5.0, metavar="S",
                     help="seconds between health events (default 5)")

    bench = sub.add_parser("bench", help="measure the model, the pipeline, publishing and memory on real footage")
    bench.add_argument("video", nargs="?",
                       help="recording to measure on (default: a sample clip from $RACKWATCH_FOOTAGE or "
                            "../shared/footage)")
    bench.add_argument("--frames", type=int, default=150, help="frames to use (default 150)")
    bench.add_argument("--repeats", type=int, default=5, help="runs per figure (default 5)")
    bench.add_argument("--camera-size", type=int, metavar="PIXELS",
                       help="long side of the camera frames to measure on (default: the [camera] size)")
    bench.add_argument("--runtime", choices=("ai_edge_litert", "tflite_runtime"),
                       help="runtime for the pipeline and model-only runs (default: the [model] runtime)")
    bench.add_argument("--threads", type=int, help="model threads for those runs (default: the [model] threads)")
    bench.add_argument("--broker", help="mqtt://HOST:PORT (default: a private Mosquitto on a free port)")
    bench.add_argument("--no-rss", action="store_true", help="skip measuring `rackwatch run`'s memory")
    bench.add_argument("--idle-seconds", type=float, default=4.0, metavar="S",
                       help="seconds of empty rack per run to measure idle mode's saving (default 4; 0 skips it)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")

    doctor = sub.add_parser("doctor", help="check camera, model, GPIO, broker, clock, disk and heat; say what to fix")
    doctor.add_argument("--source", help="check this recording instead of the Pi camera (video file or folder)")
    doctor.add_argument("--check", action="append", choices=DOCTOR_CHECKS, help="only this check (repeatable)")
    doctor.add_argument("--rack", help="rack id (default: [rack] id)")
    doctor.add_argument("--broker", metavar="URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT (default: [mqtt])")
    doctor.add_argument("--username", help="broker username (default: [mqtt] username)")
    doctor.add_argument("--password", help="broker password (default: $RACKWATCH_MQTT_PASSWORD, then the "
                                           "service's /etc/rackwatch/environment, then [mqtt])")
    doctor.add_argument("--state-dir", help="state folder to check for space (default: [rack] state_dir)")
    doctor.add_argument("--aim-seconds", type=float, default=15.0, help="how long to watch the camera for the aim")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")

    aim = sub.add_parser("aim", help="is the camera aimed right? watch one test squat and say what to change")
    aim.add_argument("--source", default="picamera", help="'picamera' (default) or a recording of the test squat")
    aim.add_argument("--seconds", type=float, default=20.0, help="how long to watch the camera (default 20)")
    aim.add_argument("--json", action="store_true", help="print one JSON object")

    provision = sub.add_parser("provision", help="first-boot seeds for many racks from a CSV (docs/deploy.md)")
    provision.add_argument("csv", help="racks.csv: rack_id,hostname,wifi_ssid,wifi_password,broker,username,password")
    provision.add_argument("--out", required=True, help="folder to write one seed folder per rack into")
    provision.add_argument("--wheel", required=True, help="the rackwatch wheel the racks install (rackwatch-*.whl)")
    provision.add_argument("--ca", help="the gym's CA certificate, for racks with an mqtts:// broker")

    models = sub.add_parser("models", help="fetch or verify the pose model")
    models_sub = models.add_subparsers(dest="action", required=True)
    fetch = models_sub.add_parser("fetch", help="download the model, or copy it from a folder, and verify it")
    fetch.add_argument("--from", dest="source", help="copy from this folder instead of downloading")
    models_sub.add_parser("verify", help="check the model against the manifest")

    _dashboard_parsers(sub)
    return parser


def _dashboard_parsers(sub) -> None:
    """The dashboard's commands; their module is imported only when one of them runs (the rack never does)."""
    from .dashboard import cli_args   # argparse only: no dashboard package is imported here

    cli_args.add_dashboard_arguments(sub.add_parser("dashboard", help="the staff's web dashboard "
                                                    "(pip install 'rackwatch[dashboard]')"))
    cli_args.add_demo_arguments(sub.add_parser("demo", help="the whole product on this machine: a broker, racks "
                                               "replaying footage, the dashboard"))
    cli_args.add_loadtest_arguments(sub.add_parser("loadtest", help="measure a dashboard under N simulated racks"))


def _interpreter(args, config):
    from .models import find_model
    from .pose import load_interpreter

    path = find_model(args.model or config.model.path or None)
    return load_interpreter(path, config.model.threads or None, config.model.runtime or None)


def _video(args) -> str:
    """The VIDEO given, or the sample clip of the shared footage; a clear error where there is none (a rack)."""
    if args.video:
        return args.video
    clip = paths.sample_clip()
    if clip is None:
        raise SourceError(f"Give a recording: rackwatch {args.command} VIDEO. (Without one, the sample clip "
                          f"{paths.SAMPLE_CLIP} of the shared footage is used: set ${paths.FOOTAGE_ENV} to the "
                          "footage folder, or run from a development checkout with ../shared/footage beside it.)")
    if not clip.is_file():
        raise SourceError(f"Give a recording: rackwatch {args.command} VIDEO. (Without one, the sample clip "
                          f"{clip} is used, and it is not there: check ${paths.FOOTAGE_ENV} or ../shared/footage.)")
    return str(clip)


def cmd_analyze(args, config) -> int:
    from .recording import analyze_recording

    args.video = _video(args)
    if args.one_rm is not None and args.load is None:
        raise ConfigError("--one-rm needs --load too: the verdict compares the load with the one-rep max.")
    try:   # before the model loads: a typo is answered at once
        lifter = LifterSettings(load=args.load, one_rm=args.one_rm, units=args.units, exercise=args.exercise)
    except AboveOneRepMax as exc:
        raise ConfigError(exc.for_flags(saved=False)) from None
    except ValueError as exc:
        raise ConfigError(f"{exc}.") from None
    interpreter = _interpreter(args, config)
    progress = None if args.quiet or args.json else _Progress(sys.stderr)
    overlay = None
    printed = 0
    poses = {}
    fps = 30.0

    def on_start(source):
        nonlocal fps
        fps = source.fps
        if progress:
            progress.total = source.frame_count

    def on_frame(frame, pose, new_events):
        nonlocal overlay, printed
        if args.rep_frames:
            poses[frame.index] = pose
        if progress:
            progress.update(frame.index + 1)
        if args.overlay:
            if overlay is None:
                from .overlay import OverlayWriter
                overlay = OverlayWriter(args.overlay, fps, config.analysis.min_score)
            overlay.add(frame.t, frame.image, pose, new_events)
        if args.json:
            for event in new_events:
                print(event.to_json(), flush=True)
            printed += len(new_events)

    try:
        result = analyze_recording(args.video, interpreter, lifter=lifter, settings=config.analysis,
                                   fps=args.fps, on_start=on_start, on_frame=on_frame)
    finally:
        if progress:
            progress.done()
        if overlay:
            overlay.close()
    pictures = []
    if args.rep_frames:
        from .overlay import write_rep_frames
        # Frames keep their recording's index when thinned: the pictures are found at the recording's own rate.
        pictures = write_rep_frames(args.video, args.rep_frames, result.reps, poses, result.recorded_fps,
                                    config.analysis.min_score)
    if args.json:
        # The events that closing the recording produced (the set summary) were not printed frame by frame.
        for event in result.events[printed:]:
            print(event.to_json())
        return 0
    print(format_report(args.video, result))
    if args.overlay:
        print(f"\nOverlay written to {args.overlay}")
    if args.rep_frames:
        print(f"\n{len(pictures)} rep pictures written to {args.rep_frames}")
    return 0


def format_report(video: str, result) -> str:
    thinned = f", thinned from {result.recorded_fps:.1f}" if result.fps < result.recorded_fps else ""
    lines = [f"{video}: {len(result.reps)} reps in {result.frames / result.fps:.1f} s "
             f"({result.frames} frames at {result.fps:.1f} fps{thinned})", ""]
    if result.reps:
        lines.append(" rep  bottom   depth  descent  ascent  left knee            right knee           verdict")
        for rep in result.reps:
            legs = []
            for side in ("left", "right"):
                v = rep.valgus.leg(side)
                where = v.peak_phase[:3] if v and v.cave > 0 else ""
                legs.append(f"({rep.valgus.unjudged.get(side, 'free leg')})" if v is None
                            else f"{v.severity:<8} {v.cave:+.2f} {where}")
            lines.append(f"{rep.rep:4d}  {rep.t_bottom:5.1f}s  {rep.depth:5.2f}  {rep.descent_s:6.1f}s "
                         f"{rep.ascent_s:6.1f}s  {legs[0]:<20} {legs[1]:<20} {rep.verdict}")
            if rep.unjudged_reason:
                lines.append(f"      {rep.unjudged_reason}")
            else:
                lines += [f"      {side} knee not judged: {rep.valgus.why_unjudged(side)}" for side in rep.valgus.unjudged]
        lines.append("")
        lines.append("knee cave: how far the knee moved inside the ankle, in leg lengths (+ = inward), "
                     "and where it peaked (des/bot/asc)")
    if result.not_counted:
        lines.append("")
        lines += [f"not counted, {e.t_start:.1f}-{e.t_end:.1f} s: {e.reason}" for e in result.not_counted]
    for summary in result.sets:
        lines.append("")
        load = summary.load
        load_text = f" at {load.value:g} {load.units}" if load else ""
        if load and load.percent_1rm:
            load_text += f" ({load.percent_1rm:.0f}% of max)"
        lines.append(f"Set{load_text}: {summary.reps} reps, {summary.clean_reps} clean")
        if summary.worst_rep:
            lines.append(f"  worst rep: {summary.worst_rep}")
        if summary.weaker_side:
            lines.append(f"  weaker side: {summary.weaker_side}")
        if summary.velocity_loss_pct is not None:
            lines.append(f"  velocity loss: {summary.velocity_loss_pct:.0f}%")
        for text in summary.remarks + summary.cues:
            lines.append(f"  - {text}")
        lines.append(f"  next time: {summary.advice.text}")
    return "\n".join(lines)


def cmd_eval(args, config) -> int:
    from .evaluation import score_clip, totals
    from .recording import analyze_recording

    folder = Path(args.footage)
    try:
        labels = json.loads((folder / "labels.json").read_text())
    except (OSError, ValueError) as exc:
        raise SourceError(f"{folder / 'labels.json'} is missing or not valid JSON ({exc}).") from None
    interpreter = _interpreter(args, config)
    scores = []
    for label in labels:
        if not label.get("usable", True) and not args.all:
            continue
        try:
            result = analyze_recording(folder / label["clip"], interpreter,
                                       lifter=LifterSettings(exercise=label["exercise"]),
                                       settings=config.analysis, camera_size=args.camera_size, fps=args.fps,
                                       distance=args.distance)
            scores.append(score_clip(label, result.reps))
        except SourceError as exc:
            score = score_clip(label, [])
            score.error = str(exc)
            scores.append(score)
        if not args.json:
            print(f"  analysed {label['clip']}", file=sys.stderr)
    summary = totals(scores)
    if args.json:
        print(json.dumps({"clips": [s.as_dict() for s in scores], "total": summary, "fps": args.fps}, indent=2))
    else:
        if args.fps:
            print(f"Each clip thinned to {args.fps:g} frames a second (or its own rate, if lower).\n")
        print(format_eval(scores, summary))
    return 0


def _pct(x) -> str:
    return "  -  " if x is None else f"{x:5.2f}"


def format_eval(scores, summary) -> str:
    lines = ["| clip | view | reps labelled | found | exact | cave TP/FP/FN/TN (L) | cave TP/FP/FN/TN (R) |",
             "|---|---|---|---|---|---|---|"]
    for s in scores:
        cells = [f"{t.tp}/{t.fp}/{t.fn}/{t.tn}" + (f" ({t.unjudged} unjudged)" if t.unjudged else "")
                 for t in s.cave.values()]
        lines.append(f"| {s.clip} | {s.view.split(' ')[0]} | {s.reps_labelled} | {s.reps_found} | "
                     f"{'yes' if s.count_exact else 'NO'} | {cells[0]} | {cells[1]} |")
    lines.append("")
    lines.append(f"Rep counts exact on {summary['clips_count_exact']} of {summary['clips']} clips; "
                 f"{summary['reps_matched']} of {summary['reps_labelled']} labelled reps found, "
                 f"{summary['reps_found'] - summary['reps_matched']} extra.")
    lines.append("")
    lines.append("| knee cave | TP | FP | FN | TN | unjudged | precision | recall | F1 |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for leg, t in summary["cave"].items():
        lines.append(f"| {leg} | {t['tp']} | {t['fp']} | {t['fn']} | {t['tn']} | {t['unjudged']} | "
                     f"{_pct(t['precision'])} | {_pct(t['recall'])} | {_pct(t['f1'])} |")
    unjudged = [(s.clip, u) for s in scores for u in s.unjudged]
    if unjudged:
        lines += ["", "Legs not judged, and why:", "", "| clip | rep | bottom | leg | label | reason |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {clip} | {u['rep']} | {u['t_bottom']:.1f} s | {u['leg']} | {u['label'] or '-'} | {u['reason']} |"
                  for clip, u in unjudged]
    return "\n".join(lines)


def cmd_bench(args, config) -> int:
    from . import bench
    from .models import find_model

    video = Path(_video(args))
    broker = None
    if args.broker:
        from .rack import parse_broker_url
        host, port, _tls = parse_broker_url(args.broker)
        broker = (host, port)
    if args.frames < 10 or args.repeats < 1 or (args.camera_size is not None and args.camera_size < 64) \
            or (args.threads is not None and args.threads < 1):
        raise ConfigError("--frames must be at least 10, --repeats and --threads at least 1 and --camera-size at "
                          "least 64.")
    progress = (lambda line: print(f"  {line}", file=sys.stderr)) if not args.json else (lambda line: None)
    try:
        figures = bench.run(video, find_model(args.model or config.model.path or None),
                            frames=args.frames, repeats=args.repeats, broker=broker,
                            camera_size=args.camera_size or max(config.camera.width, config.camera.height),
                            runtime=args.runtime or config.model.runtime or None,
                            threads=args.threads or config.model.threads or None,
                            measure_rss=not args.no_rss, idle_seconds=max(args.idle_seconds, 0.0),
                            camera=config.camera, progress=progress)
    except RuntimeError as exc:
        raise SourceError(str(exc)) from None
    print(json.dumps(figures, indent=2) if args.json else bench.format_report(figures))
    return 0


def cmd_models(args, config) -> int:
    from . import models

    if args.action == "fetch":
        path = models.fetch(Path(args.source) if args.source else None)
        print(f"Model ready: {path}")
    else:
        path = models.find_model(args.model or config.model.path or None)
        print(f"Model OK: {path}")
    return 0


def cmd_doctor(args, config) -> int:
    from .doctor import format_findings, run_doctor

    report = run_doctor(args, config)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_findings(report.findings))
    return 0 if report.ok else 1


def cmd_aim(args, config) -> int:
    from .aim import check_aim
    from .camera import open_frames
    from .doctor import format_findings

    camera = config.camera
    frames = open_frames(args.source, "max", (camera.width, camera.height), camera.fps)
    if args.source == "picamera" and not args.json:
        print(f"Watching the camera for {args.seconds:g} s: stand at the bar facing it, and do one slow squat.",
              file=sys.stderr, flush=True)
    report = check_aim(frames, _interpreter(args, config), analysis=config.analysis, settings=config.aim,
                       seconds=args.seconds if args.source == "picamera" else None)
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_findings(report.findings))
    return 0 if report.camera_ready else 1


def cmd_provision(args, config) -> int:
    from .provision import provision

    written = provision(Path(args.csv), Path(args.out), Path(args.wheel), Path(args.ca) if args.ca else None)
    print(f"{len(written)} rack seeds written to {args.out}: " + ", ".join(p.name for p in written))
    return 0


def cmd_run(args, config) -> int:
    from .rack import run_command

    return run_command(args, config, lambda: _interpreter(args, config))


class _Progress:
    """A one-line progress bar on stderr."""

    def __init__(self, stream):
        self.stream = stream
        self.total = 0
        self._last = -1

    def update(self, n: int) -> None:
        if not self.total:
            return
        percent = min(100, 100 * n // self.total)
        if percent != self._last:
            self._last = percent
            bar = "#" * (percent // 4)
            self.stream.write(f"\r  [{bar:<25}] {percent:3d}%  frame {n}/{self.total}")
            self.stream.flush()

    def done(self) -> None:
        if self._last >= 0:
            self.stream.write("\n")


def cmd_dashboard(args, config) -> int:
    try:
        from .dashboard import demo, loadtest, server
    except ImportError as exc:
        raise ConfigError(f"The dashboard needs its extra ({exc.name} is missing): pip install 'rackwatch[dashboard]'.")
    try:
        return {"dashboard": server.main, "demo": demo.main, "loadtest": loadtest.main}[args.command](args)
    except server.DashboardError as exc:
        raise ConfigError(str(exc)) from None


COMMANDS = {"analyze": cmd_analyze, "eval": cmd_eval, "bench": cmd_bench, "models": cmd_models, "run": cmd_run,
            "doctor": cmd_doctor, "aim": cmd_aim, "provision": cmd_provision,
            "dashboard": cmd_dashboard, "demo": cmd_dashboard, "loadtest": cmd_dashboard}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
        return COMMANDS[args.command](args, config)
    except EXPECTED_ERRORS as exc:
        print(f"rackwatch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
