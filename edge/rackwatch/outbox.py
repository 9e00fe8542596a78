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
    3. else the oldest ``not_counted`` row (a movement that did not count tells less than a rep: an hour of
       jumping jacks in front of a rack during an outage must not push out the reps and sets around it);
    4. else the oldest row of any kind -- a rep, set or reply is lost.
Each of 3 and 4 is counted in :attr:`Outbox.dropped` (``events_dropped`` in the health events).
Besides, only the newest *unsent* health row is kept at all: after an outage nobody needs a backlog of stale fps
figures, and it keeps hours of outage from filling the outbox with health.

When the file is damaged or the disk refuses (see "When things go wrong" below), the outbox heals or says why
it cannot, and every event it could not keep is counted in :meth:`Outbox.losses` (sent in every health event).

When things go wrong
    * **A damaged file** (truncated, zeroed, garbage, a text file, a directory, another program's database, a
      corrupted page, the main file emptied while its WAL holds data): found by a header check and ``PRAGMA
      quick_check`` at start, or by SQLite's error at any later read or write. The damaged file is never
      deleted: it is renamed ``outbox.sqlite3.damaged-<UTC time>`` (with its ``-wal``/``-shm``), every row that
      can still be read is copied into a fresh outbox, and one log line says how many were saved and how many
      could not be read (``events_unreadable``).
    * **A journal (WAL) cut short or removed** after a crash: SQLite silently ignores what is missing. The
      outbox notices (a WAL that ends mid-frame; a file that was left open but has no WAL) and says that the
      events of the last moments before the crash may be lost (``outbox_damaged``).
    * **A full disk** (or any other write the disk refuses): reps, sets, replies and movements not counted wait in
      memory (at most ``memory_max``; beyond that the oldest is lost and counted in ``events_dropped``), only the
      newest state and health snapshot wait beside them (older ones are counted in ``snapshots_skipped``), the
      pump keeps sending from disk and memory alike, and every second or so the outbox tries the disk again; once
      it takes writes, what waited in memory is written, in order. Events still in memory when the process ends are
      lost, and :meth:`Outbox.report` says so.
    * **Two processes on one state folder**: :class:`StateFolderLock` (an ``flock`` on
      ``<state_dir>/rackwatch.lock``) lets the second one stop at once with :class:`StateFolderInUse`.

The WAL is kept small (a checkpoint every ~100 pages and ``journal_size_limit``), so a nearly full SD card is
not filled by the journal itself.

The class is thread-safe (one connection, one lock): the caller's thread adds, the MQTT link's thread reads and
deletes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 20_000
# Events other than snapshots kept in memory while the disk refuses writes (hours of lifting at a rep every few
# seconds).
DEFAULT_MEMORY_MAX = 2_000
# Momentary pictures of the rack: the newest one is what counts, so they are not worth an fsync each.
SNAPSHOTS = frozenset(("health", "state"))
# Cheapest to lose first: see the module docstring.
_DROP_ORDER = ("health", "state", "not_counted")

# The WAL is checkpointed into the main file every this many pages (SQLite's default is 1000, ~4 MB), and
# truncated back to this many bytes after a checkpoint: a nearly full SD card is not filled by the journal.
WAL_AUTOCHECKPOINT_PAGES = 100
JOURNAL_SIZE_LIMIT = 512 * 1024
# How often a disk that refused a write is tried again.
RETRY_EVERY_S = 1.0
# Damaged files set aside by one process at most; beyond, the card is failing and events wait in memory.
MAX_HEALS = 5

_SQLITE_HEADER = b"SQLite format 3\x00"
_WAL_MAGIC = (0x377F0682, 0x377F0683)
_COLUMNS = ("seq", "kind", "event_id", "topic", "payload", "qos", "retain")
_SCHEMA = """
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
"""
_OUR_TABLES = {"outbox", "counters", "memory", "sqlite_sequence"}

# The losses and troubles reported in health events (see :meth:`Outbox.losses` and docs/mqtt.md).
LOSS_COUNTERS = ("events_dropped", "events_unreadable", "events_refused", "outbox_damaged", "snapshots_skipped")


class OutboxError(RuntimeError):
    """The outbox cannot be used at all; the message says why and what to do."""


class StateFolderInUse(OutboxError):
    """Another process (a second ``rackwatch run``) holds the state folder."""


@dataclass(frozen=True, order=True)
class OutboxEntry:
    """One waiting message: ``seq`` gives the order; ``topic``/``payload``/``qos``/``retain`` say how to send it."""

    seq: int
    kind: str = field(compare=False)
    event_id: str = field(compare=False)
    topic: str = field(compare=False)
    payload: bytes = field(compare=False)
    qos: int = field(compare=False)
    retain: bool = field(compare=False)


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


# -- the state folder lock --------------------------------------------------------------------------------------------

class StateFolderLock:
    """An exclusive ``flock`` on ``<state_dir>/rackwatch.lock``, held while the process runs.

    Two rackwatch processes on one folder would send the same events twice and fight over the settings; the
    second one stops at once with :class:`StateFolderInUse` instead. The kernel releases the lock when the
    process ends, however it ends (``kill -9``, power cut), so a stale lock file never blocks a restart.
    """

    FILENAME = "rackwatch.lock"

    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / self.FILENAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode("ascii", "replace").strip()
            os.close(self._fd)
            self._fd = None
            who = f"another rackwatch (process {holder})" if holder.isdigit() else "another rackwatch"
            raise StateFolderInUse(
                f"{who} is using the state folder {self.path.parent} (it holds {self.path.name}). Two racks on "
                "one folder would send the same events twice: stop the other one first (e.g. `systemctl stop "
                "rackwatch`), or give this one its own folder with --state-dir.") from None
        try:   # who holds it, for the message above; on a full disk the lock holds without it
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)   # closing the descriptor releases the flock
            self._fd = None

    def __del__(self) -> None:   # an outbox dropped without close() must not keep its folder locked
        try:
            self.release()
        except OSError:
            pass


# -- finding damage ---------------------------------------------------------------------------------------------------

class _Damaged(Exception):
    """The outbox file cannot be trusted; the message says how, in plain words."""


def _is_damage(exc: BaseException) -> bool:
    """Is this SQLite error a damaged file (rather than a disk that refuses, or a busy lock)?"""
    if isinstance(exc, _Damaged):
        return True
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or (
        isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc))


def _what_is_wrong_before_opening(path: Path) -> str | None:
    """Damage SQLite would not notice, or would "fix" by starting an empty database over the old one."""
    wal = Path(f"{path}-wal")
    if not path.exists() and not path.is_symlink():
        return "the main file is missing while its journal (-wal) holds data" if _wal_has_commits(wal) else None
    if not path.is_file():
        return "it is not a file (a directory or something else is in its place)"
    size = path.stat().st_size
    if size == 0:
        # (A WAL without a whole commit is what a first start on a full disk leaves: nothing was lost there.)
        return "the main file is empty while its journal (-wal) holds data" if _wal_has_commits(wal) else None
    with open(path, "rb") as f:
        header = f.read(100)
    if header[:16] != _SQLITE_HEADER:
        if not header.strip(b"\x00"):
            return "its first bytes are all zeros"
        return "it is not an SQLite database (wrong header)"
    if len(header) < 100:
        return "it is cut short (shorter than its own header)"
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or size % page_size:
        return f"it is cut short ({size} bytes is not a whole number of {page_size}-byte pages)"
    return None


def _wal_has_commits(wal: Path) -> bool:
    """Does the WAL hold at least one whole committed transaction (a frame of the current salt marked commit)?"""
    try:
        with open(wal, "rb") as f:
            header = f.read(32)
            if len(header) < 32 or struct.unpack(">I", header[:4])[0] not in _WAL_MAGIC:
                return False
            page_size = struct.unpack(">I", header[8:12])[0]
            if page_size < 512:
                return False
            while frame := f.read(24):
                if len(frame) < 24 or frame[8:16] != header[16:24]:
                    return False
                if struct.unpack(">I", frame[4:8])[0]:   # "database size after commit": a commit frame
                    return True
                f.seek(page_size, os.SEEK_CUR)
    except OSError:
        return False
    return False


def _journal_cut_short(path: Path) -> str | None:
    """A WAL that ends in the middle of a frame: the commits in the torn part are gone (SQLite says nothing)."""
    wal = Path(f"{path}-wal")
    if not wal.is_file():
        return None
    size = wal.stat().st_size
    if size == 0:
        return None
    with open(wal, "rb") as f:
        header = f.read(32)
    if len(header) < 32 or struct.unpack(">I", header[:4])[0] not in _WAL_MAGIC:
        return "its journal (-wal) has a broken header"
    page_size = struct.unpack(">I", header[8:12])[0]
    if page_size < 512 or (size - 32) % (24 + page_size):
        return "its journal (-wal) ends in the middle of a page (cut short by a power cut, a full disk or a copy)"
    return None


@dataclass
class _Salvage:
    entries: list[OutboxEntry]
    counters: dict[str, int]
    last_state: tuple[str, bytes] | None
    unreadable: int


def _salvage(path: Path) -> _Salvage:
    """Every row of a damaged outbox that can still be read, with its counters and last state.

    A corrupted page hides the rows on it, and may break a scan in the middle; so the rows are looked for three
    ways (forwards, backwards, through the index) and then read one by one. Rows the index knows but that cannot
    be read are counted as unreadable.
    """
    found = _Salvage([], {}, None, 0)
    if not path.is_file():
        return found
    # SQLite may tidy up (even delete) a journal it finds odd when it opens a file: read a copy, so that the file
    # kept for inspection stays exactly as it was found.
    with tempfile.TemporaryDirectory(prefix="rackwatch-salvage-") as scratch:
        copy = Path(scratch) / path.name
        try:
            for suffix in ("", "-wal"):
                if Path(f"{path}{suffix}").is_file():
                    shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        except OSError:
            return found   # nowhere to copy it to (a full disk): the kept file is all there is
        _read_what_can_be_read(copy, found)
    return found


def _read_what_can_be_read(path: Path, found: _Salvage) -> None:
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return
    try:
        seqs: set[int] = set()
        for sql in ("SELECT seq FROM outbox NOT INDEXED ORDER BY seq",
                    "SELECT seq FROM outbox NOT INDEXED ORDER BY seq DESC",
                    "SELECT seq FROM outbox INDEXED BY outbox_kind WHERE kind IS NOT NULL"):
            try:
                for (seq,) in db.execute(sql):
                    if isinstance(seq, int):
                        seqs.add(seq)
            except sqlite3.Error:
                pass
        for seq in sorted(seqs):
            try:
                row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE seq = ?", (seq,)).fetchone()
                found.entries.append(_entry(row))
            except (sqlite3.Error, TypeError, ValueError):
                found.unreadable += 1
        try:
            found.counters = {name: int(value) for name, value in db.execute("SELECT name, value FROM counters")}
        except (sqlite3.Error, TypeError, ValueError):
            pass
        try:
            row = db.execute("SELECT value FROM memory WHERE name = 'last_state'").fetchone()
            if row:
                saved = json.loads(row[0])
                found.last_state = (saved["topic"], saved["payload"].encode("utf-8"))
        except (sqlite3.Error, TypeError, ValueError, KeyError):
            pass
    finally:
        db.close()


def _entry(row: tuple) -> OutboxEntry:
    """A row as an entry, refusing values a damaged page may hold (wrong types, impossible QoS)."""
    seq, kind, event_id, topic, payload, qos, retain = row
    if not (isinstance(seq, int) and isinstance(kind, str) and isinstance(topic, str) and topic
            and isinstance(payload, (bytes, str)) and qos in (0, 1, 2)):
        raise ValueError(f"outbox row {seq!r} holds values no event has")
    payload = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    return OutboxEntry(seq, kind, str(event_id), topic, payload, int(qos), bool(retain))


# -- the outbox -------------------------------------------------------------------------------------------------------

class Outbox:
    """An ordered, bounded, crash-safe queue of outgoing MQTT messages in ``<state_dir>/outbox.sqlite3``.

    ``lock=True`` (the default) holds the :class:`StateFolderLock` of ``state_dir`` until :meth:`close`.
    """

    FILENAME = "outbox.sqlite3"

    def __init__(self, state_dir: str | Path, *, max_events: int = DEFAULT_MAX_EVENTS, synchronous: str = "FULL",
                 memory_max: int = DEFAULT_MEMORY_MAX, lock: bool = True):
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / self.FILENAME
        self.max_events = max_events
        self.memory_max = max(1, memory_max)
        self._synchronous = synchronous.upper()   # for the events that happen once
        self._level: str | None = None             # the level the connection is set to now
        self._lock = threading.RLock()
        self._folder_lock = StateFolderLock(self.state_dir) if lock else None
        self._db: sqlite3.Connection | None = None
        # Rows on disk, counted here rather than by SQL at every add: COUNT(*) reads the whole table.
        self._rows = 0
        self._next_seq = 1
        self._counters: dict[str, int] = {}
        self._this_run: dict[str, int] = {}        # what this process added to the counters, for the exit message
        self._dirty: set[str] = set()              # counters changed since they were last written
        self._last_state: tuple[str, bytes] | None = None
        self._waiting: deque[OutboxEntry] = deque()   # events the disk refused, in order, waiting in memory
        self._acked: set[int] = set()                 # rows acknowledged whose deletion the disk refused
        self.disk_error: str | None = None            # why the disk refuses writes now, in words; None if it takes them
        self._retry_at = 0.0
        self.set_aside: list[Path] = []               # damaged files moved aside by this process
        try:
            self._open()
        except BaseException:
            if self._folder_lock:
                self._folder_lock.release()
            raise

    # -- opening, healing ----------------------------------------------------------------------------------------

    def _open(self) -> None:
        problem = _what_is_wrong_before_opening(self.path)
        torn = None if problem else _journal_cut_short(self.path)
        wal = Path(f"{self.path}-wal")
        had_journal = wal.is_file() and wal.stat().st_size > 0
        if problem:
            self._heal(problem)
            return
        try:
            self._connect()
        except (sqlite3.Error, _Damaged) as exc:
            if not _is_damage(exc):
                self._disk_refused(exc)   # e.g. a full disk and no outbox yet: events wait in memory
                return
            self._heal(str(exc))
            return
        if torn:
            self._journal_lost(torn)
        elif not had_journal and self._left_open():
            self._journal_lost("the previous run did not close it, yet its journal (-wal) is missing")
        self._mark_open()

    def _connect(self) -> None:
        """Open the file, check it, load what it holds. Raises :class:`_Damaged` or ``sqlite3.Error``.

        On a full disk SQLite cannot make the WAL's shared-memory file (``-shm``, 32 KiB), so the events already on
        disk could not even be read and sent. Then the file is opened in exclusive locking mode, which keeps that
        index in memory instead (this process holds the folder's lock anyway; other programs cannot read the
        outbox until the next start).
        """
        try:
            self._connect_with()
        except sqlite3.Error as exc:
            if _is_damage(exc):
                raise
            self._connect_with(exclusive=True)
            log.warning("the outbox %s was opened without its shared-memory file (%s); other programs cannot "
                        "read it until rackwatch restarts", self.path, exc)

    def _connect_with(self, exclusive: bool = False) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        try:
            if exclusive:
                db.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise OutboxError(f"could not put the outbox {self.path} in WAL mode (got {mode!r}); is the state "
                                  "folder on a file system that supports it? Give another one with --state-dir.")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            check = [row[0] for row in db.execute("PRAGMA quick_check")]
            if check != ["ok"]:
                raise _Damaged("SQLite's check found damage: " + "; ".join(map(str, check[:2])))
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables - _OUR_TABLES:
                raise _Damaged(f"it is another program's database (tables {', '.join(sorted(tables - _OUR_TABLES))})")
            if "outbox" in tables:
                columns = tuple(row[1] for row in db.execute("PRAGMA table_info(outbox)"))
                if columns != _COLUMNS:
                    raise _Damaged(f"its outbox table has other columns ({', '.join(columns)})")
            db.executescript(_SCHEMA)
            rows = db.execute("SELECT COUNT(*), MAX(seq) FROM outbox").fetchone()
            sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            counters = dict(db.execute("SELECT name, value FROM counters"))
            state = db.execute("SELECT value FROM memory WHERE name = 'last_state'").fetchone()
        except BaseException:
            db.close()
            raise
        self._db, self._level = db, None
        self._rows = rows[0]
        self._next_seq = max(self._next_seq, (rows[1] or 0) + 1, (sequence[0] if sequence else 0) + 1)
        self._counters = {**counters, **self._counters}
        if state and self._last_state is None:
            try:
                saved = json.loads(state[0])
                self._last_state = (saved["topic"], saved["payload"].encode("utf-8"))
            except (TypeError, ValueError, KeyError, AttributeError):
                pass   # only a republish is lost; the next state event replaces it

    def _drop_connection(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _heal(self, reason: str) -> None:
        """Move the damaged file aside (never delete it), copy what can be read into a fresh outbox."""
        if len(self.set_aside) >= MAX_HEALS:
            # A card that damages every fresh file too: stop making copies, keep the events in memory, say so.
            self._disk_refused(OSError(f"the outbox was damaged again ({reason}) after {MAX_HEALS} fresh starts; "
                                       "the SD card may be failing"))
            self._drop_connection()
            return
        self._drop_connection()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while kept.exists() or kept.is_symlink():
            n += 1
            kept = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        try:
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{self.path}{suffix}")
                if source.exists() or source.is_symlink():
                    source.rename(f"{kept}{suffix}")
        except OSError as exc:
            raise OutboxError(f"the outbox {self.path} is damaged ({reason}) and could not be moved aside "
                              f"({exc.strerror or exc}). Move it away by hand (keep it: it may hold unsent reps) "
                              "and start rackwatch again.") from None
        self.set_aside.append(kept)
        saved = _salvage(kept)
        self._counters = {**saved.counters, **self._counters}
        if self._last_state is None:
            self._last_state = saved.last_state
        self._next_seq = max([self._next_seq, *(e.seq + 1 for e in saved.entries)])
        self._bump("outbox_damaged")
        self._bump("events_unreadable", saved.unreadable)
        lost = (f"{saved.unreadable} more could not be read and are lost" if saved.unreadable
                else "any other event it may hold could not be read")
        log.error("the outbox %s was damaged (%s): moved it aside to %s (kept for inspection) and started a fresh "
                  "one; %d waiting event(s) were saved into it, %s.", self.path, reason, kept.name,
                  len(saved.entries), lost)
        try:
            self._connect()
        except (sqlite3.Error, _Damaged) as exc:
            self._disk_refused(exc)
        # Before anything newer; written by _retry. Rows the broker acknowledged meanwhile are not sent again.
        self._waiting.extendleft(reversed([e for e in saved.entries if e.seq not in self._acked]))
        self._acked.clear()
        if self._db is not None:
            self._retry(force=True)
            self._mark_open()

    def _journal_lost(self, reason: str) -> None:
        self._bump("outbox_damaged")
        log.error("the outbox %s was not closed cleanly and %s: events written in the last moments before that "
                  "crash may be lost (SQLite cannot tell which). Carrying on with the rest.", self.path, reason)

    def _left_open(self) -> bool:
        return self._db.execute("SELECT 1 FROM memory WHERE name = 'open'").fetchone() is not None

    def _mark_open(self) -> None:
        """Note in the main file itself that it is in use, so a journal that vanishes after a crash is noticed."""
        try:
            self._db.execute("INSERT OR REPLACE INTO memory (name, value) VALUES ('open', ?)", (str(os.getpid()),))
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._write_counters_now()
        except sqlite3.Error as exc:
            self._disk_refused(exc)

    def _write_counters_now(self) -> None:
        if self._dirty and self._db is not None:
            with self._transaction():
                pass   # _transaction writes the changed counters

    # -- writing -------------------------------------------------------------------------------------------------

    def add(self, event: dict[str, Any], topic: str, *, qos: int = 1, retain: bool = False) -> int:
        """Write one event (a dict from :mod:`rackwatch.events`) to disk; return its sequence number.

        When this returns, the event is committed: it survives the process being killed. A rep, set or reply
        is also fsynced (``synchronous=FULL``), so it survives a power cut; see the module docstring. If the disk
        refuses the write (full), the event waits in memory instead and :attr:`disk_error` says why.
        """
        kind = str(event.get("type", "event"))
        payload = to_json(event)
        with self._lock:
            entry = OutboxEntry(self._next_seq, kind, str(event.get("id", "")), topic, payload, int(qos),
                                bool(retain))
            self._next_seq += 1
            if kind == "state":
                self._last_state = (topic, payload)
            if self._waiting or self._db is None:
                self._retry()
            if self._waiting or self._db is None or not self._write([entry]):
                self._keep_in_memory(entry)
            return entry.seq

    def remove(self, *seqs: int) -> None:
        """Forget rows: the broker has acknowledged them (or refused them for good). One commit for all."""
        if not seqs:
            return
        with self._lock:
            in_memory = {e.seq for e in self._waiting} & set(seqs)
            if in_memory:
                self._waiting = deque(e for e in self._waiting if e.seq not in in_memory)
            on_disk = [seq for seq in seqs if seq not in in_memory]
            if not on_disk:
                return
            if self._waiting or self._db is None or not self._write([], on_disk):
                self._acked.update(on_disk)   # deleted once the disk takes writes again

    def count(self, name: str, by: int = 1) -> None:
        """Add ``by`` to a named counter kept in the same file (e.g. messages the broker refused)."""
        with self._lock:
            self._bump(name, by)
            if self._db is not None and not self._waiting:
                self._write([])

    def retry(self, force: bool = False) -> bool:
        """Write what waits in memory if the disk takes it now; ``True`` once nothing waits. Cheap to call often
        (the disk is tried about once a second, or now if ``force``)."""
        with self._lock:
            return self._retry(force)

    def _retry(self, force: bool = False) -> bool:
        if not self._waiting and not self._acked and self._db is not None and self.disk_error is None:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + RETRY_EVERY_S
        if self._db is None:
            try:
                self._connect()
            except (sqlite3.Error, _Damaged) as exc:
                if _is_damage(exc):
                    self._heal(str(exc))
                return self._db is not None and not self._waiting
            self._mark_open()
        waiting, acked = list(self._waiting), sorted(self._acked)
        # With nothing else to write, the "open" mark is the probe: an empty commit would succeed on a full disk.
        if not self._write(waiting, acked, healing=False, mark_open=True):
            return False
        self._waiting.clear()
        self._acked.difference_update(acked)
        if self.disk_error is not None:
            log.warning("the disk takes writes again: %d event(s) that waited in memory are in the outbox %s now",
                        len([e for e in waiting if e.kind not in SNAPSHOTS]), self.path)
            self.disk_error = None
        return True

    def _write(self, entries: list[OutboxEntry], removals: list[int] = (), *, healing: bool = True,
               mark_open: bool = False) -> bool:
        """One transaction; ``False`` if the disk refused it (noted in :attr:`disk_error`). Heals a damaged file."""
        try:
            self._commit(entries, removals, mark_open)
            return True
        except sqlite3.Error as exc:
            if _is_damage(exc) and healing:
                self._heal(str(exc))
                return self._db is not None and not self._waiting and self._write(entries, removals, healing=False)
            self._disk_refused(exc)
            return False

    def _commit(self, entries: list[OutboxEntry], removals: list[int], mark_open: bool = False) -> None:
        if self._db is None:
            raise sqlite3.OperationalError("the outbox is not open")
        saved = dict(self._counters), set(self._dirty), dict(self._this_run)
        try:
            with self._transaction(durable=any(e.kind not in SNAPSHOTS for e in entries)):
                if mark_open:
                    self._db.execute("INSERT OR REPLACE INTO memory (name, value) VALUES ('open', ?)",
                                     (str(os.getpid()),))
                for seq in removals:
                    self._rows -= self._db.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
                for e in entries:
                    if e.kind == "health":
                        # Only the newest health snapshot is worth sending (see module docstring).
                        self._rows -= self._db.execute("DELETE FROM outbox WHERE kind = 'health'").rowcount
                    while self._rows >= self.max_events:
                        self._drop_one()
                    self._db.execute(f"INSERT INTO outbox ({', '.join(_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                                     (e.seq, e.kind, e.event_id, e.topic, e.payload, e.qos, int(e.retain)))
                    if e.kind == "state":
                        # Remember the newest state, so it can be republished (retained) after every reconnect.
                        self._db.execute("INSERT OR REPLACE INTO memory (name, value) VALUES ('last_state', ?)",
                                         (json.dumps({"topic": e.topic, "payload": e.payload.decode("utf-8")}),))
                    self._rows += 1
        except BaseException:
            self._counters, self._dirty, self._this_run = saved
            raise

    def _drop_one(self) -> None:
        for kind in _DROP_ORDER:
            row = self._db.execute("SELECT seq FROM outbox WHERE kind = ? ORDER BY seq LIMIT 1", (kind,)).fetchone()
            if row:
                self._db.execute("DELETE FROM outbox WHERE seq = ?", row)
                self._bump(f"dropped_{kind}")
                if kind not in SNAPSHOTS:
                    self._bump("dropped")
                self._rows -= 1
                return
        row = self._db.execute("SELECT seq, kind FROM outbox ORDER BY seq LIMIT 1").fetchone()
        self._db.execute("DELETE FROM outbox WHERE seq = ?", (row[0],))
        self._bump("dropped")
        log.warning("the outbox is full (%d events): dropped the oldest %s to make room", self.max_events, row[1])
        self._rows -= 1

    def _keep_in_memory(self, entry: OutboxEntry) -> None:
        """The disk refused ``entry``: it waits in memory (snapshots: only the newest of each kind)."""
        if entry.kind in SNAPSHOTS:
            older = [e for e in self._waiting if e.kind == entry.kind]
            for e in older:
                self._waiting.remove(e)
            self._bump("snapshots_skipped", len(older))
        else:
            events = [e for e in self._waiting if e.kind not in SNAPSHOTS]
            if len(events) >= self.memory_max:
                # The same order as on disk: a movement not counted goes before a rep, a set or a reply.
                oldest = next((e for e in events if e.kind == "not_counted"), events[0])
                self._waiting.remove(oldest)
                self._bump("dropped")
                log.error("%d events wait in memory because the disk refuses writes (%s): dropped the oldest %s",
                          len(events), self.disk_error, oldest.kind)
        self._waiting.append(entry)

    def _disk_refused(self, exc: BaseException) -> None:
        reason = str(exc) or type(exc).__name__
        if self.disk_error is None:
            log.error("the outbox %s cannot be written (%s): reps, sets, replies and movements not counted wait in "
                      "memory (up to %d), of the state and health snapshots only the newest is kept; trying again "
                      "every %g s. Free some space on that disk.", self.path, reason, self.memory_max, RETRY_EVERY_S)
        self.disk_error = reason
        self._retry_at = time.monotonic() + RETRY_EVERY_S

    # -- reading -------------------------------------------------------------------------------------------------

    def peek(self, after: int = 0, limit: int = 100) -> list[OutboxEntry]:
        """The oldest waiting rows with ``seq > after``, in order (nothing is removed)."""
        with self._lock:
            rows = self._read(after, limit + len(self._acked))
            entries = [e for e in rows if e.seq not in self._acked]
            entries += [e for e in self._waiting if e.seq > after]
            return sorted(entries)[:limit]

    def _read(self, after: int, limit: int, healing: bool = True) -> list[OutboxEntry]:
        if self._db is None:
            return []
        try:
            rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                    (after, limit)).fetchall()
            return [_entry(row) for row in rows]
        except (sqlite3.Error, ValueError) as exc:
            if not healing:
                log.error("could not read the outbox %s (%s)", self.path, exc)
                return []
            if isinstance(exc, ValueError) or _is_damage(exc):
                self._heal(str(exc))
            return self._read(after, limit, healing=False)

    def __iter__(self) -> Iterator[OutboxEntry]:
        after = 0
        while batch := self.peek(after):
            yield from batch
            after = batch[-1].seq

    def __len__(self) -> int:
        with self._lock:
            return max(0, self._rows - len(self._acked)) + len(self._waiting)

    @property
    def depth(self) -> int:
        """How many events wait to be acknowledged, on disk or in memory (shown in health events)."""
        return len(self)

    @property
    def in_memory(self) -> int:
        """Events waiting in memory because the disk refused them."""
        return len(self._waiting)

    def counter(self, name: str) -> int:
        with self._lock:
            return self._counters.get(name, 0)

    @property
    def dropped(self) -> int:
        """Reps, sets, replies or movements not counted lost because the outbox (or the memory beside it) was
        full."""
        return self.counter("dropped")

    def losses(self) -> dict[str, Any]:
        """What went wrong, as counted since the outbox file was made; the health event carries these fields.

        ``events_dropped``: reps, sets, replies and movements not counted dropped because the outbox was full (or
        the memory beside it, on a full disk); ``events_unreadable``: events lost to a damaged file (or rows no
        broker could take); ``events_refused``: messages the broker refused for good; ``outbox_damaged``: times the file was found
        damaged (set aside) or its journal cut short; ``snapshots_skipped``: state/health snapshots not kept
        because the disk was full;
        ``disk_full``: the disk refuses writes right now; ``events_in_memory``: events waiting in memory for it.
        """
        with self._lock:
            return {"events_dropped": self.counter("dropped"), "events_unreadable": self.counter("events_unreadable"),
                    "events_refused": self.counter("refused"), "outbox_damaged": self.counter("outbox_damaged"),
                    "snapshots_skipped": self.counter("snapshots_skipped"), "disk_full": self.disk_error is not None,
                    "events_in_memory": len([e for e in self._waiting if e.kind not in SNAPSHOTS])}

    def losses_this_run(self) -> dict[str, int]:
        """The counts of :meth:`losses` that this process added (damage found at start included)."""
        with self._lock:
            names = {"events_dropped": "dropped", "events_unreadable": "events_unreadable",
                     "events_refused": "refused", "outbox_damaged": "outbox_damaged",
                     "snapshots_skipped": "snapshots_skipped"}
            return {key: self._this_run.get(name, 0) for key, name in names.items()}

    def last_state(self) -> tuple[str, bytes] | None:
        """(topic, payload) of the newest state event ever added, even if already sent; ``None`` if none yet."""
        with self._lock:
            return self._last_state

    def has_pending(self, kind: str) -> bool:
        with self._lock:
            if any(e.kind == kind for e in self._waiting):
                return True
            if self._db is None:
                return False
            try:
                return self._db.execute("SELECT 1 FROM outbox WHERE kind = ? LIMIT 1", (kind,)).fetchone() is not None
            except sqlite3.Error:
                return False

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _bump(self, name: str, by: int = 1) -> None:
        if by:
            self._counters[name] = self._counters.get(name, 0) + by
            self._this_run[name] = self._this_run.get(name, 0) + by
            self._dirty.add(name)

    def _transaction(self, durable: bool = False):
        """One atomic commit; fsynced only if ``durable`` (see the module docstring)."""
        level = self._synchronous if durable else "NORMAL"
        if level != self._level:
            self._db.execute(f"PRAGMA synchronous={level}")
            self._level = level
        return _Transaction(self)

    def _recount(self) -> None:
        try:
            self._rows = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except (sqlite3.Error, AttributeError):
            pass

    def close(self) -> None:
        """Write what waits in memory if the disk lets us, note the clean close, release the folder."""
        with self._lock:
            if self._db is not None:
                self._retry(force=True)
                if not self._waiting:
                    try:
                        self._db.execute("DELETE FROM memory WHERE name = 'open'")
                    except sqlite3.Error:
                        pass
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None
            if self._folder_lock:
                self._folder_lock.release()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK on error): the writes inside are one atomic, durable step.

    The counters changed meanwhile are written in the same commit.
    """

    def __init__(self, box: Outbox):
        self._box = box
        self._db = box._db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                for name in self._box._dirty:
                    self._db.execute("INSERT OR REPLACE INTO counters (name, value) VALUES (?, ?)",
                                     (name, self._box._counters[name]))
                self._db.execute("COMMIT")
                self._box._dirty.clear()
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:   # SQLite rolls back by itself after some errors (a full disk)
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._box._recount()
