"""The rack panel in a terminal, for machines without GPIO pins (a laptop, a CI runner, a Pi on the bench).

Keys stand in for the buttons and printed lines for the display, the lights and the buzzer:

====================  ===========================================
``+`` (or ``=``, ↑)   up: one plate step more
``-`` (or ``_``, ↓)   down: one plate step less
``m``                 mode: load → one-rep max → units → exercise
``u``                 switch units (kg ↔ lb) straight away
``i``                 identify (what the rack does when staff look for it)
``?``                 list the keys
``q``                 quit
====================  ===========================================

It is a thin front-end: the keys go through the same :class:`~rackwatch.panel.PanelControls` as the real
buttons, into the same :class:`~rackwatch.load.SettingsStore`, and rep verdicts come out of the same
:data:`~rackwatch.panel.FEEDBACK` table, so what it prints is what the rack would do.

When standard input is a terminal, keys act at once (no Enter needed); otherwise, e.g. when input is piped
in, it reads whole lines and acts on each character. Try it on its own with::

    python -m rackwatch.virtual_panel --demo

where ``--demo`` adds keys ``c``, ``n``, ``x`` and ``j`` to play a clean, a noted, a caved and an unjudged rep.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import threading
from typing import Any, Callable, TextIO

from .events import UNITS, NotCountedEvent, RepEvent
from .load import SettingsStore, format_weight
from .panel import (MODE_NAMES, NOT_COUNTED, STATUS_PATTERNS, UNJUDGED, Feedback, PanelControls, PanelTiming, Tune,
                    feedback_for, status_for)

KEYS = {
    "+": "up", "=": "up",
    "-": "down", "_": "down",
    "m": "mode", "u": "units", "i": "identify", "?": "help", "h": "help", "q": "quit",
}
DEMO_KEYS = {"c": "clean", "n": "note", "x": "cave", "j": "unjudged"}
# What the arrow keys send in a terminal.
_ARROWS = {"\x1b[A": "+", "\x1b[B": "-", "\x1bOA": "+", "\x1bOB": "-"}

_STATUS_WORDS = {
    "fault": "fast blink: something is wrong, reps are not being judged",
    "no-broker": "slow blink: judging, results wait until the broker is back",
    "ready": "steady: ready, the camera sees you",
    "waiting": "short blip every 3 s: ready, nobody in view",
}
assert set(_STATUS_WORDS) == set(STATUS_PATTERNS)


def describe_tune(tune: Tune) -> str:
    """A tune in words, e.g. ``A5 0.1s, rest, A5 0.1s``."""
    return ", ".join("rest" if note is None else f"{note} {seconds:g}s" for note, seconds in tune) or "silent"


class VirtualPanel:
    """Keys in, text out; a :class:`~rackwatch.panel.Panel` like :class:`~rackwatch.panel.RackPanel`, so the
    service can use either.

    :param store: the settings the keys change.
    :param out: where to print (standard output by default).
    :param timing: only ``mode_timeout`` matters here.
    :param buzzer_enabled: ``False`` leaves the tunes out of the printed reactions.
    :param on_quit: called when ``q`` is pressed (the service stops itself there).
    :param demo: also accept ``c``/``n``/``x`` to try the rep feedback without a camera.
    """

    def __init__(self, store: SettingsStore, *, out: TextIO | None = None, timing: PanelTiming = PanelTiming(),
                 buzzer_enabled: bool = True, on_quit: Callable[[], None] | None = None, demo: bool = False) -> None:
        self.store = store
        self.out = out if out is not None else sys.stdout
        self.buzzer_enabled = buzzer_enabled
        self.on_quit = on_quit
        self.demo = demo
        self.controls = PanelControls(store, mode_timeout=timing.mode_timeout, on_mode_change=self._mode_changed)
        self.quit_requested = threading.Event()
        self._status = ""
        self._print_lock = threading.Lock()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._terminal: _KeyByKey | None = None
        store.add_listener(self._settings_changed)

    # -- the same API as RackPanel -------------------------------------------------------------------------

    def show_rep(self, rep_event: RepEvent) -> Feedback:
        return self._show_verdict(rep_event.verdict, rep_event.rep, rep_event.unjudged_reason)

    def show_not_counted(self, event: NotCountedEvent) -> Feedback:
        # Why it did not count is what the lifter can act on (keep the feet planted, start standing): say it. The
        # line starts with what it means ("not counted"), as a rep's starts with "rep 3", so it is said once.
        return self._give(NOT_COUNTED, NOT_COUNTED.meaning, event.reason)

    def _show_verdict(self, verdict: str | None, rep: int | None = None, reason: str | None = None) -> Feedback:
        feedback = feedback_for(verdict)
        # Why a rep was not judged is what the lifter can act on (turn to the camera, step back): say it.
        return self._give(feedback, f"rep {rep}" if rep is not None else "rep",
                          reason if feedback is UNJUDGED else None)

    def _give(self, feedback: Feedback, what: str, reason: str | None) -> Feedback:
        light = f"{feedback.light.upper()} light" if feedback.light else "no light"
        sound = f", buzzer: {describe_tune(feedback.tune)}" if self.buzzer_enabled and feedback.tune else ""
        # what: light, sound - meaning: reason; a meaning the line starts with is not said again.
        said = ": ".join(part for part in (None if feedback.meaning == what else feedback.meaning, reason) if part)
        self._print(f"{what}: {light}{sound}" + (f" - {said}" if said else ""))
        return feedback

    def set_status(self, lifter_seen: bool, broker_ok: bool, fault: bool) -> str:
        status = status_for(lifter_seen, broker_ok, fault)
        if status != self._status:
            self._status = status
            self._print(f"status light: {_STATUS_WORDS[status]}")
        return status

    @property
    def status(self) -> str:
        return self._status

    def identify(self, seconds: float | None = None) -> None:
        self._print("identify: every light blinking, display 8.8.8.8., beeping")

    def close(self) -> None:
        """Stop reading keys (restoring the terminal) and stop listening to the store. Safe to call twice."""
        self._stop.set()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=0.5)  # a blocked line read cannot be interrupted
        self._reader = None
        if self._terminal is not None:
            self._terminal.restore()
            self._terminal = None
        self.store.remove_listener(self._settings_changed)
        self.controls.close()

    def __enter__(self) -> VirtualPanel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys ----------------------------------------------------------------------------------------------

    def handle_key(self, key: str) -> bool:
        """Act on one key press; returns ``False`` once ``q`` has been pressed."""
        action = KEYS.get(key.lower())
        if action == "up" or action == "down":
            direction = +1 if action == "up" else -1
            press = self.controls.adjust(direction)
            if not press.changed:
                self._print(f"[{self.controls.display_text():>5}] {press.reason or 'limit reached'} (low buzz)")
        elif action == "mode":
            self.controls.next_mode()
        elif action == "units":
            current = self.store.settings.units
            self.store.set_units(UNITS[(UNITS.index(current) + 1) % len(UNITS)])
        elif action == "identify":
            self.identify()
        elif action == "help":
            self._print(self.help())
        elif action == "quit":
            self.quit_requested.set()
            if self.on_quit:
                self.on_quit()
            return False
        elif self.demo and key.lower() in DEMO_KEYS:
            verdict = DEMO_KEYS[key.lower()]
            self._show_verdict(verdict, reason="demo: the camera sees the knees side on" if verdict == "unjudged" else None)
        return True

    def help(self) -> str:
        keys = "+ up, - down, m mode, u kg/lb, i identify, ? help, q quit"
        if self.demo:
            keys += "; try a rep: c clean, n noted, x caved, j not judged"
        return f"keys: {keys}"

    def start(self, stdin: TextIO | None = None) -> None:
        """Read keys from ``stdin`` (standard input by default) in a background thread, until :meth:`close`."""
        stream = stdin if stdin is not None else sys.stdin
        self._print(self.help())
        self._show()
        if stream is None or stream.closed:
            self._print("no keyboard input available: the virtual panel only shows what happens")
            return
        if stream.isatty():
            # Switched here rather than in the thread, so that keys typed straight away already count.
            self._terminal = _KeyByKey(stream.fileno())
            target, args = self._read_terminal, (stream.fileno(),)
        else:
            target, args = self._read_lines, (stream,)
        self._reader = threading.Thread(target=self._guarded, args=(target, *args), name="rackwatch-keys",
                                        daemon=True)
        self._reader.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``q`` is pressed (or ``timeout`` passes); returns whether it was pressed."""
        return self.quit_requested.wait(timeout)

    def _guarded(self, read: Callable[..., None], *args: Any) -> None:
        try:
            read(*args)
        except Exception as exc:  # never take the service down over a keyboard
            self._print(f"virtual panel stopped reading keys: {exc}")

    def _read_lines(self, stream: TextIO) -> None:
        for line in stream:
            if self._stop.is_set() or not all(self.handle_key(ch) for ch in line if not ch.isspace()):
                return
        # End of input (e.g. stdin is /dev/null under systemd) only ends the key reading, not the rack.

    def _read_terminal(self, fd: int) -> None:
        while not self._stop.is_set():
            # A short timeout, so that close() is noticed promptly.
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 32).decode(errors="ignore")
            if not data:
                return
            for sequence, key in _ARROWS.items():
                data = data.replace(sequence, key)
            if not all(self.handle_key(ch) for ch in data):
                return

    # -- output --------------------------------------------------------------------------------------------

    def _mode_changed(self, mode: str) -> None:
        self._show()

    def _settings_changed(self, settings: object) -> None:
        self._show()

    def _show(self) -> None:
        settings = self.store.settings
        self._print(f"[{self.controls.display_text():>5}] editing {MODE_NAMES[self.controls.mode]}"
                    f"  (load {_weight(settings.load)}, one-rep max {_weight(settings.one_rm)}, "
                    f"{settings.units}, {settings.exercise}"
                    f"{' on the ' + settings.working_leg + ' leg' if settings.working_leg else ''})")

    def _print(self, line: str) -> None:
        with self._print_lock:
            print(line, file=self.out, flush=True)


class _KeyByKey:
    """Puts a terminal into cbreak mode until :meth:`restore`.

    cbreak rather than full raw mode: keys arrive one at a time without Enter and unechoed, but Ctrl-C still
    stops the program and printed newlines still return the cursor to the start of the line.
    """

    def __init__(self, fd: int) -> None:
        import termios
        import tty

        self._fd = fd
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

    def restore(self) -> None:
        import termios

        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)


def _weight(value: float | None) -> str:
    return "not set" if value is None else format_weight(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rackwatch.virtual_panel",
                                     description="Try the rack panel in a terminal.")
    parser.add_argument("--state-dir", help="keep the settings in this folder (default: in memory only)")
    parser.add_argument("--demo", action="store_true", help="add keys c, n, x and j to try the rep feedback")
    args = parser.parse_args(argv)
    store = SettingsStore(args.state_dir)
    with VirtualPanel(store, demo=args.demo) as panel:
        panel.start()
        try:
            panel.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
