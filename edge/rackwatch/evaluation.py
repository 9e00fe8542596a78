"""Scoring rackwatch against labelled footage (the format of ``labels.json``, see the footage folder's README).

Rep counts: a clip is right when the number of reps found equals the number of complete reps labelled.
Knee cave, per leg: a labelled ``clear`` is a positive and ``none`` a negative (``slight``, ``uncertain`` and
``n/a`` are not scored); a predicted ``moderate`` or ``severe`` is a positive, ``none`` or ``minor`` a negative.
A leg rackwatch declined to judge (camera off-axis, leg not seen) is counted as a negative prediction and also
reported as *unjudged*, so that declining never hides a miss. A labelled rep is matched to the found rep whose
bottom lies nearest, within ``match_window_s``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .events import LEGS, RepEvent

POSITIVE_PREDICTIONS = ("moderate", "severe")


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    unjudged: int = 0

    def add(self, other: "Tally") -> None:
        for name in ("tp", "fp", "fn", "tn", "unjudged"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None or p + r == 0:
            return None if p is None and r is None else 0.0
        return 2 * p * r / (p + r)

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "unjudged": self.unjudged,
                "precision": self.precision, "recall": self.recall, "f1": self.f1}


@dataclass
class ClipScore:
    clip: str
    view: str
    exercise: str
    reps_labelled: int
    reps_found: int
    reps_matched: int
    cave: dict[str, Tally] = field(default_factory=lambda: {leg: Tally() for leg in LEGS})
    unjudged: list[dict] = field(default_factory=list)
    """Every leg of a found rep that rackwatch declined to judge: rep, t_bottom, leg, reason, and the label."""
    error: str | None = None

    @property
    def count_exact(self) -> bool:
        return self.error is None and self.reps_found == self.reps_labelled

    def as_dict(self) -> dict:
        return {"clip": self.clip, "view": self.view, "exercise": self.exercise,
                "reps_labelled": self.reps_labelled, "reps_found": self.reps_found,
                "reps_matched": self.reps_matched, "count_exact": self.count_exact, "error": self.error,
                "cave": {leg: t.as_dict() for leg, t in self.cave.items()}, "unjudged": self.unjudged}


def score_clip(label: dict, rep_events: list[RepEvent], match_window_s: float = 0.6) -> ClipScore:
    fps = label["fps"]
    score = ClipScore(clip=label["clip"], view=label["view"], exercise=label["exercise"],
                      reps_labelled=len(label["reps"]), reps_found=len(rep_events), reps_matched=0)
    unused = list(rep_events)
    truth_of: dict[int, dict] = {}
    for labelled in label["reps"]:
        t = labelled["bottom"] / fps
        near = [e for e in unused if abs(e.t_bottom - t) <= match_window_s]
        if not near:
            continue
        found = min(near, key=lambda e: abs(e.t_bottom - t))
        unused.remove(found)
        truth_of[id(found)] = labelled
        score.reps_matched += 1
        for leg in LEGS:
            truth = labelled.get(f"valgus_{leg}")
            if truth not in ("clear", "none"):
                continue
            judged = found.valgus.leg(leg)
            severity = judged.severity if judged else None
            tally = score.cave[leg]
            if severity is None:
                tally.unjudged += 1
                if leg not in found.valgus.unjudged:   # a single-leg squat's working leg taken for the free one
                    score.unjudged.append({"rep": found.rep, "t_bottom": found.t_bottom, "leg": leg,
                                           "reason": f"free_leg (the {found.working_leg} leg was taken for the "
                                                     "working one)", "label": truth})
            predicted = severity in POSITIVE_PREDICTIONS
            if truth == "clear":
                if predicted:
                    tally.tp += 1
                else:
                    tally.fn += 1
            elif predicted:
                tally.fp += 1
            else:
                tally.tn += 1
    for event in rep_events:
        for leg, why in event.valgus.unjudged.items():
            labelled = truth_of.get(id(event), {})
            score.unjudged.append({"rep": event.rep, "t_bottom": event.t_bottom, "leg": leg, "reason": why,
                                   "label": labelled.get(f"valgus_{leg}")})
    return score


def totals(scores: list[ClipScore]) -> dict:
    cave = {leg: Tally() for leg in LEGS}
    both = Tally()
    for s in scores:
        for leg in LEGS:
            cave[leg].add(s.cave[leg])
            both.add(s.cave[leg])
    labelled = sum(s.reps_labelled for s in scores)
    found = sum(s.reps_found for s in scores)
    matched = sum(s.reps_matched for s in scores)
    return {"clips": len(scores), "clips_count_exact": sum(s.count_exact for s in scores),
            "reps_labelled": labelled, "reps_found": found, "reps_matched": matched,
            "rep_precision": matched / found if found else None, "rep_recall": matched / labelled if labelled else None,
            "cave": {**{leg: t.as_dict() for leg, t in cave.items()}, "both": both.as_dict()}}
