"""Squats only: movements that drop the hips in the picture without being a squat with the feet planted make no rep.

There is no real footage of these at a rack, so each is drawn by numbers: a lifter seen from the front, the camera
at hip height, every joint placed as the movement puts it in the picture (a body further away is smaller and its
feet higher in the picture), with the model's jitter on every joint, at 30 fps and at the rack's 10. Each must
make no rep, for the reason stated; and each, run with the squats-only rules switched off, *would* have made one,
so that every test here can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from rackwatch import geometry
from rackwatch.analysis import AnalysisSettings, LiftAnalyzer
from rackwatch.load import LifterSettings
from rackwatch.pose import KP, Pose
from rackwatch.reps import RepSettings, RepTracker

RATES = [30, 10, 8]
HIP = 400.0          # standing hip height in the picture at scale 1, pixels
HORIZON = 500.0      # the camera looks level from hip height: standing hips sit on this line at any distance
CENTRE = 640.0
OFF = RepSettings(max_foot_rise=10, max_foot_travel=10, max_stance_change=10)   # the squats-only rules off


def body(*, drop: float = 0.0, scale: float = 1.0, lift: float = 0.0, stance: float = 120.0,
         left_foot: tuple[float, float, float] = (0.0, 0.0, 1.0),
         right_foot: tuple[float, float, float] = (0.0, 0.0, 1.0),
         arms: float = 0.0, curl: float = 0.0) -> Pose:
    """A front view of a lifter, in pixels at scale 1 (the lifter 400 px from hips to floor), then put in the picture.

    ``drop``: how far the hips sink (share of hip height, the knees bending forward between hips and ankles).
    ``scale``: the body's size in the picture (< 1 further away). ``lift``: the whole body off the floor (share of
    hip height, a jump). ``stance``: half the gap between the ankles. ``left_foot``/``right_foot``: each foot's
    (sideways shift, height above the floor as a share of hip height, its own scale relative to the body's: a foot
    stepped toward the camera is bigger and lower in the picture). ``arms``: 0 hanging, 1 straight up
    (jumping jacks); ``curl``: 0 arms hanging, 1 forearms up to the shoulders (a curl).
    """
    xy = np.zeros((17, 2), np.float32)

    def put(name, x, y, s=scale):   # y in body pixels above the floor, x from the body's midline
        xy[KP[name]] = (CENTRE + s * x, HORIZON + s * (HIP - y))

    base = lift * HIP
    hip_y = base + HIP * (1 - drop)
    for side, sign, (shift, up, own) in (("left", 1, left_foot), ("right", -1, right_foot)):
        foot_scale = scale * own
        ankle_x, ankle_y = sign * (stance + shift), base + up * HIP
        put(f"{side}_ankle", ankle_x, ankle_y, foot_scale)
        put(f"{side}_hip", sign * 60, hip_y)
        # The knee halfway between, pushed toward the camera as it bends: drawn at the mean of hip and ankle.
        knee_scale = (scale + foot_scale) / 2
        put(f"{side}_knee", (sign * 60 + ankle_x) / 2 + sign * 10, (hip_y + ankle_y) / 2, knee_scale)
        shoulder_y = hip_y + 250
        put(f"{side}_shoulder", sign * 90, shoulder_y)
        angle = math.radians(180 * arms)    # 0: hanging down, 180: straight up
        elbow = (sign * (90 + 120 * math.sin(angle)), shoulder_y - 120 * math.cos(angle))
        put(f"{side}_elbow", *elbow)
        if curl:
            put(f"{side}_wrist", elbow[0], elbow[1] - 110 * math.cos(math.radians(180 * curl)))
        else:
            put(f"{side}_wrist", elbow[0] + sign * 110 * math.sin(angle), elbow[1] - 110 * math.cos(angle))
        put(f"{side}_eye", sign * 15, shoulder_y + 90)
        put(f"{side}_ear", sign * 30, shoulder_y + 85)
    put("nose", 0, hip_y + 330)
    return Pose(xy=xy, score=np.full(17, 0.9, np.float32))


def frames_of(fps: int, seconds: float, at) -> list[Pose]:
    """``at(t)`` → keyword arguments of :func:`body`, for every frame of ``seconds``."""
    return [body(**at(i / fps)) for i in range(int(round(seconds * fps)))]


def smooth(a: float, b: float, u: float) -> float:
    u = min(max(u, 0.0), 1.0)
    return a + (b - a) * (1 - math.cos(math.pi * u)) / 2


def stand(fps, seconds=1.0, **kw):
    return frames_of(fps, seconds, lambda t: kw)


def squat(fps, depth=0.45, down=1.0, up=1.0, **kw):
    return frames_of(fps, down + up, lambda t: {**kw, "drop": smooth(0, depth, t / down) if t < down
                                               else smooth(depth, 0, (t - down) / up)})


def jump(fps):
    """A countermovement jump: dip, take off, 0.4 s in the air (feet a quarter of a hip height up), land in a dip."""
    def at(t):
        if t < 0.45:
            return {"drop": smooth(0, 0.3, t / 0.45)}
        if t < 0.7:
            return {"drop": smooth(0.3, 0, (t - 0.45) / 0.25)}
        if t < 1.1:
            u = (t - 0.7) / 0.4
            return {"lift": 0.25 * 4 * u * (1 - u)}
        if t < 1.4:
            return {"drop": smooth(0, 0.3, (t - 1.1) / 0.3)}
        return {"drop": smooth(0.3, 0, (t - 1.4) / 0.5)}
    return frames_of(fps, 1.9, at)


def jumping_jacks(fps, count=3):
    """Feet jump apart and back (stance 110 ↔ 260 px), arms up and down, each landing sunk into a quarter squat."""
    def at(t):
        half, v = divmod(t % 2.0, 1.0)        # out in the first second, back in the second
        start, end = (110, 260) if half == 0 else (260, 110)
        flight = v < 0.25
        stance = smooth(start, end, v / 0.25)
        lift = 0.15 * 4 * (v / 0.25) * (1 - v / 0.25) if flight else 0.0
        drop = 0.0 if flight else 0.3 * math.sin(math.pi * (v - 0.25) / 0.75)
        arms = smooth(0, 1, v / 0.25) if half == 0 else smooth(1, 0, v / 0.25)
        return {"stance": stance, "lift": lift, "drop": drop, "arms": arms}
    return frames_of(fps, 2 * count, at)


def lunge(fps, side="right", forward=True):
    """A lunge: one foot steps toward the camera (bigger and lower in the picture) or away from it (smaller and
    higher), the hips sink to half their height and come back up, the foot steps home."""
    def foot(u):   # 0 home, 1 stepped: a step of 0.9 m with the camera 3 m away, lifted on the way
        return (0.0, 0.15 * math.sin(math.pi * u), 1 + (0.3 if forward else -0.23) * u)

    def at(t):
        if t < 0.4:
            f, drop = foot(smooth(0, 1, t / 0.4)), 0.0
        elif t < 1.8:
            f, drop = foot(1), 0.55 * math.sin(math.pi * (t - 0.4) / 1.4)
        else:
            f, drop = foot(smooth(1, 0, (t - 1.8) / 0.4)), 0.0
        return {"drop": drop, f"{side}_foot": f}
    return frames_of(fps, 2.2, at)


def curls(fps, seconds=6.0):
    return frames_of(fps, seconds, lambda t: {"curl": (1 - math.cos(2 * math.pi * t / 2.0)) / 2})


def walk(fps, scale_from: float, scale_to: float, seconds: float):
    """Walking straight toward or away from the camera: the body's size in the picture goes from ``scale_from``
    to ``scale_to``; the feet take turns, one planted while the other swings forward, two steps a second."""
    distance = lambda s: 1 / s                 # noqa: E731  distance from the camera, in units of the nearest
    d0, d1 = distance(scale_from), distance(scale_to)
    steps = max(2, int(round(seconds * 2)))

    def at(t):
        u = t / seconds
        body_d = d0 + (d1 - d0) * u
        n, v = divmod(u * steps, 1)
        feet = {}
        for side, parity in (("left", 0), ("right", 1)):
            # Where this foot stands: it moves during its own steps only (every other one).
            landed = [k for k in range(steps + 1) if k % 2 == parity and k <= n]
            planted = d0 + (d1 - d0) * (min(landed[-1] + 1, steps) / steps if landed else 0)
            if int(n) % 2 == parity and n < steps:
                start = d0 + (d1 - d0) * max(int(n) - 1, 0) / steps
                end = d0 + (d1 - d0) * min(int(n) + 1, steps) / steps
                foot_d, up = start + (end - start) * v, 0.12 * math.sin(math.pi * v)
            else:
                foot_d, up = planted, 0.0
            feet[f"{side}_foot"] = (0.0, up, body_d / foot_d)
        return {"scale": 1 / body_d, **feet}
    return frames_of(fps, seconds, at)


def noisy(poses, px=1.5, seed=0):
    rng = np.random.default_rng(seed)
    return [Pose(xy=p.xy + rng.normal(0, px, p.xy.shape).astype(np.float32), score=p.score) for p in poses]


def track(poses, fps, settings=RepSettings(), single_leg=False):
    tracker = RepTracker(settings)
    tracker.single_leg = single_leg
    reps = []
    for i, pose in enumerate(noisy(poses)):
        reps += tracker.update(i / fps, geometry.measure(pose))
    return reps + tracker.finish(), list(tracker.rejected)


MOVEMENTS = {
    # name: (poses at a frame rate, {why code: words its reason must hold})
    "jump": (lambda fps: stand(fps) + jump(fps) + stand(fps, 0.8) + jump(fps) + stand(fps),
             {"jump": "feet left the floor"}),
    "jumping jacks": (lambda fps: stand(fps, 1.0, stance=110) + jumping_jacks(fps) + stand(fps, 1.0, stance=110),
                      {"jump": "feet left the floor", "jumping_jacks": "apart or together"}),
    "forward lunges": (lambda fps: stand(fps) + lunge(fps, "right") + stand(fps, 0.6) + lunge(fps, "left")
                       + stand(fps), {"step": "foot stepped"}),
    "reverse lunges": (lambda fps: stand(fps) + lunge(fps, "right", forward=False) + stand(fps, 0.6)
                       + lunge(fps, "left", forward=False) + stand(fps), {"step": "foot stepped"}),
    "walking away and back": (lambda fps: stand(fps) + walk(fps, 1.0, 0.6, 2.5) + stand(fps, 0.2, scale=0.6)
                              + walk(fps, 0.6, 1.0, 2.5) + stand(fps), {"walking_in_out": "walking toward or away"}),
    "walking in and out": (lambda fps: stand(fps, 1.0, scale=0.55) + walk(fps, 0.55, 1.0, 3.0) + stand(fps)
                           + walk(fps, 1.0, 0.6, 2.5) + stand(fps, 0.2, scale=0.6) + walk(fps, 0.6, 1.0, 2.5)
                           + stand(fps), {"walking_in_out": "walking toward or away"}),
}


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("name", MOVEMENTS)
def test_a_movement_that_is_not_a_squat_makes_no_rep(name, fps):
    make, words = MOVEMENTS[name]
    poses = make(fps)
    # It drops the hips in the picture like a squat: without the squats-only rules it would count.
    loose, _ = track(poses, fps, OFF)
    assert len(loose) >= 1, "the movement must look like a rep to the rest of the tracker"
    reps, rejected = track(poses, fps)
    assert reps == []
    assert rejected, "a rejected rep says why"
    for rejection in rejected:
        assert rejection.why in words and words[rejection.why] in rejection.reason, rejection


@pytest.mark.parametrize("fps", RATES)
def test_curls_standing_still_make_no_rep(fps):
    # The arms move, the hips do not: nothing even starts.
    reps, rejected = track(stand(fps) + curls(fps) + stand(fps), fps)
    assert reps == [] and rejected == []


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_squats_drawn_the_same_way_all_count(fps, scale):
    # The same drawing, squatting: narrow and wide stances, shallow and deep, quick and slow, arms up (an overhead
    # squat), with the feet planted; near the camera and twice as far. Every rep counts and nothing is rejected.
    poses = stand(fps, scale=scale)
    for depth, down, up, kw in [(0.45, 1.0, 1.0, {}), (0.25, 0.7, 0.6, {"stance": 80}),
                                (0.6, 1.5, 1.2, {"stance": 220}), (0.35, 0.5, 0.5, {"arms": 1.0})]:
        # (Each stance held a second first: a lifter does not teleport.)
        poses += stand(fps, 1.0, scale=scale, **kw) + squat(fps, depth, down, up, scale=scale, **kw)
        poses += stand(fps, 0.6, scale=scale, **kw)
    reps, rejected = track(poses + stand(fps, scale=scale), fps)
    assert len(reps) == 4 and rejected == []


@pytest.mark.parametrize("fps", RATES)
def test_a_hop_right_after_a_squat_unmakes_it_but_not_the_squats_around_it(fps):
    # A squat, then within a fraction of a second a jump out of the next dip: the squat before stands, the jump
    # does not count.
    poses = stand(fps) + squat(fps) + stand(fps, 0.6) + jump(fps) + stand(fps, 0.6) + squat(fps) + stand(fps)
    reps, rejected = track(poses, fps)
    assert len(reps) == 2
    assert all(r.why == "jump" and "feet left the floor" in r.reason for r in rejected)


@pytest.mark.parametrize("fps", RATES)
def test_a_single_leg_squat_moves_its_free_foot_and_still_counts(fps):
    # Single-leg: the free (left) foot is lifted behind and swings; the two-leg rules for the feet do not apply.
    def at(t, depth=0.35):
        drop = smooth(0, depth, t / 1.0) if t < 1.0 else smooth(depth, 0, (t - 1.0) / 1.0)
        return {"drop": drop, "left_foot": (40 * math.sin(math.pi * t / 2), 0.35 + 0.1 * math.sin(math.pi * t), 1.0)}
    one_leg = frames_of(fps, 2.0, at)
    still = stand(fps, 1.0, left_foot=(0.0, 0.35, 1.0))
    poses = still + one_leg + still + one_leg + still
    reps, _ = track(poses, fps, single_leg=True)
    assert len(reps) == 2


def test_the_analysis_tells_the_tracker_whether_a_foot_may_move():
    analyzer = LiftAnalyzer(lifter=LifterSettings(exercise="single-leg"))
    assert analyzer.tracker.single_leg
    analyzer.change(LifterSettings(exercise="squat"))
    assert not analyzer.tracker.single_leg


def analyze(poses, fps, lifter=LifterSettings(), px=1.5, settings=AnalysisSettings(), frame_height=1000.0):
    """Every event the analysis hands back, each with the time of the frame that caused it (``px`` of jitter added
    to every joint first)."""
    analyzer = LiftAnalyzer(rack="rack01", lifter=lifter, settings=settings)
    out = []
    for i, pose in enumerate(noisy(poses, px) if px else poses):
        out += [(i / fps, event) for event in analyzer.update(i / fps, pose, frame_height)]
    return out + [(len(poses) / fps, event) for event in analyzer.finish()]


@pytest.mark.parametrize("fps", RATES)
def test_jumping_jacks_alone_open_no_set_but_each_says_it_was_not_counted(fps):
    # A lifter doing only jumping jacks: no rep, no set, and still an event for each, made when a rep would have
    # been handed on (plant_after_s after its end), with its why and its sentence, valid on the wire.
    from rackwatch import contract
    from rackwatch.events import NotCountedEvent

    make, words = MOVEMENTS["jumping jacks"]
    timed = analyze(make(fps), fps)
    assert [e.type for _, e in timed] == ["not_counted"] * len(timed) and len(timed) >= 2
    plant_after = RepSettings().plant_after_s
    for at, event in timed:
        assert isinstance(event, NotCountedEvent) and event.set_id is None and event.rack == "rack01"
        assert event.why in words and words[event.why] in event.reason
        assert event.t_start < event.t_end and event.t_end + plant_after <= at < event.t_end + plant_after + 1.5 / fps
        contract.validate(event)


@pytest.mark.parametrize("fps", RATES)
def test_a_lunge_in_a_set_is_sent_between_its_reps_and_counted_in_the_set_summary(fps):
    poses = stand(fps) + squat(fps) + stand(fps) + lunge(fps, "right") + stand(fps) + squat(fps) + stand(fps)
    events = [e for _, e in analyze(poses, fps)]
    assert [e.type for e in events] == ["rep", "not_counted", "rep", "set"]
    rep, lunged, _, summary = events
    assert lunged.why == "step" and lunged.set_id == rep.set_id == summary.set_id
    assert summary.reps == 2 and summary.not_counted == {"step": 1}
    assert "Not counted: 1 movement that looked like a rep: a lunge or a step, not a squat (1)." in summary.remarks


def test_a_lunge_before_the_first_rep_belongs_to_no_set():
    fps = 30
    events = [e for _, e in analyze(stand(fps) + lunge(fps) + stand(fps) + squat(fps) + stand(fps), fps)]
    assert [e.type for e in events] == ["not_counted", "rep", "set"]
    assert events[0].set_id is None and events[2].not_counted == {}


def test_the_analyze_table_says_what_was_not_counted_and_why():
    from rackwatch.cli import format_report
    from rackwatch.recording import RecordingResult

    fps = 30
    poses = MOVEMENTS["jump"][0](fps) + squat(fps) + stand(fps)
    events = [e for _, e in analyze(poses, fps)]
    result = RecordingResult(events=events, frames=len(poses), fps=fps, recorded_fps=fps)
    assert len(result.reps) == 1 and result.not_counted
    report = format_report("clip.mp4", result)
    for e in result.not_counted:
        assert f"not counted, {e.t_start:.1f}-{e.t_end:.1f} s: {e.reason}" in report and e.why == "jump"


@pytest.mark.parametrize("fps", RATES)
def test_a_lunge_handed_on_by_a_change_of_load_belongs_to_the_set_that_change_ends(fps):
    # A rep, then a lunge, and the lifter enters a new load the moment they are back up from it: the lunge is still
    # waiting out plant_after_s in the tracker, and the change hands it on (release_held) into the set it ends.
    poses = noisy(stand(fps) + squat(fps) + stand(fps) + lunge(fps, "right") + stand(fps))
    lunge_from = len(stand(fps) + squat(fps) + stand(fps))
    analyzer = LiftAnalyzer(rack="rack01")
    before, bent = [], False
    for i, pose in enumerate(poses):
        before += analyzer.update(i / fps, pose, 1000.0)
        bent = bent or (i >= lunge_from and analyzer.phase != "standing")
        if bent and analyzer.phase == "standing":
            break   # the lunge has just ended: it is held, not yet handed on
    else:
        raise AssertionError("the lunge never looked like a rep to the tracker")
    assert [e.type for e in before] == ["rep"], "the lunge must still be held when the load changes"
    rep = before[0]
    changed = analyzer.change(LifterSettings(load=60))
    assert [e.type for e in changed] == ["not_counted", "set"]   # before the summary it is counted in
    lunged, summary = changed
    assert lunged.why == "step" and lunged.set_id == rep.set_id == summary.set_id is not None
    assert summary.reps == 1 and summary.not_counted == {"step": 1}


@pytest.mark.parametrize("fps", RATES)
def test_a_lunge_ending_after_the_set_rest_belongs_to_no_set(fps):
    # set_rest_s of 2 s: the lunge starts a second after the rep, within it, but ends (and is handed on) after it,
    # when the set has ended. It belongs to no set, is counted in none, and the next rep opens a new one.
    settings = AnalysisSettings(set_rest_s=2)
    poses = stand(fps) + squat(fps) + stand(fps) + lunge(fps, "right") + stand(fps) + squat(fps) + stand(fps)
    events = [e for _, e in analyze(poses, fps, settings=settings)]
    assert [e.type for e in events] == ["rep", "set", "not_counted", "rep", "set"]
    rep, ended, lunged, _, summary = events
    assert lunged.why == "step" and lunged.t_end - rep.t_end > settings.set_rest_s
    assert lunged.set_id is None and ended.not_counted == summary.not_counted == {}
    assert summary.set_id not in (None, ended.set_id)
