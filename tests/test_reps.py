"""The rep tracker on synthetic lifters: every case a gym throws at it, with a known right answer."""

import math

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rackwatch import geometry
from rackwatch.pose import KP, Pose
from rackwatch.reps import RepSettings, RepTracker, _StillWindow

from conftest import standing_pose

FPS = 30


def stand(seconds, fps=FPS, **kw):
    return [standing_pose(**kw)] * int(seconds * fps)


def squat(depth=0.5, down=1.0, up=1.0, fps=FPS, **kw):
    descent = [standing_pose(depth=d, **kw) for d in np.linspace(0, depth, int(down * fps))]
    ascent = [standing_pose(depth=d, **kw) for d in np.linspace(depth, 0, int(up * fps))]
    return descent + ascent


def run(poses, fps=FPS, settings=RepSettings()):
    tracker = RepTracker(settings)
    reps = []
    for i, pose in enumerate(poses):
        reps += tracker.update(i / fps, geometry.measure(pose))
    return reps + tracker.finish()


def noisy(poses, px=1.5, seed=0):
    """The model's jitter: every joint moved by a few pixels, independently in every frame."""
    rng = np.random.default_rng(seed)
    return [Pose(xy=p.xy + rng.normal(0, px, p.xy.shape).astype(np.float32), score=p.score) for p in poses]


def hidden(pose: Pose) -> Pose:
    return Pose(xy=pose.xy, score=np.zeros(17, np.float32))


def test_counts_each_full_rep():
    reps = run(stand(1) + squat() + stand(1) + squat() + stand(1) + squat() + stand(1))
    assert len(reps) == 3
    # The bottom is where the synthetic lifter is deepest: 1 s into each rep.
    assert abs(reps[0].t_bottom - 2.0) < 0.1
    assert all(abs(r.depth - 0.5) < 0.02 for r in reps)


def test_a_brief_blip_as_deep_as_the_bottom_does_not_move_the_bottom():
    # Down for 1 s, a pause at the bottom from 2.0 to 2.5 s, then on the way up three frames where the model
    # briefly puts the lifter a little deeper still (as when a foot is put down): the bottom is the pause,
    # where the lifter stayed.
    pause = [standing_pose(depth=0.5)] * int(0.5 * FPS)
    ascent = [standing_pose(depth=d) for d in np.linspace(0.5, 0, FPS)]
    ascent[12:15] = [standing_pose(depth=0.51)] * 3
    reps = run(stand(1) + squat(up=0) + pause + ascent + stand(1))
    assert len(reps) == 1
    assert abs(reps[0].t_bottom - 2.2) < 0.1


def test_a_short_clip_from_a_phone_that_zooms_in_during_the_rep_still_counts_it():
    # Too short to hold still anywhere: the lifter settles (400 -> 420 px), squats, and the phone has zoomed in
    # by the time they stand again (460 px). The rep is judged from the standing posture before it.
    clip = (stand(0.15, hip_height=400) + stand(0.3, hip_height=420) + squat(hip_height=420)
            + stand(0.35, hip_height=460))
    reps = run(clip)
    assert len(reps) == 1
    assert abs(reps[0].depth - 0.5) < 0.05


def on_one_leg(pose: Pose, lift: float = 160.0, standing_foot_seen: bool = True) -> Pose:
    """The lifter stands on the right leg, the left foot held up behind (``lift`` px, about 0.8 shank)."""
    xy, score = pose.xy.copy(), pose.score.copy()
    xy[KP["left_ankle"], 1] -= lift
    xy[KP["left_knee"], 1] -= lift / 2
    if not standing_foot_seen:
        score[KP["right_ankle"]] = 0.1
    return Pose(xy, score)


def test_a_single_leg_squat_whose_standing_foot_is_lost_for_a_moment_keeps_its_bottom():
    # A slow single-leg squat; early in the descent the model loses the standing foot for three frames, and
    # only the lifted foot is left to measure the hip height down to: that is not the lifter dropping deep.
    descent = [on_one_leg(standing_pose(depth=d)) for d in np.linspace(0, 0.4, 2 * FPS)]
    for i in (10, 11, 12):
        descent[i] = on_one_leg(standing_pose(depth=i / (2 * FPS - 1) * 0.4), standing_foot_seen=False)
    ascent = [on_one_leg(standing_pose(depth=d)) for d in np.linspace(0.4, 0, FPS)]
    reps = run([on_one_leg(p) for p in stand(1)] + descent + ascent + [on_one_leg(p) for p in stand(1)])
    assert len(reps) == 1
    assert abs(reps[0].depth - 0.4) < 0.02
    assert abs(reps[0].t_bottom - 3.0) < 0.1


def test_reps_right_after_the_recording_starts_are_found_once_calibrated():
    # No standing still before the first rep: it is replayed once the lifter stands still afterwards.
    reps = run(squat() + stand(1) + squat() + stand(1))
    assert len(reps) == 2


def test_short_dropout_mid_rep_is_survived():
    poses = stand(1) + squat() + stand(1)
    for i in range(45, 55):  # a third of a second with no joints, at the bottom
        poses[i] = hidden(poses[i])
    assert len(run(poses)) == 1


def test_long_dropout_drops_the_rep():
    poses = stand(1) + squat(down=1.5, up=1.5) + stand(1)
    for i in range(40, 90):  # 1.7 s unseen
        poses[i] = hidden(poses[i])
    assert run(poses) == []


def test_partial_rep_is_not_counted():
    assert run(stand(1) + squat(depth=0.12) + stand(1)) == []


def test_rep_cut_off_by_the_end_of_the_recording_is_not_counted():
    poses = stand(1) + squat() + stand(1) + squat()[:40]
    assert len(run(poses)) == 1


def test_recording_opening_deep_in_a_squat_does_not_count_that_rep():
    ascent_only = squat()[30:]
    assert len(run(ascent_only + stand(1) + squat() + stand(1))) == 1


def test_someone_walking_through_is_not_a_rep():
    walk = [standing_pose(x=100 + 15 * i) for i in range(60)]
    assert run(stand(1) + walk + stand(1)) == []


def test_model_jumping_to_another_person_mid_rep_drops_the_rep():
    poses = stand(1) + squat() + stand(1)
    poses[45:] = [standing_pose(x=900, depth=0.3)] * 10 + poses[55:]
    assert run(poses) == []


def test_bending_over_to_load_plates_is_not_a_rep():
    # Hips drop, but the shoulders come down to hip level: a hinge, not a squat.
    bend = [standing_pose(depth=d, shoulder_drop=230 * d / 0.4) for d in np.linspace(0, 0.4, 30)]
    assert run(stand(1) + bend + bend[::-1] + stand(1)) == []


def test_phases_run_descent_bottom_ascent():
    (rep,) = run(stand(1) + squat() + stand(1))
    phases = rep.phase_of
    assert phases[0] == "descent" and phases[-1] == "ascent"
    assert "bottom" in phases
    first_bottom, last_bottom = phases.index("bottom"), len(phases) - 1 - phases[::-1].index("bottom")
    assert set(phases[:first_bottom]) == {"descent"} and set(phases[last_bottom + 1:]) == {"ascent"}


def test_cave_is_measured_from_the_lifters_own_standing_posture():
    # A lifter who stands knock-kneed (knees 10 px in) and keeps exactly that posture shows no cave.
    (rep,) = run(stand(1, knee_in=10) + squat(knee_in=10) + stand(1, knee_in=10))
    caves = [s.legs["left"].knee_inside_ankle for s in rep.samples]
    assert max(abs(c) for c in caves) < 1e-3


def test_recording_opening_slightly_bent_and_going_down_counts_that_rep():
    # The descent is seen from depth 0.08 on: the rep began with the recording.
    opening = [standing_pose(depth=d) for d in np.linspace(0.08, 0.5, 25)] + squat()[30:]
    assert len(run(opening + stand(1) + squat() + stand(1))) == 2


def test_recording_opening_past_the_start_of_a_rep_does_not_count_it_even_going_down():
    # The recording opens at depth 0.14, beyond the 0.10 at which a rep starts, and the lifter sinks a little
    # further before standing: that rep began before the recording, so its start was never seen.
    opening = [standing_pose(depth=d) for d in np.linspace(0.14, 0.23, 5)] + squat(depth=0.23)[30:]
    assert len(run(opening + stand(1) + squat() + stand(1))) == 1


@pytest.mark.parametrize("fps", [30, 10, 8])
def test_a_lifter_found_part_way_down_is_not_counted_for_that_rep(fps):
    # The camera finds the lifter only at depth 0.25 (a lifter small in the frame is found late), still going
    # down: never still before, the tracker takes that posture for standing. Back up, the lifter stands a third
    # taller than it: the rep had begun before it was seen. The next rep, seen from standing, counts.
    found = [standing_pose(depth=d) for d in np.linspace(0.25, 0.55, fps)]
    tracker = RepTracker()
    poses = found + squat(depth=0.55, up=1.5, fps=fps)[fps:] + stand(1, fps) + squat(fps=fps) + stand(1, fps)
    reps = []
    for i, pose in enumerate(poses):
        reps += tracker.update(i / fps, geometry.measure(pose))
    reps += tracker.finish()
    assert len(reps) == 1 and reps[0].t_start > 2.5
    (rejected,) = tracker.rejected
    assert rejected.t_end < 2.5 and rejected.why == "start_unseen" and "start was not seen" in rejected.reason


@pytest.mark.parametrize("fps", [30, 10, 8])
def test_a_lifter_found_standing_who_then_stands_a_little_taller_still_counts(fps):
    # Found while standing a little short of their full height (soft knees, 8 %), never still, then a rep and
    # standing tall: within a rep's start_depth and the hip height's wander, the start was seen.
    found = [standing_pose(depth=0.08)] * int(0.3 * fps)
    reps = run(found + squat(fps=fps, depth=0.5) + stand(1, fps), fps=fps)
    assert len(reps) == 1


@pytest.mark.parametrize("fps", [30, 10, 8])
def test_the_first_sighting_alone_is_no_posture(fps):
    # The model's first look at a lifter just found (in the whole picture, a few dozen pixels of it) puts the
    # hips a quarter higher than they are; from the next frame on it follows the lifter, who stands, squats
    # once and stands. The running median must span steady_s before a hip height counts: that one frame is
    # neither the standing posture nor the start of a rep.
    first = standing_pose(hip_height=500)
    reps = run([first] + stand(1, fps) + squat(fps=fps) + stand(1, fps), fps=fps)
    assert len(reps) == 1


def test_recording_opening_slightly_bent_on_the_way_up_does_not_count_that_rep():
    # Only the end of an ascent is seen: its descent and bottom happened before the recording.
    closing = [standing_pose(depth=d) for d in np.linspace(0.15, 0.0, 20)]
    assert len(run(closing + stand(1) + squat() + stand(1))) == 1


def test_live_phase_goes_standing_descent_bottom_ascent_standing():
    down, up = squat()[:30], squat()[30:]
    poses = stand(1) + down + [standing_pose(depth=0.5)] * 15 + up + stand(1)   # a half-second pause at the bottom
    tracker = RepTracker()
    phases = []
    for i, pose in enumerate(poses):
        tracker.update(i / FPS, geometry.measure(pose))
        if not phases or phases[-1] != tracker.phase:
            phases.append(tracker.phase)
    assert phases == ["standing", "descent", "bottom", "ascent", "standing"]


# -- the rack's frame rate: the same reps at 8-10 fps as at 30 ------------------------------------------------------


@pytest.mark.parametrize("fps", [30, 25, 10, 9, 8])
def test_counts_and_bottoms_hold_at_the_racks_frame_rate(fps):
    # Five reps of varied pace and depth, the last one quick (0.4 s down, 0.4 s up), with the model's jitter.
    poses, bottoms = stand(1, fps), []
    for depth, down, up in [(0.5, 1.0, 1.0), (0.3, 0.8, 0.6), (0.6, 1.5, 1.2), (0.25, 0.5, 0.5), (0.45, 0.4, 0.4)]:
        bottoms.append((len(poses) + int(down * fps) - 1) / fps)   # the descent's last frame is the deepest
        poses += squat(depth, down, up, fps) + stand(0.3, fps)
    reps = run(noisy(poses + stand(1, fps)), fps)
    assert len(reps) == 5
    # Within a frame of the lifter's deepest moment, plus half the median's span (its lag), at any rate.
    assert [r.t_bottom for r in reps] == pytest.approx(bottoms, abs=1 / fps + RepSettings().steady_s / 2 + 0.02)


@pytest.mark.parametrize("fps", [30, 10, 8])
def test_a_rep_ends_at_the_first_frame_back_up_whatever_the_frame_rate(fps):
    # The median that steadies the hip height spans a time, not a number of frames: at 10 fps five frames
    # would be half a second, and the rep would end 0.2 s after the lifter stood up. It lags by half its span.
    poses = stand(1, fps) + squat(fps=fps) + stand(1, fps)
    (rep,) = run(poses, fps)
    end_depth = RepSettings().end_depth
    first_up = next(i for i in range(int(2 * fps), len(poses)) if 1 - _height(poses[i]) / 400 < end_depth) / fps
    assert first_up <= rep.t_end <= first_up + RepSettings().steady_s / 2 + 1 / fps + 1e-9


def _height(pose):
    return pose.xy[KP["left_ankle"], 1] - (pose.xy[KP["left_hip"], 1] + pose.xy[KP["right_hip"], 1]) / 2


def test_a_one_frame_glitch_of_the_model_does_not_start_or_split_a_rep_at_30_fps():
    # Standing, the model puts the hips a third of the way down for one frame; and at the bottom of a rep it
    # puts them back at standing height for one frame: neither is a movement of the lifter.
    poses = stand(1) + squat() + stand(1)
    poses[15] = standing_pose(depth=0.35)
    poses[60] = standing_pose(depth=0.0)
    reps = run(poses)
    assert len(reps) == 1 and reps[0].t_start > 1.0


@pytest.mark.parametrize("fps", [30, 10, 8])
def test_a_recording_that_stops_a_frame_short_of_standing_counts_its_last_rep(fps):
    # The recording stops one frame before the frame that would have ended its last rep (at 8 fps an eighth of a
    # second), the lifter still rising a hair short of standing: the rack would close it at its next frame.
    whole = stand(1, fps) + squat(fps=fps) + stand(1, fps) + squat(fps=fps) + stand(1, fps)
    ends = [r.t_end for r in run(whole, fps)]
    assert len(ends) == 2
    cut = round(ends[1] * fps) - 1
    assert len(run(whole[:cut + 1], fps)) == 2


@pytest.mark.parametrize("fps", [30, 10, 8])
@pytest.mark.parametrize("stop_depth, rising", [(0.2, True), (0.3, True), (0.5, False), (0.12, False)])
def test_a_recording_that_stops_mid_rep_does_not_count_it(fps, stop_depth, rising):
    # Cut off on the way up but still well down, at the bottom, or hovering just past the depth a rep starts at
    # (nearer standing and held still, that is rest: see test_a_rep_ends_when_the_lifter_rests_...): the rep's
    # end was not seen.
    last = squat(fps=fps)
    if rising:
        cut = next(i for i in range(len(last) // 2, len(last)) if 1 - _height(last[i]) / 400 < stop_depth)
        tail = last[:cut + 1]
    else:
        tail = last[:len(last) // 2] + [standing_pose(depth=max(stop_depth, 0.5))] * int(0.5 * fps)
        if stop_depth < 0.5:   # back up to just under standing, then hovering there
            tail += [standing_pose(depth=d) for d in np.linspace(0.5, stop_depth, fps)]
            tail += [standing_pose(depth=stop_depth)] * int(0.5 * fps)
    assert len(run(stand(1, fps) + squat(fps=fps) + stand(1, fps) + tail, fps)) == 1


# -- live reps without waiting: a lifter who never stands still ------------------------------------------------------


def swaying(poses, fps, share=0.04, period_s=0.5):
    """The lifter never holds still: the hips bob by ``share`` of their height (beyond ``still_tolerance``)."""
    out = []
    for i, pose in enumerate(poses):
        xy = pose.xy.copy()
        bob = share * 400 * math.sin(2 * math.pi * i / fps / period_s)
        for name in ("left_hip", "right_hip", "left_shoulder", "right_shoulder"):
            xy[KP[name], 1] += bob
        out.append(Pose(xy=xy, score=pose.score))
    return out


@pytest.mark.parametrize("fps", [30, 10])
def test_a_lifter_who_never_holds_still_gets_each_rep_within_a_second_of_its_end(fps):
    # Walks up swaying, and squats five times with a third of a second between reps: never still for still_s.
    poses = swaying(stand(0.8, fps), fps)
    for _ in range(5):
        poses += swaying(squat(fps=fps) + stand(0.3, fps), fps)
    poses += swaying(stand(2, fps), fps)
    tracker = RepTracker()
    came = []   # (when update() handed it on, the rep)
    for i, pose in enumerate(noisy(poses)):
        came += [(i / fps, rep) for rep in tracker.update(i / fps, geometry.measure(pose))]
    assert tracker.finish() == []
    assert len(came) == 5
    for t, rep in came:
        assert t - rep.t_end <= 1.0
    # The first rep was judged from the opening frames: nothing waited for a still moment.
    assert came[0][1].calibration.t < came[0][1].t_start
    assert all(abs(rep.depth - 0.5) < 0.08 for _, rep in came)


def test_a_later_still_standing_replaces_the_provisional_calibration_for_the_reps_after_it():
    fps = 30
    # Two reps swaying (provisional calibration), then the lifter stands still for a second, now 20 px taller in
    # the picture (the phone was moved closer), and does two more.
    first = swaying(stand(0.8, fps), fps) + swaying(squat() + stand(0.3, fps) + squat() + stand(0.3, fps), fps)
    later = stand(1.0, hip_height=420) + squat(hip_height=420) + stand(0.5, hip_height=420)
    later += squat(hip_height=420) + stand(1, hip_height=420)
    tracker = RepTracker()
    came = []
    for i, pose in enumerate(noisy(first + later)):
        came += [(i / fps, rep) for rep in tracker.update(i / fps, geometry.measure(pose))]
    came += [(math.inf, rep) for rep in tracker.finish()]
    assert len(came) == 4
    provisional, still = came[1][1].calibration, came[2][1].calibration
    assert came[0][1].calibration is provisional and provisional.t < 0.8 + 0.5
    # (The half second between the last two reps is still enough to calibrate again: no matter.)
    assert came[3][1].calibration.t >= still.t > len(first) / fps
    assert abs(still.hip_height - 420) < 5 and abs(came[3][1].calibration.hip_height - 420) < 5
    # It corrects, it does not delay: every rep handed on within a second of its end, none twice.
    assert all(t - rep.t_end <= 1.0 for t, rep in came)
    assert all(abs(rep.depth - 0.5) < 0.08 for _, rep in came)


def test_a_config_from_before_still_loads_and_says_which_settings_are_retired(tmp_path, caplog):
    # A rack installed earlier has steady_frames and max_feet_drift in /etc/rackwatch/rackwatch.toml: after an
    # update it must still start, and say what replaced them; a typo is still refused.
    from rackwatch.config import ConfigError, load_config

    old = tmp_path / "rackwatch.toml"
    old.write_text("[analysis.reps]\nsteady_frames = 5\nmax_feet_drift = 0.35\nstart_depth = 0.1\n")
    with caplog.at_level("WARNING", logger="rackwatch.reps"):
        config = load_config(old)
    assert config.analysis.reps == RepSettings()
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "steady_frames" in warned and "steady_s" in warned and "max_feet_drift" in warned
    old.write_text("[analysis.reps]\nsteady_frame = 5\n")
    with pytest.raises(ConfigError, match="steady_frame"):
        load_config(old)


def test_a_rep_ends_when_the_lifter_rests_a_little_shorter_than_at_calibration():
    # After the first rep the lifter stays 7 % down (soft knees: past end_depth, short of start_depth) and holds
    # still for a second before the next rep. The first rep ends when they come to rest, not with the next rep.
    rest = [standing_pose(depth=0.07)] * FPS
    up = [standing_pose(depth=d) for d in np.linspace(0.5, 0.07, FPS)]
    down = [standing_pose(depth=d) for d in np.linspace(0, 0.5, FPS)]
    poses = stand(1) + down + up + rest + squat(depth=0.5, **{}) + stand(1)
    reps = run(poses)
    assert len(reps) == 2
    first_end = (len(stand(1)) + len(down) + len(up)) / FPS
    assert reps[0].t_end == pytest.approx(first_end, abs=0.2)
    assert reps[1].t_start > first_end + 0.5


def test_a_lifter_paused_part_way_down_is_still_in_the_rep():
    # Holding still at 7 % down on the way *down* is not rest after a rep: the rep has not reached its depth yet.
    pause = [standing_pose(depth=0.12)] * FPS
    poses = (stand(1) + [standing_pose(depth=d) for d in np.linspace(0, 0.12, 10)] + pause
             + [standing_pose(depth=d) for d in np.linspace(0.12, 0.5, 20)]
             + [standing_pose(depth=d) for d in np.linspace(0.5, 0, FPS)] + stand(1))
    (rep,) = run(poses)
    assert rep.depth == pytest.approx(0.5, abs=0.05)


# -- the still window keeps its greatest and least hip height as a scan of it would ---------------------------------

@given(st.lists(st.tuples(st.booleans(), st.sampled_from([1.0, 1.5, 2.0]) | st.floats(0.5, 5.0)), max_size=60))
def test_the_still_windows_running_extremes_are_those_of_its_heights(steps):
    """Any run of frames in and oldest frames out, equal heights included: the running max and min are always
    what max() and min() over the heights in the window give."""
    window, frame, kept = _StillWindow(), geometry.measure(standing_pose()), []
    for t, (add, height) in enumerate(steps):
        if add or not kept:
            window.append(float(t), frame, height)
            kept.append((float(t), height))
        else:
            window.popleft()
            kept.pop(0)
        assert len(window) == len(kept) and window.heights() == [h for _, h in kept]
        if kept:
            assert (window.first_t, window.highest, window.lowest) == (kept[0][0], max(window.heights()),
                                                                       min(window.heights()))
