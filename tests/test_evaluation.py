"""Scoring against labels: what counts as a hit, a miss, and how a leg left unjudged is counted and listed."""

from rackwatch.evaluation import score_clip, totals
from rackwatch.events import RepEvent

LEG = {"severity": "none", "measured": "none", "cave": -0.02, "peak_phase": "bottom", "t_peak": 1.0}
CAVED = {**LEG, "severity": "moderate", "measured": "moderate", "cave": 0.09}


def rep(n, t_bottom, left, right, unjudged=None, working="both", verdict="clean"):
    return RepEvent.model_validate(dict(
        rack=None, set_id="s", rep=n, exercise="squat" if working == "both" else "single-leg", working_leg=working,
        t_start=t_bottom - 1, t_bottom=t_bottom, t_end=t_bottom + 1, load=None,
        valgus={"left": left, "right": right, "unjudged": unjudged or {}}, severity=None, verdict=verdict,
        depth=0.4, descent_s=1, ascent_s=1, ascent_speed=0.4, stance_ratio=None, hip_shift=None))


def label(*reps, exercise="squat"):
    return {"clip": "c.mp4", "view": "front", "exercise": exercise, "fps": 10.0,
            "reps": [{"start": b - 5, "bottom": b, "end": b + 5, "valgus_left": l, "valgus_right": r}
                     for b, l, r in reps]}


def test_caves_and_clean_legs_are_tallied_per_leg():
    score = score_clip(label((10, "clear", "none"), (40, "none", "uncertain")),
                       [rep(1, 1.0, CAVED, LEG, verdict="cave"), rep(2, 4.1, CAVED, CAVED, verdict="cave")])
    assert score.reps_matched == 2 and score.count_exact
    left, right = score.cave["left"], score.cave["right"]
    assert (left.tp, left.fp, left.fn, left.tn) == (1, 1, 0, 0)
    assert (right.tp, right.fp, right.fn, right.tn) == (0, 0, 0, 1)   # "uncertain" is not scored


def test_a_rep_too_far_from_its_label_is_not_matched():
    score = score_clip(label((10, "none", "none")), [rep(1, 1.7, LEG, LEG)])
    assert score.reps_matched == 0 and score.count_exact   # counted, but its bottom is 0.7 s off


def test_an_unjudged_leg_counts_as_a_negative_and_is_listed_with_its_reason():
    score = score_clip(label((10, "clear", "none")),
                       [rep(1, 1.0, None, LEG, unjudged={"left": "leg_hidden"}, verdict="unjudged")])
    left = score.cave["left"]
    assert (left.fn, left.unjudged) == (1, 1)
    assert score.unjudged == [{"rep": 1, "t_bottom": 1.0, "leg": "left", "reason": "leg_hidden", "label": "clear"}]
    assert totals([score])["cave"]["both"]["unjudged"] == 1


def test_a_working_leg_taken_for_the_free_one_is_listed_too():
    score = score_clip(label((10, "none", "n/a"), exercise="single-leg"),
                       [rep(1, 1.0, None, LEG, working="right")])
    assert score.cave["left"].unjudged == 1
    assert [u["reason"] for u in score.unjudged] == ["free_leg (the right leg was taken for the working one)"]
