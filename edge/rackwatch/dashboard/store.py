"""The dashboard's storage: every message from the racks, checked, stored once, and read back for the pages.

``Store(url)`` opens SQLite (``sqlite:///path/to/file.db``, the default) or PostgreSQL
(``postgresql+psycopg://user@host/db``) and brings the schema up to date with Alembic (``migrate()``).
``ingest(messages)`` takes a batch of MQTT messages in one transaction:

- the topic must be ``<root>/<rack>/<leaf>``; the payload must fit the contract (``rackwatch.contract``) and name
  the same rack as the topic. Anything else is counted and kept aside in ``invalid_messages``, never raised;
- an event is inserted by id with "insert or ignore": the copy QoS 1 may deliver twice (or a second dashboard
  process) finds the id taken and changes nothing;
- availability (``online``/``offline``, the broker's last will included) and the newest state and health are kept
  on the rack's row; an older state arriving late (a retained copy) does not replace a newer one;
- a movement the rack did not count (``not_counted``) is kept in the events table only; the newest of each rack is
  read back from there for the board (:meth:`Store.racks`), and the latest ones for the rack's page;
- the alert rules (``alerts``) run on new events, and alerts are stored once by key.

Everything here is synchronous; the ingester runs it in a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

import orjson
from sqlalchemy import create_engine, delete, event, func, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from .alerts import AlertRules, NewAlert, health_alert, offline_alert, rep_alerts
from .tables import (Alert, Command, Event, Health, InvalidMessage, Rack, Reply, Rep, SetSummary, SignIn,
                     User)

EVENT_LEAVES = ("rep", "not_counted", "set", "state", "health", "reply")
MAX_KEPT_PAYLOAD = 4096


class StoreError(Exception):
    """The database cannot be used (bad URL, server down); the message says which and what to do."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def parse_time(text: str) -> datetime:
    """An event's ISO 8601 time as naive UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def database_url(text: str) -> str:
    """``--db`` as given: a SQLAlchemy URL, or a plain file path meaning a SQLite file."""
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


@dataclass(frozen=True)
class Message:
    """One MQTT message as the ingester received it."""
    topic: str
    payload: bytes
    received_at: datetime = field(default_factory=utcnow)


@dataclass
class IngestResult:
    """What a batch did: the counts, and the alerts raised."""
    stored: int = 0
    duplicates: int = 0
    invalid: int = 0
    alerts: list[NewAlert] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Checked:
    """A message read and checked against the contract: what the store writes, and what the board shows before
    it is stored. ``leaf`` is ``availability``, an event kind (``rep``, ``not_counted``, ``set``, ``state``,
    ``health``, ``reply``) or None for a command to a rack (not the racks' news); ``text`` is the payload as
    received (``online`` or ``offline`` for availability), ``payload`` its decoded event; ``when`` is the event's
    own time (availability: when it arrived). ``error`` says why a message breaks the contract (it is kept aside,
    never shown)."""
    message: Message
    rack: str = ""
    leaf: str | None = None
    text: str = ""
    payload: Any = None
    when: datetime | None = None
    error: str | None = None


def check(message: Message, topic_root: str = "rackwatch") -> Checked:
    """Read a message off ``<root>/<rack>/<leaf>``: decode it once and check it against the contract. Pure (no
    database): the ingester runs it as each message arrives."""
    parts = message.topic.split("/")
    if len(parts) >= 3 and parts[0] == topic_root and parts[2] == "cmd":
        return Checked(message, parts[1])
    if len(parts) != 3 or parts[0] != topic_root or not parts[1]:
        return Checked(message, error="the topic is not <root>/<rack>/<kind>")
    rack, leaf = parts[1], parts[2]
    if leaf == "availability":
        text = message.payload.decode("utf-8", "replace")
        if text not in ("online", "offline"):
            return Checked(message, rack, error="availability must be 'online' or 'offline'")
        return Checked(message, rack, leaf, text, text == "online", message.received_at)
    if leaf not in EVENT_LEAVES:
        return Checked(message, rack, error=f"unknown topic kind {leaf!r}")
    try:
        text = message.payload.decode("utf-8")
        payload = orjson.loads(text)   # (about four times as fast as json.loads, the same result)
    except (UnicodeDecodeError, ValueError) as exc:
        return Checked(message, rack, error=f"not UTF-8 JSON: {exc}")
    error = contract_error(payload, leaf, rack, message.payload)
    if error:
        return Checked(message, rack, error=error)
    return Checked(message, rack, leaf, text, payload, parse_time(payload["time"]))


class Store:
    def __init__(self, url: str, *, topic_root: str = "rackwatch", rules: AlertRules | None = None):
        self.url = database_url(url)
        self.topic_root = topic_root
        self.rules = rules or AlertRules()
        try:
            parsed = make_url(self.url)
        except Exception as exc:
            raise StoreError(f"--db {url!r} is not a database address ({exc}). Give a file path for SQLite, or "
                             "postgresql+psycopg://USER@HOST/DATABASE.") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"--db {url!r}: the dashboard stores in SQLite or PostgreSQL, not {self.dialect}.")
        if self.dialect == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(self.url, pool_pre_ping=True)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = sessionmaker(self.engine, expire_on_commit=False)
        # The racks' newest state, rep and health, decoded, by (rack, column): (the JSON text, its value). The
        # rows are read again for every batch (another dashboard process may have changed them), but a text seen
        # before is not decoded again. Used by ``ingest`` only, which runs one batch at a time.
        self._decoded: dict[tuple[str, str], tuple[str, Any]] = {}

    # -- schema ------------------------------------------------------------------------------------------------

    def migrate(self) -> None:
        """Create or upgrade the tables to the newest migration (safe to run at every start)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except Exception as exc:
            if "OperationalError" in type(exc).__name__ or "connect" in str(exc).lower():
                raise StoreError(f"Cannot open the database {self.engine.url.render_as_string()}: "
                                 f"{str(exc).splitlines()[0]}. Check that it runs and that the address is "
                                 "right.") from None
            raise

    def close(self) -> None:
        self.engine.dispose()

    # -- ingestion ----------------------------------------------------------------------------------------------

    def ingest(self, messages: Iterable[Message | Checked]) -> IngestResult:
        """Store a batch in one transaction: every message checked (unless the ingester already did, on arrival:
        :func:`check`), the new events inserted together (one
        ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for the batch), and the rows drawn from them (reps,
        sets, health, replies) inserted together per table."""
        batch = _Batch()
        messages = list(messages)
        with self.session.begin() as db:
            # One query loads the batch's racks, as plain rows (no ORM unit of work per rack at the commit).
            names = {m.rack for m in messages if isinstance(m, Checked) and m.rack} | \
                {m.topic.split("/")[1] for m in messages if isinstance(m, Message) and m.topic.count("/") >= 2}
            racks = Rack.__table__
            batch.racks = {row.rack: _RackRow(row._mapping, self._decoded)
                           for row in db.connection().execute(select(racks).where(racks.c.rack.in_(names)))}
            checked = []
            for message in messages:
                event = self._check(db, message, batch)
                if event is not None:
                    checked.append(event)
            self._store_events(db, checked, batch)
            for table, rows in batch.rows.items():
                if rows:
                    db.connection().execute(table.__table__.insert(), rows)
            _write_racks(db, batch.racks.values())
            self._raise_all(db, batch.alerts, batch.result)
        return batch.result

    def _check(self, db: Session, message: "Message | Checked", batch: "_Batch") -> "Checked | None":
        """A rack's event ready to store, or None: availability is applied here, anything broken kept aside."""
        checked = message if isinstance(message, Checked) else check(message, self.topic_root)
        if checked.error is not None:
            return self._invalid(db, checked.message, checked.error, batch.result)
        if checked.leaf is None:
            return None   # commands to racks (ours or another tool's) are not the racks' messages
        if checked.leaf == "availability":
            return self._availability(db, checked.rack, checked.text == "online", checked.when, batch)
        return checked

    def _store_events(self, db: Session, checked: list["Checked"], batch: "_Batch") -> None:
        """Insert the batch's events by id, all at once; only those that went in change anything else."""
        result = batch.result
        first: dict[str, Checked] = {}
        for event in checked:
            first.setdefault(event.payload["id"], event)
        new_ids: set[str] = set()
        if first:
            rows = [{"id": e.payload["id"], "rack": e.rack, "type": e.leaf, "time": e.when,
                     "received_at": e.message.received_at, "payload": e.text}
                    for e in first.values()]
            new_ids = _insert_many_ignore(db, Event, rows)
        self._count_caves(db, [e for e in first.values() if e.payload["id"] in new_ids], batch)
        for event in checked:
            event_id = event.payload["id"]
            if event_id not in new_ids or first[event_id] is not event:
                result.duplicates += 1   # QoS 1 delivered it twice, or another dashboard process stored it
                continue
            result.stored += 1
            row = self._rack(db, event.rack, batch)
            row.last_seen = max(row.last_seen or event.when, event.when)
            getattr(self, f"_on_{event.leaf}")(db, row, event.payload, event.when, batch, event.text)

    def _count_caves(self, db: Session, new: list["Checked"], batch: "_Batch") -> None:
        """The caves already stored in the sets of the batch's new caved reps (one query for the batch)."""
        from sqlalchemy import tuple_

        sets = {(e.rack, e.payload["set_id"]) for e in new if e.leaf == "rep" and e.payload["verdict"] == "cave"}
        if not sets:
            return
        batch.caves.update(dict.fromkeys(sets, 0))
        counted = db.execute(select(Rep.rack, Rep.set_id, func.count()).where(
            Rep.verdict == "cave", tuple_(Rep.rack, Rep.set_id).in_(sorted(sets))).group_by(Rep.rack, Rep.set_id))
        for rack, set_id, count in counted:
            batch.caves[(rack, set_id)] = count

    def _invalid(self, db: Session, message: Message, error: str, result: IngestResult) -> None:
        result.invalid += 1
        db.add(InvalidMessage(topic=_text(message.topic[:1000]), error=_text(error[:1000]),
                              received_at=message.received_at,
                              payload=_text(message.payload[:MAX_KEPT_PAYLOAD].decode("utf-8", "backslashreplace"))))

    def keep_aside(self, message: Message, error: str) -> IngestResult:
        """Keep a message that could not be stored (e.g. text PostgreSQL refuses) with the reason."""
        result = IngestResult()
        with self.session.begin() as db:
            self._invalid(db, message, error, result)
        return result

    def reachable(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except Exception:
            return False

    def _rack(self, db: Session, rack: str, batch: "_Batch") -> "_RackRow":
        row = batch.racks.get(rack)
        if row is None:
            _insert_ignore(db, Rack, {"rack": rack})   # another dashboard process may be adding it too
            racks = Rack.__table__
            found = db.connection().execute(select(racks).where(racks.c.rack == rack)).first()
            row = batch.racks[rack] = _RackRow(found._mapping, self._decoded)
        return row

    def _availability(self, db: Session, rack: str, online: bool, when: datetime, batch: "_Batch") -> None:
        row = self._rack(db, rack, batch)
        if row.online != online or row.availability_at is None:   # a retained copy keeps the time it went
            row.online, row.availability_at = online, when

    def raise_offline_alerts(self, grace_s: float) -> list[NewAlert]:
        """Alert on racks offline for longer than ``grace_s`` (a rack restarting for an update is not news),
        once per time it went offline."""
        result = IngestResult()
        with self.session.begin() as db:
            gone = db.scalars(select(Rack).where(Rack.online.is_(False),
                                                 Rack.availability_at < utcnow() - timedelta(seconds=grace_s)))
            for row in list(gone):
                if not self._open_alert(db, row.rack, "offline"):
                    self._raise(db, offline_alert(row.rack, row.availability_at.isoformat(timespec="seconds")),
                                result)
        return result.alerts

    # The handlers keep the newest state, rep and health on the rack's row as the JSON text received (``text``),
    # and the decoded payload beside it (``_RackRow.keep``: the next health report's alert rules compare with the
    # last one): nothing is encoded or decoded again.

    def _on_state(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        if row.state_time is None or when >= row.state_time:
            row.keep("state", text, payload)
            row.state_time = when

    def _on_rep(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        load = payload.get("load") or {}
        legs = payload["valgus"]
        batch.add(Rep, id=payload["id"], rack=row.rack, set_id=payload["set_id"], rep=payload["rep"], time=when,
             exercise=payload["exercise"], verdict=payload["verdict"], severity=payload["severity"],
             load_value=load.get("value"), units=load.get("units"), one_rm=load.get("one_rm"),
             percent_1rm=load.get("percent_1rm"),
             cave_left=(legs["left"] or {}).get("cave"), cave_right=(legs["right"] or {}).get("cave"),
             severity_left=(legs["left"] or {}).get("severity"),
             severity_right=(legs["right"] or {}).get("severity"),
             depth=payload["depth"], unjudged_reason=payload.get("unjudged_reason"))
        if row.last_rep_time is None or when >= row.last_rep_time:
            row.keep("last_rep", text, payload)
            row.last_rep_time = when
        caves = 0
        if payload["verdict"] == "cave":
            # The set's caves: those stored before this batch (counted for the batch's sets by _count_caves), then
            # this batch's, counted here.
            key = (row.rack, payload["set_id"])
            batch.caves[key] = batch.caves.get(key, 0) + 1
            caves = batch.caves[key]
        for alert in rep_alerts(payload, caves, self.rules):
            batch.alerts.append(alert)

    def _on_not_counted(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        pass   # the events table keeps it (read back by racks() and not_counted())

    def _on_set(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        load = payload.get("load") or {}
        batch.add(SetSummary, id=payload["id"], rack=row.rack, set_id=payload["set_id"], time=when,
             exercise=payload["exercise"], reps=payload["reps"], clean_reps=payload["clean_reps"],
             load_value=load.get("value"), units=load.get("units"),
             percent_1rm=load.get("percent_1rm"), worst_rep=payload["worst_rep"],
             weaker_side=payload["weaker_side"], advice=payload["advice"].get("text"))

    def _on_health(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        batch.add(Health, id=payload["id"], rack=row.rack, time=when, fps=payload["fps"],
             inference_ms=payload["inference_ms"], dropped_frames=payload["dropped_frames"],
             cpu_temp_c=payload["cpu_temp_c"], throttled=payload["throttled"],
             outbox_depth=payload["outbox_depth"])
        if row.health_time is not None and when < row.health_time:
            return   # a late report: history only
        previous = row.decoded("health")
        row.keep("health", text, payload)
        row.health_time = when
        alert = health_alert(payload, previous, self.rules)
        if alert and not any(a.rack == row.rack and a.kind == "unhealthy" for a in batch.alerts) \
                and not self._open_alert(db, row.rack, "unhealthy"):
            batch.alerts.append(alert)

    def _on_reply(self, db, row: "_RackRow", payload, when, batch: "_Batch", text: str) -> None:
        batch.add(Reply, id=payload["id"], rack=row.rack, time=when, command_id=payload["command_id"],
             command=payload["command"], status=payload["status"], reason=payload["reason"])

    def _open_alert(self, db: Session, rack: str, kind: str) -> bool:
        return db.scalar(select(func.count()).select_from(Alert).where(
            Alert.rack == rack, Alert.kind == kind, Alert.acked_at.is_(None))) > 0

    def _raise(self, db: Session, alert: NewAlert, result: IngestResult) -> None:
        self._raise_all(db, [alert], result)

    def _raise_all(self, db: Session, alerts: list[NewAlert], result: IngestResult) -> None:
        """Store the alerts whose key is new (one statement); those stored are the result's new alerts."""
        if not alerts:
            return
        now = utcnow()
        first: dict[str, NewAlert] = {}
        for alert in alerts:
            first.setdefault(alert.key, alert)   # raised twice in a batch (a repeated cave): the first one says it
        stored = _insert_many_ignore(db, Alert, [{"key": a.key, "rack": a.rack, "kind": a.kind, "message": a.message,
                                                  "created_at": now} for a in first.values()], key="key")
        result.alerts += [a for a in first.values() if a.key in stored]

    # -- reading ------------------------------------------------------------------------------------------------

    def racks(self) -> list[dict[str, Any]]:
        with self.session() as db:
            missed = self._newest_not_counted(db)
            return [rack_snapshot(row, missed.get(row.rack)) for row in db.scalars(select(Rack).order_by(Rack.rack))]

    def rack_names(self) -> list[str]:
        """The racks' names, sorted (for a filter: no snapshot, no events read)."""
        with self.session() as db:
            return list(db.scalars(select(Rack.rack).order_by(Rack.rack)))

    def rack(self, rack: str) -> dict[str, Any] | None:
        with self.session() as db:
            row = db.get(Rack, rack)
            return rack_snapshot(row, self._newest_not_counted(db, rack).get(rack)) if row else None

    def _newest_not_counted(self, db: Session, rack: str | None = None) -> dict[str, Event]:
        """The newest not_counted event of each rack (or of ``rack``), by the events' own times."""
        newest = select(Event.rack, func.max(Event.time).label("time")).where(Event.type == "not_counted")
        if rack is not None:
            newest = newest.where(Event.rack == rack)
        newest = newest.group_by(Event.rack).subquery()
        query = select(Event).join(newest, (Event.rack == newest.c.rack) & (Event.time == newest.c.time)).where(
            Event.type == "not_counted")
        return {event.rack: event for event in db.scalars(query)}

    def not_counted(self, rack: str, limit: int = 20) -> list[dict[str, Any]]:
        """The rack's latest movements not counted, newest first: their wire JSON (``time`` as the rack wrote it,
        perhaps with an offset), with ``time_utc``, the stored time (naive UTC) for the pages to show."""
        with self.session() as db:
            query = (select(Event.payload, Event.time).where(Event.rack == rack, Event.type == "not_counted")
                     .order_by(Event.time.desc()).limit(limit))
            return [orjson.loads(payload) | {"time_utc": time} for payload, time in db.execute(query)]

    def alerts(self, *, open_only: bool = False, limit: int = 200) -> list[Alert]:
        with self.session() as db:
            query = select(Alert).order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit)
            if open_only:
                query = query.where(Alert.acked_at.is_(None))
            return list(db.scalars(query))

    def acknowledge(self, alert_id: int, user: str) -> bool:
        """Mark an alert seen by ``user`` (kept with the time); False when it was already acknowledged."""
        with self.session.begin() as db:
            done = db.execute(update(Alert).where(Alert.id == alert_id, Alert.acked_at.is_(None))
                              .values(acked_by=user, acked_at=utcnow()))
            return done.rowcount == 1

    def sets(self, *, rack: str | None = None, day: date | None = None, verdict: str | None = None,
             limit: int = 500) -> list[dict[str, Any]]:
        """Sets seen, newest first, one row per (rack, set id), from their reps and summary (if it came)."""
        with self.session() as db:
            query = (select(Rep.rack, Rep.set_id, func.min(Rep.time), func.max(Rep.time), func.count(),
                            func.sum(_is(Rep.verdict, "cave")), func.sum(_is(Rep.verdict, "clean")),
                            func.sum(_is(Rep.verdict, "unjudged")), func.max(Rep.load_value),
                            func.max(Rep.units), func.max(Rep.percent_1rm))
                     .group_by(Rep.rack, Rep.set_id).order_by(func.min(Rep.time).desc()).limit(limit))
            if rack:
                query = query.where(Rep.rack == rack)
            if day:
                start = datetime.combine(day, datetime.min.time())
                query = query.where(Rep.time >= start, Rep.time < start + timedelta(days=1))
            if verdict == "cave":
                query = query.having(func.sum(_is(Rep.verdict, "cave")) > 0)
            elif verdict == "clean":
                query = query.having(func.sum(_is(Rep.verdict, "clean")) == func.count())
            rows = []
            for (rack_id, set_id, start, end, reps, caves, clean, unjudged, load, units, percent) in db.execute(query):
                rows.append({"rack": rack_id, "set_id": set_id, "start": start, "end": end, "reps": reps,
                             "caves": int(caves or 0), "clean": int(clean or 0), "unjudged": int(unjudged or 0),
                             "load": load, "units": units, "percent_1rm": percent})
            return rows

    def set_detail(self, rack: str, set_id: str) -> tuple[list[Rep], SetSummary | None]:
        with self.session() as db:
            reps = list(db.scalars(select(Rep).where(Rep.rack == rack, Rep.set_id == set_id)
                                   .order_by(Rep.rep, Rep.time)))
            summary = db.scalars(select(SetSummary).where(SetSummary.rack == rack, SetSummary.set_id == set_id)
                                 .order_by(SetSummary.time.desc())).first()
            return reps, summary

    def set_words(self, summary: SetSummary) -> dict[str, Any]:
        """What a set's summary says in words (``remarks`` and ``cues``), from its wire JSON."""
        with self.session() as db:
            payload = orjson.loads(db.scalars(select(Event.payload).where(Event.id == summary.id)).one())
        return {"remarks": payload["remarks"], "cues": payload["cues"]}

    def reps(self, *, rack: str | None = None, day: date | None = None) -> list[Rep]:
        with self.session() as db:
            query = select(Rep).order_by(Rep.time, Rep.rack, Rep.rep)
            if rack:
                query = query.where(Rep.rack == rack)
            if day:
                start = datetime.combine(day, datetime.min.time())
                query = query.where(Rep.time >= start, Rep.time < start + timedelta(days=1))
            return list(db.scalars(query))

    def health_history(self, rack: str, limit: int = 60) -> list[Health]:
        with self.session() as db:
            return list(db.scalars(select(Health).where(Health.rack == rack)
                                   .order_by(Health.time.desc()).limit(limit)))

    def trend(self, rack: str, days: int = 14) -> list[dict[str, Any]]:
        """Per day: sets, reps and caves of a rack, for its trend."""
        with self.session() as db:
            day = func.date(Rep.time)
            query = (select(day, func.count(func.distinct(Rep.set_id)), func.count(),
                            func.sum(_is(Rep.verdict, "cave")))
                     .where(Rep.rack == rack, Rep.time >= utcnow() - timedelta(days=days))
                     .group_by(day).order_by(day))
            return [{"day": str(d), "sets": s, "reps": r, "caves": int(c or 0)} for d, s, r, c in db.execute(query)]

    def invalid_messages(self, limit: int = 50) -> tuple[int, list[InvalidMessage]]:
        with self.session() as db:
            count = db.scalar(select(func.count()).select_from(InvalidMessage))
            rows = list(db.scalars(select(InvalidMessage).order_by(InvalidMessage.id.desc()).limit(limit)))
            return count, rows

    def event_ids(self, kind: str | None = None) -> list[str]:
        """Ids of the stored events (tests and the load test count them)."""
        with self.session() as db:
            query = select(Event.id)
            if kind:
                query = query.where(Event.type == kind)
            return list(db.scalars(query))

    # -- commands -----------------------------------------------------------------------------------------------

    def record_command(self, command_id: str, rack: str, name: str, payload: dict[str, Any], user: str) -> None:
        with self.session.begin() as db:
            db.add(Command(id=command_id, rack=rack, name=name, payload=json.dumps(payload), sent_by=user,
                           sent_at=utcnow()))

    def commands(self, rack: str, limit: int = 20) -> list[dict[str, Any]]:
        """The commands sent to a rack, newest first, each with the rack's reply once it came."""
        with self.session() as db:
            rows = db.execute(select(Command, Reply).outerjoin(Reply, Reply.command_id == Command.id)
                              .where(Command.rack == rack).order_by(Command.sent_at.desc()).limit(limit))
            return [{"id": c.id, "name": c.name, "payload": c.payload, "sent_by": c.sent_by, "sent_at": c.sent_at,
                     "status": r.status if r else None, "reason": r.reason if r else None} for c, r in rows]

    # -- users and sign-in --------------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password_hash: str) -> None:
        with self.session.begin() as db:
            row = db.scalars(select(User).where(User.name == name)).first()
            if row is None:
                db.add(User(name=name, role=role, password_hash=password_hash, created_at=utcnow()))
            else:   # adding a user again sets a new password and role
                row.role, row.password_hash = role, password_hash
                db.execute(delete(SignIn).where(SignIn.user_id == row.id))

    def user(self, name: str) -> User | None:
        with self.session() as db:
            return db.scalars(select(User).where(User.name == name)).first()

    def users(self) -> list[User]:
        with self.session() as db:
            return list(db.scalars(select(User).order_by(User.name)))

    def open_sign_in(self, user_id: int, token: str, csrf: str, hours: float) -> None:
        with self.session.begin() as db:
            db.execute(delete(SignIn).where(SignIn.expires_at < utcnow()))
            db.add(SignIn(token=token, user_id=user_id, csrf=csrf, expires_at=utcnow() + timedelta(hours=hours)))

    def signed_in(self, token: str) -> tuple[User, str] | None:
        """The user and CSRF token of a live sign-in, or None."""
        with self.session() as db:
            row = db.execute(select(User, SignIn.csrf).join(SignIn, SignIn.user_id == User.id)
                             .where(SignIn.token == token, SignIn.expires_at > utcnow())).first()
            return (row[0], row[1]) if row else None

    def close_sign_in(self, token: str) -> None:
        with self.session.begin() as db:
            db.execute(delete(SignIn).where(SignIn.token == token))

    # -- retention ----------------------------------------------------------------------------------------------

    def prune(self, keep_days: float) -> int:
        """Delete events (with their reps, sets, health, replies), invalid messages, acknowledged alerts and
        commands older than ``keep_days``; returns the events deleted. Racks and users stay."""
        cutoff = utcnow() - timedelta(days=keep_days)
        with self.session.begin() as db:
            old = select(Event.id).where(Event.time < cutoff)
            for table in (Rep, SetSummary, Health, Reply):   # explicit: SQLite's cascades need a pragma per connection
                db.execute(delete(table).where(table.id.in_(old)))
            deleted = db.execute(delete(Event).where(Event.time < cutoff)).rowcount
            db.execute(delete(InvalidMessage).where(InvalidMessage.received_at < cutoff))
            db.execute(delete(Alert).where(Alert.acked_at.is_not(None), Alert.created_at < cutoff))
            db.execute(delete(Command).where(Command.sent_at < cutoff))
            return deleted


def contract_error(payload: Any, leaf: str, rack: str, raw: bytes | None = None) -> str | None:
    """Why ``payload`` on ``<root>/<rack>/<leaf>`` breaks the contract, or None when it fits.

    The check is the typed events' own parser (:func:`rackwatch.events.parse_event`, pydantic-core: tens of µs
    an event), the same contract the JSON Schemas in ``contract/`` are generated from; ``raw`` is the payload's
    JSON text when the caller has it (parsed as it came, not encoded again)."""
    from pydantic import ValidationError

    from rackwatch.events import parse_event

    if not isinstance(payload, dict):
        return "the payload is not a JSON object"
    if payload.get("type") != leaf:
        return f"type {payload.get('type')!r} on the {leaf} topic"
    try:
        parse_event(raw if raw is not None else payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        # The first place is the event type pydantic picked (the ``type`` field, already checked): not news.
        where = "/".join(str(p) for p in first["loc"][1:] if first["loc"]) or "payload"
        return f"{where}: {first['msg']}"[:1000]
    if payload["rack"] != rack:
        return f"rack {payload['rack']!r} published on rack {rack!r}'s topic"
    return None


def rack_snapshot(row: Rack, not_counted: Event | None = None) -> dict[str, Any]:
    """A rack's row as plain data for the board (JSON fields decoded), with its newest not_counted event."""
    return {"rack": row.rack, "online": row.online, "availability_at": row.availability_at,
            "last_seen": row.last_seen, "state": json.loads(row.state) if row.state else None,
            "last_rep": json.loads(row.last_rep) if row.last_rep else None,
            "health": json.loads(row.health) if row.health else None, "health_time": row.health_time,
            "state_time": row.state_time, "last_rep_time": row.last_rep_time,
            "last_not_counted": json.loads(not_counted.payload) if not_counted else None,
            "last_not_counted_time": not_counted.time if not_counted else None}


def _text(value: str) -> str:
    """Text any database takes: PostgreSQL refuses NUL characters."""
    return value.replace("\x00", "\\x00")


def _is(column, value):
    from sqlalchemy import case

    return case((column == value, 1), else_=0)


class _RackRow:
    """A rack's row as plain attributes (what ``rack_snapshot`` and the handlers read), remembering which columns
    changed: only those are written back, so two dashboard processes do not undo each other's changes."""

    def __init__(self, values, decoded: dict[tuple[str, str], tuple[str, Any]]) -> None:
        self.__dict__.update(values)
        self.__dict__["changed"] = set()
        self.__dict__["_decoded"] = decoded

    def __setattr__(self, name: str, value: Any) -> None:
        if self.__dict__.get(name) != value:
            self.changed.add(name)
        self.__dict__[name] = value

    def keep(self, column: str, text: str, value: Any) -> None:
        """Set a JSON column (``state``, ``last_rep``, ``health``) to ``text``, whose decoded value is ``value``."""
        setattr(self, column, text)
        self._decoded[(self.rack, column)] = (text, value)

    def decoded(self, column: str) -> Any:
        """A JSON column's value, decoded once per text."""
        text = getattr(self, column)
        if text is None:
            return None
        known = self._decoded.get((self.rack, column))
        if known is None or known[0] != text:
            known = self._decoded[(self.rack, column)] = (text, orjson.loads(text))
        return known[1]


def _write_racks(db: Session, rows) -> None:
    """Write the changed columns of the racks' rows back: one executemany UPDATE per set of changed columns."""
    from sqlalchemy import bindparam

    racks = Rack.__table__
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row.changed:
            columns = tuple(sorted(row.changed))
            groups.setdefault(columns, []).append({"_rack": row.rack, **{c: getattr(row, c) for c in columns}})
    for columns, params in groups.items():
        statement = (racks.update().where(racks.c.rack == bindparam("_rack"))
                     .values({c: bindparam(c) for c in columns}))
        db.connection().execute(statement, params)


@dataclass
class _Batch:
    """What one ``ingest`` call gathers: its result, the racks' rows, the rows to insert together per table, the
    caves counted per (rack, set) so far, and the alerts raised (stored together at the end)."""
    result: IngestResult = field(default_factory=IngestResult)
    racks: dict[str, _RackRow] = field(default_factory=dict)
    rows: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)
    caves: dict[tuple[str, str], int] = field(default_factory=dict)
    alerts: list[NewAlert] = field(default_factory=list)

    def add(self, table, **values: Any) -> None:
        """A row to insert with the batch's other rows of ``table`` (one executemany per table)."""
        self.rows.setdefault(table, []).append(values)


def _insert_many_ignore(db: Session, table, rows: list[dict[str, Any]], key: str | None = None) -> set[str]:
    """Insert rows whose ``key`` (by default the primary key) is free, in one statement for the lot; returns the
    keys that went in."""
    if db.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    column = table.__table__.c[key] if key else next(iter(table.__table__.primary_key.columns))
    statement = insert(table.__table__).on_conflict_do_nothing(index_elements=[column.name]).returning(column)
    return set(db.connection().execute(statement, rows).scalars())


def _insert_ignore(db: Session, table, values: dict[str, Any], key: str | None = None) -> bool:
    """Insert a row unless its key is taken (by a repeat delivery or another process); True if inserted."""
    if db.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    key = key or next(iter(table.__table__.primary_key.columns)).name
    column = table.__table__.c[key]
    # RETURNING says whether the row went in on both databases (rowcount is not reliable here with psycopg).
    statement = (insert(table.__table__).values(**values).on_conflict_do_nothing(index_elements=[key])
                 .returning(column))
    return db.connection().execute(statement).first() is not None


def _sqlite_pragmas(connection, _record) -> None:
    # WAL: the pages read while the ingester writes; busy_timeout: writers wait instead of failing.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
