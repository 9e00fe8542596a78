"""Drawing the skeleton and the knee lines on a recording, so a coach can check a verdict by eye.

Only ``rackwatch analyze --overlay`` and ``--rep-frames`` use this; on the rack no frame is ever drawn on or sent
anywhere.

What a coach sees:

* each leg (hip - knee - ankle, its joints and the ankle's plumb line) in its side's colour: the **lifter's**
  left in blue, the lifter's right in magenta. The lifter's left is on the picture's right in a front view, which
  is why the colours say it, not the position;
* a header in the top-left corner, on a dark box with a border: the legend (which colour is which leg), and for
  two seconds after each rep its verdict in the verdict's colour, then each knee's grade in its leg's colour, or
  why the rep was not judged (shortened to its first clause; the full reason is in the table and the JSON); for
  two seconds after a movement the rack did not count (a jump, a lunge, ...), that it was not counted and why.

Text is scaled to the frame's width and wrapped, and the box is laid out to fit inside the frame, so a portrait
phone video (1080 x 1920) reads as well as a landscape one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .events import Event, NotCountedEvent, RepEvent, not_counted_words
from .pose import KP, Pose

BGR = tuple[int, int, int]

_BONES = [("left_shoulder", "right_shoulder"), ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
          ("left_hip", "right_hip"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
          ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")]
_LEGS = {"left": ("left_hip", "left_knee", "left_ankle"), "right": ("right_hip", "right_knee", "right_ankle")}

#: The lifter's left and right legs (OpenCV colours are blue, green, red). Blue and magenta: far from each other
#: and from the verdict colours, and told apart by red-green colour-blind coaches.
SIDE_COLOURS: dict[str, BGR] = {"left": (255, 140, 0), "right": (200, 0, 255)}
VERDICT_COLOURS: dict[str, BGR] = {"clean": (80, 200, 80), "note": (0, 190, 255), "cave": (60, 60, 230),
                                   "unjudged": (200, 200, 200)}
_VERDICT_WORDS = {"clean": "clean", "note": "noted (cave near max)", "cave": "CAVE", "unjudged": "not judged"}
_BONE_COLOUR: BGR = (220, 220, 220)
#: The header's box: a dark backing that any text colour reads on, and its border.
BOX_COLOUR: BGR = (24, 24, 24)
BOX_BORDER: BGR = (235, 235, 235)
_TEXT: BGR = (235, 235, 235)
#: The longest reason shown; the rest is in the table.
REASON_CHARS = 90
#: Seconds a rep's verdict, or a movement's "not counted", stays on the overlay video.
BANNER_SECONDS = 2.0

#: What the header shows after the legend: a rep's verdict, or a movement that was not counted.
Shown = RepEvent | NotCountedEvent


@dataclass(frozen=True)
class Line:
    """One line of the header: text in a colour, optionally after a swatch (a filled square) of another."""

    text: str
    colour: BGR = _TEXT
    swatch: BGR | None = None


@dataclass(frozen=True)
class Header:
    """Where the header goes in a frame of a given size, and the lines it holds (already wrapped to fit)."""

    box: tuple[int, int, int, int]   # x0, y0, x1, y1: the backing box, inclusive, inside the frame
    lines: tuple[Line, ...]
    font_scale: float
    thickness: int
    line_height: int
    pad: int


def legend() -> list[Line]:
    """The legend: which colour is which leg, from the lifter's point of view."""
    return [Line("lifter's left leg", SIDE_COLOURS["left"], SIDE_COLOURS["left"]),
            Line("lifter's right leg", SIDE_COLOURS["right"], SIDE_COLOURS["right"])]


def short_reason(reason: str | None) -> str:
    """An unjudged rep's reason, cut to its first clause and :data:`REASON_CHARS`: what, not what to do."""
    if not reason:
        return "no reason given"
    text = reason.split(";")[0].split(". ")[0].strip().rstrip(".")
    if len(text) > REASON_CHARS:
        text = text[:REASON_CHARS - 3].rsplit(" ", 1)[0] + "..."
    return text


def rep_lines(event: RepEvent) -> list[Line]:
    """The header lines for a rep: its verdict, then each knee in its leg's colour (or why it was not judged)."""
    lines = [Line(f"rep {event.rep}: {_VERDICT_WORDS.get(event.verdict, event.verdict)}",
                  VERDICT_COLOURS.get(event.verdict, VERDICT_COLOURS["unjudged"]))]
    if event.verdict == "unjudged":
        lines.append(Line(short_reason(event.unjudged_reason)))
        return lines
    for side in ("left", "right"):
        leg = event.valgus.leg(side)
        grade = "not judged" if leg is None else f"{leg.severity} ({leg.cave:+.2f})"
        lines.append(Line(f"{side} knee: {grade}", SIDE_COLOURS[side], SIDE_COLOURS[side]))
    return lines


def not_counted_lines(event: NotCountedEvent) -> list[Line]:
    """The header line for a movement that was not counted: that it was not, and why in a few words."""
    return [Line(not_counted_words(event.why), VERDICT_COLOURS["unjudged"])]


def shown_lines(event: Shown) -> list[Line]:
    """The header lines for a rep or for a movement that was not counted."""
    return rep_lines(event) if isinstance(event, RepEvent) else not_counted_lines(event)


def _border(event: Shown | None) -> BGR:
    """The box's border: the verdict's colour, grey for a movement not counted, plain without either."""
    if event is None:
        return BOX_BORDER
    verdict = event.verdict if isinstance(event, RepEvent) else "unjudged"
    return VERDICT_COLOURS.get(verdict, VERDICT_COLOURS["unjudged"])


def rep_banner(event: RepEvent) -> tuple[str, BGR]:
    """The rep's verdict in one line of text, and its colour (for logs and titles; frames use :func:`rep_lines`)."""
    return " / ".join(line.text for line in rep_lines(event)), VERDICT_COLOURS.get(event.verdict,
                                                                                    VERDICT_COLOURS["unjudged"])


def layout(width: int, height: int, lines: list[Line]) -> Header:
    """Fit ``lines`` into a box in the top-left corner of a ``width`` x ``height`` frame.

    The font scales with the frame's width (about 45 characters a line in a portrait frame), or its height when that
    is the shorter side; a line too long for the frame is wrapped at spaces, and lines that do not fit in the frame's height are left off the end.
    """
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    # From the width (a portrait frame's short side), and no larger than a landscape frame's height allows, so the
    # header never hides the lifter in a wide frame.
    font_scale = min(2.0, max(0.35, min(width, height) / 1000))
    thickness = max(1, round(font_scale * 2))
    (_, text_h), baseline = cv2.getTextSize("Ag", font, font_scale, thickness)
    line_height = text_h + baseline + max(2, text_h // 3)
    margin = max(4, width // 100)
    pad = max(3, text_h // 2)
    swatch = text_h + pad
    room = width - 2 * margin - 2 * pad

    def text_width(line: Line) -> int:
        return cv2.getTextSize(line.text, font, font_scale, thickness)[0][0] + (swatch if line.swatch else 0)

    wrapped: list[Line] = []
    for line in lines:
        words, current = line.text.split(" "), ""
        for word in words:
            candidate = f"{current} {word}".strip()
            if current and text_width(Line(candidate, line.colour, line.swatch)) > room:
                wrapped.append(Line(current, line.colour, line.swatch))
                current = word
            else:
                current = candidate
        wrapped.append(Line(current, line.colour, line.swatch))
    # A single word wider than the frame: cut it to what fits.
    fitted = []
    for line in wrapped:
        text = line.text
        while len(text) > 1 and text_width(Line(text, line.colour, line.swatch)) > room:
            text = text[:-1]
        fitted.append(Line(text, line.colour, line.swatch))
    fitting = max(1, (height - 2 * margin - 2 * pad) // line_height)
    fitted = fitted[:fitting]
    box_w = max(text_width(line) for line in fitted) + 2 * pad
    box_h = len(fitted) * line_height + 2 * pad
    box = (margin, margin, min(width - margin, margin + box_w) - 1, min(height - margin, margin + box_h) - 1)
    return Header(box, tuple(fitted), font_scale, thickness, line_height, pad)


def draw_header(canvas: np.ndarray, lines: list[Line], border: BGR = BOX_BORDER) -> Header:
    """Draw ``lines`` on their backing box in ``canvas`` (in place); returns where they went."""
    import cv2

    height, width = canvas.shape[:2]
    header = layout(width, height, lines)
    x0, y0, x1, y1 = header.box
    cv2.rectangle(canvas, (x0, y0), (x1, y1), BOX_COLOUR, -1)
    cv2.rectangle(canvas, (x0, y0), (x1, y1), border, max(1, header.thickness // 2))
    (_, text_h), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, header.font_scale, header.thickness)
    for i, line in enumerate(header.lines):
        x = x0 + header.pad
        baseline_y = y0 + header.pad + i * header.line_height + text_h
        if line.swatch is not None:
            cv2.rectangle(canvas, (x, baseline_y - text_h), (x + text_h, baseline_y), line.swatch, -1)
            x += text_h + header.pad
        cv2.putText(canvas, line.text, (x, baseline_y), cv2.FONT_HERSHEY_SIMPLEX, header.font_scale, line.colour,
                    header.thickness, cv2.LINE_AA)
    return header


class OverlayWriter:
    """Writes an annotated copy of a recording, frame by frame."""

    def __init__(self, path: str | Path, fps: float, min_score: float):
        self.path = Path(path)
        self.fps = fps
        self.min_score = min_score
        self._writer = None
        self._shown: Shown | None = None
        self._shown_until = -1.0

    def add(self, t: float, image: np.ndarray, pose: Pose, new_events: list[Event]) -> None:
        import cv2

        if self._writer is None:
            height, width = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._writer.isOpened():
                raise OSError(f"Cannot write a video to {self.path}.")
        for event in new_events:
            if isinstance(event, (RepEvent, NotCountedEvent)):
                self._shown, self._shown_until = event, t + BANNER_SECONDS
        self._writer.write(draw(image, pose, self.min_score, self._shown if t <= self._shown_until else None))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def draw(image: np.ndarray, pose: Pose, min_score: float, event: Shown | None = None) -> np.ndarray:
    """A copy of ``image`` with the skeleton, each leg in its side's colour with the ankle's plumb line, and the
    header: the legend, and ``event`` when given (a rep's verdict, or a movement that was not counted)."""
    import cv2

    canvas = image.copy()
    height, width = image.shape[:2]
    scale = max(1, round(min(height, width) / 360))
    ok = pose.score >= min_score
    for a, b in _BONES:
        if ok[KP[a]] and ok[KP[b]]:
            cv2.line(canvas, _pt(pose, a), _pt(pose, b), _BONE_COLOUR, scale, cv2.LINE_AA)
    for i in np.flatnonzero(ok):
        name = next(name for name, index in KP.items() if index == i)
        if not any(name in joints for joints in _LEGS.values()):
            cv2.circle(canvas, (int(pose.xy[i, 0]), int(pose.xy[i, 1])), 2 * scale, _BONE_COLOUR, -1)
    for side, (hip, knee, ankle) in _LEGS.items():
        colour = SIDE_COLOURS[side]
        if ok[KP[hip]] and ok[KP[knee]]:
            cv2.line(canvas, _pt(pose, hip), _pt(pose, knee), colour, 2 * scale, cv2.LINE_AA)
        if ok[KP[knee]] and ok[KP[ankle]]:
            cv2.line(canvas, _pt(pose, knee), _pt(pose, ankle), colour, 2 * scale, cv2.LINE_AA)
            # The plumb line from the ankle: a knee left of it or right of it is what the verdict is about.
            ax, ay = _pt(pose, ankle)
            cv2.line(canvas, (ax, ay), (ax, _pt(pose, knee)[1]), colour, max(1, scale // 2), cv2.LINE_AA)
        for joint in (hip, knee, ankle):
            if ok[KP[joint]]:
                cv2.circle(canvas, _pt(pose, joint), 3 * scale, colour, -1, cv2.LINE_AA)
    draw_header(canvas, legend() + (shown_lines(event) if event is not None else []), _border(event))
    return canvas


def write_rep_frames(video: str | Path, folder: str | Path, reps: list[RepEvent], poses: dict[int, Pose], fps: float,
                     min_score: float) -> list[Path]:
    """A PNG per rep of the frame where its knees were worst (the bottom for a rep not judged)."""
    import cv2

    from .camera import open_source

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wanted: dict[int, RepEvent] = {}
    for rep in reps:
        legs = rep.valgus.judged()
        t = max(legs, key=lambda v: v.cave).t_peak if legs else rep.t_bottom
        wanted[round(t * fps)] = rep
    written = []
    source = open_source(video)
    try:
        for frame in source.frames():
            rep = wanted.get(frame.index)
            if rep is not None and frame.index in poses:
                path = folder / f"rep-{rep.rep:02d}.png"
                cv2.imwrite(str(path), draw(frame.image, poses[frame.index], min_score, rep))
                written.append(path)
    finally:
        source.close()
    return written


def _pt(pose: Pose, name: str) -> tuple[int, int]:
    x, y = pose.xy[KP[name]]
    return int(x), int(y)
