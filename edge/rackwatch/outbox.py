"""The durable outbox: events wait on disk until the broker has acknowledged them.

A rep happens once; if the broker is down, the Wi-Fi drops or the Pi loses power, the rep must still reach the
dashboard later. So every event is first written here (one SQLite row, committed), and only then sent. A row is
deleted when the broker acknowledges the message (the PUBACK of a QoS 1 publish). After a crash or reboot the rows
still in the file are sent again, in the order they were written.

Delivery is therefore *at least once*: an event whose PUBACK was lost in a crash is sent twice, with the same
``id``, and consumers drop the duplicate.

Durability choices
    * WAL journal mode: a writer never blocks the sender reading the next rows, and a commit is one append to
      the log instead of rewriting pages of the database.
    * ``synchronous=FULL`` for what happens once: a rep, a set summary, a command's reply. The commit waits for
      ``fsync`` of the log. With WAL, ``NORMAL`` already survives a crash of the *process* (``kill -9``), but on
      *power loss* it may roll back the last commits -- exactly the reps of the last seconds before someone
      pulled the plug. A rack judges a rep every few seconds at most, so we pay one fsync per rep.
    * ``synchronous=NORMAL`` for everything else: ``state`` and ``health`` snapshots (several per rep, and the
      next one replaces them anyway) and the deletions after each acknowledgement (a deletion lost to a power
      cut only means an event goes out twice, which at-least-once delivery allows). These commits survive
      ``kill -9`` and cost no fsync -- an fsync on a Pi's SD card can take longer than a frame. The log is
      written in order, so the fsync of the next rep makes every snapshot before it durable too: a power cut can
      only lose the newest snapshots, never one older than a rep that survived.

When full (``max_events`` rows), the oldest *least valuable* row makes room for the new one:
    1. the oldest ``health`` row (health is a momentary snapshot, sent with QoS 0 anyway);
    2. else the oldest ``state`` row (the retained state is a snapshot too; the newest one is what counts);
    3. else the oldest row of any kind -- a rep, set or reply is lost, and :attr:`Outbox.dropped` counts it.
Besides, only the newest *unsent* health row is kept at all: after an outage nobody needs a backlog of stale fps
figures, and it keeps hours of outage from filling the outbox with health.

The class is thread-safe (one connection, one lock): the caller's thread adds, the MQTT link's thread reads and
deletes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_MAX_EVENTS = 20_000
# Cheapest to lose first: see the module docstring.
_DROP_ORDER = ("health", "state")
# Momentary pictures of the rack: the newest one is what counts, so they are not worth an fsync each.
SNAPSHOTS = frozenset(_DROP_ORDER)


@dataclass(frozen=True)
class OutboxEntry:
    """One waiting message: ``seq`` gives the order; ``topic``/``payload``/``qos``/``retain`` say how to send it."""

    seq: int
    kind: str
    event_id: str
    topic: str
    payload: bytes
    qos: int
    retain: bool


def to_json(event: dict[str, Any]) -> bytes:
    """The compact UTF-8 JSON of an event, refusing what JSON cannot carry (NaN, infinity, arbitrary objects)."""
    try:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_plain).encode("utf-8")
    except ValueError:
        raise ValueError(f"a {event.get('type', 'event')} event contains NaN or an infinite number, which JSON "
                         "cannot carry; send null for a value that is unknown") from None


def _plain(value: Any) -> Any:
    # numpy scalars (np.int64, np.bool_, ...) slip easily out of the pose pipeline: store them as plain numbers.
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"an event field holds a {type(value).__name__}, which cannot be sent as JSON; "
                    "convert it to a number, string, list or dict first")


class Outbox:
    """An ordered, bounded, crash-safe queue of outgoing MQTT messages in ``<state_dir>/outbox.sqlite3``."""

    FILENAME = "outbox.sqlite3"

    def __init__(self, state_dir: str | Path, *, max_events: int = DEFAULT_MAX_EVENTS, synchronous: str = "FULL"):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / self.FILENAME
        self.max_events = max_events
        self._lock = threading.RLock()
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, so each add is exactly one durable transaction.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"could not put the outbox {self.path} in WAL mode (got {mode!r}); "
                               "is the state directory on a filesystem that supports it?")
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self._synchronous = synchronous.upper()   # for the events that happen once
        self._level: str | None = None             # the level the connection is set to now
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS outbox (
                seq      INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reuse a seq, keeps order
                kind     TEXT NOT NULL,
                event_id TEXT NOT NULL,
                topic    TEXT NOT NULL,
                payload  BLOB NOT NULL,
                qos      INTEGER NOT NULL,
                retain   INTEGER NOT NULL
            );
            CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, seq);
            CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS memory (name TEXT PRIMARY KEY, value BLOB NOT NULL);
        """)
        # Rows kept, counted here rather than by SQL at every add: COUNT(*) reads the whole table, and after a
        # long outage the table holds thousands of rows.
        self._rows = 0
        self._recount()

    # -- writing -------------------------------------------------------------------------------------------------

    def add(self, event: dict[str, Any], topic: str, *, qos: int = 1, retain: bool = False) -> int:
        """Write one event (a dict from :mod:`rackwatch.events`) to disk; return its sequence number.

        When this returns, the event is committed: it survives the process being killed. A rep, set or reply
        is also fsynced (``synchronous=FULL``), so it survives a power cut; see the module docstring.
        """
        kind = str(event.get("type", "event"))
        payload = to_json(event)
        with self._lock, self._transaction(durable=kind not in SNAPSHOTS):
            if kind == "health":
                # Only the newest health snapshot is worth sending (see module docstring).
                self._rows -= self._db.execute("DELETE FROM outbox WHERE kind = 'health'").rowcount
            while self._rows >= self.max_events:
                self._drop_one()
            cur = self._db.execute(
                "INSERT INTO outbox (kind, event_id, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?, ?)",
                (kind, str(event.get("id", "")), topic, payload, int(qos), int(bool(retain))))
            if kind == "state":
                # Remember the newest state, so it can be republished (retained) after every reconnect.
                self._db.execute("INSERT OR REPLACE INTO memory (name, value) VALUES ('last_state', ?)",
                                 (json.dumps({"topic": topic, "payload": payload.decode("utf-8")}),))
            self._rows += 1
            return cur.lastrowid

    def _drop_one(self) -> None:
        for kind in _DROP_ORDER:
            row = self._db.execute("SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1", (kind,)).fetchone()
            if row:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", row)
                self._bump(f"dropped_{kind}")
                self._rows -= 1
                return
        row = self._db.execute("SELECT seq, kind FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
        self._bump("dropped")
        self._rows -= 1

    def remove(self, *seqs: int) -> None:
        """Forget rows: the broker has acknowledged them (or refused them for good). One commit for all."""
        if not seqs:
            return
        with self._lock, self._transaction():
            self._rows -= self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in seqs]).rowcount

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to a named counter kept in the same file (e.g. messages the broker refused)."""
        with self._lock, self._transaction():
            self._bump(name, by)

    # -- reading -------------------------------------------------------------------------------------------------

    def peek(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """The oldest waiting rows with ``seq > after``, in order (nothing is removed)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, kind, event_id, topic, payload, qos, retain FROM outbox WHERE seq > ? "
                "ORDER BY seq LIMIT ?", (after, limit)).fetchall()
        return [OutboxEntry(seq, kind, eid, topic, bytes(payload), qos, bool(retain))
                for seq, kind, eid, topic, payload, qos, retain in rows]

    def __iter__(self) -> Iterator[OutboxEntry]:
        after = 0
        while batch := self.peek(after):
            yield from batch
            after = batch[-1].seq

    def __len__(self) -> int:
        return self._rows

    @property
    def depth(self) -> int:
        """How many events wait to be acknowledged (shown in health events)."""
        return len(self)

    def counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    @property
    def dropped(self) -> int:
        """Reps, sets or replies lost because the outbox was full (health/state drops are counted apart)."""
        return self.counter("dropped")

    def last_state(self) -> tuple[str, bytes] | None:
        """(topic, payload) of the newest state event ever added, even if already sent; ``None`` if none yet."""
        with self._lock:
            row = self._db.execute("SELECT value FROM memory WHERE name = 'last_state'").fetchone()
        if not row:
            return None
        saved = json.loads(row[0])
        return saved["topic"], saved["payload"].encode("utf-8")

    def has_pending(self, kind: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM outbox WHERE kind = ? LIMIT 1", (kind,)).fetchone() is not None

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute("INSERT INTO counters (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value", (name, by))

    def _transaction(self, durable: bool = False):
        """One atomic commit; fsynced only if ``durable`` (see the module docstring)."""
        level = self._synchronous if durable else "NORMAL"
        if level != self._level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._level = level
        return _Transaction(self._db, on_rollback=self._recount)

    def _recount(self) -> None:
        self._rows = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error): the writes inside are one atomic, durable step."""

    def __init__(self, db: sqlite3.Connection, on_rollback):
        self._db = db
        self._on_rollback = on_rollback

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")
            self._on_rollback()
