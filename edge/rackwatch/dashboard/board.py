"""The live board: one tile per rack, kept in memory and pushed to every open browser.

The ingester hands the board each rack's news as soon as it has read and checked the message (:meth:`Board.show`),
before the message is stored: the board is a live view, and waiting for the database's commit (batched, and now
and then held up by a write to disk) was most of a tile's delay. Storing stays the store's business: a message is
acknowledged to the broker only once committed, so none is lost; the board folds each rack's newest state, rep
and health by the events' own times, so a repeat or a late copy changes nothing. The board only marks the tile
dirty. A flusher wakes as soon as news arrives, works out what each dirty tile shows now, and sends
only the tiles that look different (a rep's descent, bottom and ascent look alike on a tile: one update, not
three), together in one ``tiles`` event. The event is encoded once, as the bytes of a server-sent event, and the
same bytes go to every browser. A tile's HTML is drawn again only when what it shows changed. So a rack that
sends twenty states a second still costs each browser at most five updates a second (a tile sent twice in the last
two ``flush_s``, 0.4 s, waits its turn, its changes coalesced), and a change is on screen within a second, most
within a few hundredths of a second of the rack's message.

What a tile shows is decided by :func:`tile_view` (pure, tested without a browser): online or offline, idle or in
a set, lifter seen, load and % of one-rep max, reps so far, the last rep's verdict as a colour (``clean``,
``minor``, ``cave``, and ``unjudged`` as its own grey state, never shown as clean), the latest movement the rack
did not count and why (for :data:`NOT_COUNTED_SHOWN`, until a rep counts after it), and whether the camera is
ready or needs attention.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, NamedTuple

from rackwatch.events import not_counted_words

from .alerts import AlertRules, health_problems
from .store import IngestResult, utcnow

log = logging.getLogger(__name__)

HEALTH_STALE = timedelta(seconds=30)   # racks report health every 5 s; six missed reports is a problem
NOT_COUNTED_SHOWN = timedelta(minutes=2)   # how long a tile says a movement was not counted (by the event's time)


def verdict_colour(rep: dict[str, Any] | None) -> str:
    """``none`` (no rep yet), ``clean``, ``minor`` (a note, or a clean rep with a minor cave), ``cave`` or
    ``unjudged``."""
    if rep is None:
        return "none"
    verdict = rep.get("verdict")
    if verdict == "cave":
        return "cave"
    if verdict == "unjudged" or verdict not in ("clean", "note"):
        return "unjudged"   # never let a rep the rack could not judge look clean
    if verdict == "note" or rep.get("severity") not in (None, "none"):
        return "minor"
    return "clean"


def tile_view(snapshot: dict[str, Any], rules: AlertRules, now: datetime | None = None) -> dict[str, Any]:
    """What a rack's tile shows, as plain words and CSS classes."""
    now = now or utcnow()
    state = snapshot.get("state") or {}
    rep = snapshot.get("last_rep")
    health = snapshot.get("health")
    online = snapshot.get("online")
    missed = snapshot.get("last_not_counted")
    missed_at = snapshot.get("last_not_counted_time")
    rep_at = snapshot.get("last_rep_time")
    # Shown for two minutes, unless a rep counted since (the tile would say both "rep 3: clean" and "not counted").
    if not (online and missed and now - missed_at < NOT_COUNTED_SHOWN and (rep_at is None or rep_at <= missed_at)):
        missed = None
    load = state.get("load")
    # An offline rack's last state is old news: it is neither in a set nor watching a lifter now.
    in_set = bool(online and state.get("set_id")) and (state.get("reps_in_set", 0) > 0
                                                        or state.get("phase") != "standing")
    problems = health_problems(health, None, rules)
    if online and health is None:
        camera = "waiting for the first health report"
    elif online and snapshot.get("health_time") and now - snapshot["health_time"] > HEALTH_STALE:
        problems = ["no health report for over 30 s", *problems]
    # The rack's own judgement of its camera's aim (rackwatch aim's checks, in the state), before the health's.
    aim = state.get("camera_reason") if state.get("camera") == "needs attention" else None
    if not online:
        camera = "—"
    elif aim:
        problems = [aim, *problems]
        camera = "camera needs attention: " + "; ".join(problems)
    elif problems:
        camera = "needs attention: " + "; ".join(problems)
    elif health is not None:
        camera = "camera ready"
    return {
        "rack": snapshot["rack"],
        "status": "online" if online else ("offline" if online is False else "unknown"),
        "activity": "in set" if in_set else "idle",
        "lifter_seen": bool(online and state.get("lifter_seen")),
        "load": f"{load['value']:g} {load['units']}" if load else "no load entered",
        "percent": f"{load['percent_1rm']:g} % of max" if load and load.get("percent_1rm") is not None else "",
        "reps": state.get("reps_in_set", 0),
        "verdict": verdict_colour(rep),
        "verdict_text": _verdict_text(rep),
        "not_counted": _not_counted_text(missed),
        "not_counted_reason": missed["reason"] if missed else "",
        "camera": camera,
        "attention": bool(online and problems),
    }


def _verdict_text(rep: dict[str, Any] | None) -> str:
    if rep is None:
        return "no rep yet"
    colour = verdict_colour(rep)
    words = {"clean": "clean", "minor": "minor cave", "cave": "knees caved", "unjudged": "not judged"}[colour]
    return f"rep {rep['rep']}: {words}"


def _not_counted_text(missed: dict[str, Any] | None) -> str:
    return not_counted_words(missed["why"]) if missed is not None else ""


class RackNews(NamedTuple):
    """What a checked message tells the board: the rack, the topic's kind (``availability``, ``state``, ``rep``,
    ``not_counted``, ``health``: the others change no tile), the event's time (availability: when it arrived) and
    the payload the check decoded (availability: True for online)."""
    rack: str
    leaf: str
    when: datetime
    payload: Any

    @classmethod
    def of(cls, checked) -> "RackNews | None":
        """The news in a :class:`~rackwatch.dashboard.store.Checked` message, or None when it shows nothing."""
        if checked.error is None and checked.leaf in TILE_LEAVES:
            return cls(checked.rack, checked.leaf, checked.when, checked.payload)
        return None


TILE_LEAVES = ("availability", "state", "rep", "not_counted", "health")
_NEWEST = {"state": ("state", "state_time"), "rep": ("last_rep", "last_rep_time"),
           "not_counted": ("last_not_counted", "last_not_counted_time"), "health": ("health", "health_time")}


def empty_snapshot(rack: str) -> dict[str, Any]:
    """A rack the board has not heard of before (the store's ``rack_snapshot`` fields)."""
    return {"rack": rack, "online": None, "availability_at": None, "last_seen": None, "state": None,
            "state_time": None, "last_rep": None, "last_rep_time": None, "health": None, "health_time": None,
            "last_not_counted": None, "last_not_counted_time": None}


def fold(snapshot: dict[str, Any], news: RackNews) -> str | None:
    """Fold one piece of news into a rack's snapshot, by the rules the store keeps the rack's row by: the newest
    state, rep, movement not counted and health by the events' own times (an older copy arriving late, or a repeat,
    changes nothing), availability as it comes (a retained copy keeps the time the rack went). Returns the event's
    id, if any."""
    if news.leaf == "availability":
        online = news.payload
        if snapshot["online"] != online or snapshot["availability_at"] is None:
            snapshot["online"], snapshot["availability_at"] = online, news.when
        return None
    payload = news.payload
    column, at = _NEWEST[news.leaf]
    if snapshot[at] is None or news.when >= snapshot[at]:
        snapshot[column], snapshot[at] = payload, news.when
    if snapshot["last_seen"] is None or news.when > snapshot["last_seen"]:
        snapshot["last_seen"] = news.when
    return payload["id"]


@dataclass(frozen=True)
class Update:
    """One server-sent event for every browser: its kind (``tiles`` or ``alerts``), its JSON text, and the bytes
    on the wire (encoded once, shared by all the streams)."""
    kind: str
    data: str

    @property
    def frame(self) -> bytes:
        return sse_frame(self.kind, self.data)


def sse_frame(kind: str, data: str) -> bytes:
    """A server-sent event's bytes (the JSON text is one line: ``json.dumps`` escapes newlines)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


class Board:
    """The tiles in memory, and the browsers listening (each an ``asyncio.Queue`` of :class:`Update` and the
    bytes to send, or ``None`` to end a stream)."""

    def __init__(self, rules: AlertRules, *, flush_s: float = 0.2, client_queue: int = 500,
                 clock: Callable[[], float] = time.monotonic):
        self.rules = rules
        self.clock = clock
        self.flush_s = flush_s
        self.client_queue = client_queue
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.last_event: dict[str, str] = {}      # rack -> id of the newest event applied (the load test's probe)
        self._dirty: set[str] = set()
        self._drawn: dict[str, tuple[dict[str, Any], str]] = {}   # rack -> (what its tile shows, its HTML)
        self._sent: dict[str, dict[str, Any]] = {}                # rack -> what the last update sent showed
        self._sent_at: dict[str, tuple[float, float]] = {}        # rack -> when (monotonic) its last two were sent
        self._wake = asyncio.Event()
        self._alerts_dirty = False
        self._clients: set[asyncio.Queue] = set()

    def load(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = {s["rack"]: s for s in snapshots}

    def show(self, news: Iterable[RackNews]) -> None:
        """Racks' news, as it arrives: their tiles are sent at the flusher's next turn."""
        for item in news:
            snapshot = self.snapshots.get(item.rack)
            if snapshot is None:
                snapshot = self.snapshots[item.rack] = empty_snapshot(item.rack)
            event_id = fold(snapshot, item)
            if event_id is not None:
                self.last_event[item.rack] = event_id
            self._dirty.add(item.rack)
        self._wake.set()

    def stored(self, result: IngestResult) -> None:
        """A batch committed: the alert list is drawn again if it raised any (alerts live in the database)."""
        if result.alerts:
            self.alerts_changed()

    def alerts_changed(self) -> None:
        self._alerts_dirty = True
        self._wake.set()

    def tiles(self) -> list[dict[str, Any]]:
        return [tile_view(self.snapshots[r], self.rules) for r in sorted(self.snapshots)]

    # -- browsers -----------------------------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(self.client_queue)
        self._clients.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._clients.discard(queue)

    @property
    def listeners(self) -> int:
        return len(self._clients)

    async def run(self, render_tile: Callable[[dict], str], render_alerts: Callable[[], str]) -> None:
        """Send dirty tiles (and the alert list when it changed) as soon as news arrives, each tile at most twice
        per two ``flush_s``; every 5 s look at every tile again, so a rack that went quiet shows it (only the
        tiles that changed are sent)."""
        next_look = self.clock() + 5
        while True:
            # A tile that waits its turn is sent at the latest half a flush_s after it. asyncio.timeout, not
            # wait_for: on Python 3.11 wait_for can swallow a cancellation that comes as the event is set, and the
            # board, woken by every message, then never stopped (the dashboard hung at Ctrl-C, now and then).
            try:
                async with asyncio.timeout(self.flush_s / 2):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            if self.clock() >= next_look:
                self._dirty.update(self.snapshots)
                next_look = self.clock() + 5
            try:
                await self._flush(render_tile, render_alerts)
            except Exception:   # a broken template must not stop the board for everyone
                log.exception("could not push the board's updates")
            await asyncio.sleep(0.02)   # batches close together go out together (≤ 50 updates a second a browser)

    def tiles_message(self, racks, render_tile, *, changed_only: bool = False) -> str | None:
        """One ``tiles`` event for these racks: ``{"tiles": [{"rack", "html", "event"}, ...]}`` (``event`` is the
        id of the rack's newest event: the load test times it). With ``changed_only``, only the tiles that look
        different from the last ones sent, and None when none does."""
        tiles = []
        for rack in sorted(racks):
            view = tile_view(self.snapshots[rack], self.rules)
            if changed_only:
                if self._sent.get(rack) == view:
                    continue
                self._sent[rack] = view
                self._sent_at[rack] = (self._sent_at.get(rack, (0.0, 0.0))[1], self.clock())
            drawn = self._drawn.get(rack)
            if drawn is not None and drawn[0] == view:
                html = drawn[1]
            else:
                html = render_tile(view)
                self._drawn[rack] = (view, html)
            tiles.append({"rack": rack, "html": html, "event": self.last_event.get(rack)})
        return json.dumps({"tiles": tiles}) if tiles else None

    async def _flush(self, render_tile, render_alerts) -> None:
        messages = []
        now = self.clock()
        # A tile goes out unless it went out twice in the last two flush_s (five a second at most, on average):
        # the two messages a rack sends together (a rep and its state) may land in two flushes, and the second
        # should not wait its turn.
        dirty = {rack for rack in self._dirty if now - self._sent_at.get(rack, (0.0, 0.0))[0] >= 2 * self.flush_s}
        self._dirty -= dirty   # the others wait, coalesced
        if dirty:
            data = self.tiles_message(dirty, render_tile, changed_only=True)
            if data is not None:
                messages.append(Update("tiles", data))
        if self._alerts_dirty:
            self._alerts_dirty = False
            messages.append(Update("alerts", json.dumps({"html": await asyncio.to_thread(render_alerts)})))
        items = [(message, message.frame) for message in messages]   # encoded once for every browser
        for queue in list(self._clients):
            for item in items:
                try:
                    queue.put_nowait(item)
                except asyncio.QueueFull:   # a browser that stopped reading: end its stream; it reconnects
                    self._clients.discard(queue)
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait(None)
                    break
