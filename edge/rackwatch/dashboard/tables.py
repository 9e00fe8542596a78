"""The dashboard's tables (SQLAlchemy 2 declarative models).

Times are UTC, stored without a zone (SQLite has none). Every event keeps its id as primary key, so an event
that QoS 1 delivers twice, or that two dashboard processes both receive, is stored once. The schema is created
and changed only by the Alembic migrations in ``migrations/versions``; change a model here and add a migration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Rack(Base):
    """What the dashboard knows of one rack now: availability, newest state, last rep, newest health."""
    __tablename__ = "racks"
    rack: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool | None] = mapped_column(Boolean)
    availability_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_seen: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str | None] = mapped_column(Text)          # the newest state event, JSON
    state_time: Mapped[datetime | None] = mapped_column(DateTime)
    last_rep: Mapped[str | None] = mapped_column(Text)       # the newest rep event, JSON
    last_rep_time: Mapped[datetime | None] = mapped_column(DateTime)
    health: Mapped[str | None] = mapped_column(Text)         # the newest health event, JSON
    health_time: Mapped[datetime | None] = mapped_column(DateTime)


class Event(Base):
    """Every valid event as received (the wire JSON), once per id."""
    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(16))
    time: Mapped[datetime] = mapped_column(DateTime, index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime)
    payload: Mapped[str] = mapped_column(Text)
    # The newest movement not counted of each rack, and a rack's latest ones, are read by type (migration 0002).
    __table_args__ = (Index("ix_events_type_rack_time", "type", "rack", "time"),)


class Rep(Base):
    __tablename__ = "reps"
    id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64))
    set_id: Mapped[str] = mapped_column(String(64))
    rep: Mapped[int] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(DateTime)
    exercise: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str | None] = mapped_column(String(16))
    load_value: Mapped[float | None] = mapped_column(Float)
    units: Mapped[str | None] = mapped_column(String(4))
    one_rm: Mapped[float | None] = mapped_column(Float)
    percent_1rm: Mapped[float | None] = mapped_column(Float)
    cave_left: Mapped[float | None] = mapped_column(Float)
    cave_right: Mapped[float | None] = mapped_column(Float)
    severity_left: Mapped[str | None] = mapped_column(String(16))
    severity_right: Mapped[str | None] = mapped_column(String(16))
    depth: Mapped[float] = mapped_column(Float)
    unjudged_reason: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index("ix_reps_rack_set", "rack", "set_id"), Index("ix_reps_time", "time"))


class SetSummary(Base):
    __tablename__ = "sets"
    id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64))
    set_id: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(DateTime)
    exercise: Mapped[str] = mapped_column(String(16))
    reps: Mapped[int] = mapped_column(Integer)
    clean_reps: Mapped[int] = mapped_column(Integer)
    load_value: Mapped[float | None] = mapped_column(Float)
    units: Mapped[str | None] = mapped_column(String(4))
    percent_1rm: Mapped[float | None] = mapped_column(Float)
    worst_rep: Mapped[int | None] = mapped_column(Integer)
    weaker_side: Mapped[str | None] = mapped_column(String(8))
    advice: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index("ix_sets_rack_set", "rack", "set_id"), Index("ix_sets_time", "time"))


class Health(Base):
    __tablename__ = "health"
    id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(DateTime)
    fps: Mapped[float] = mapped_column(Float)
    inference_ms: Mapped[float] = mapped_column(Float)
    dropped_frames: Mapped[int] = mapped_column(Integer)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    throttled: Mapped[bool | None] = mapped_column(Boolean)
    outbox_depth: Mapped[int] = mapped_column(Integer)
    __table_args__ = (Index("ix_health_rack_time", "rack", "time"),)


class Reply(Base):
    __tablename__ = "replies"
    id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(DateTime)
    command_id: Mapped[str | None] = mapped_column(String(64), index=True)
    command: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)


class Command(Base):
    """A command staff sent to a rack from the dashboard (its reply is in ``replies`` by ``command_id``)."""
    __tablename__ = "commands"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rack: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    sent_by: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(DateTime)


class InvalidMessage(Base):
    """A message that broke the contract, kept aside for whoever fixes the sender (payload cut to 4 kB)."""
    __tablename__ = "invalid_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Alert(Base):
    """Something staff should look at. ``key`` makes an alert raised twice (a repeat delivery, two dashboard
    processes) exist once; acknowledging keeps who and when."""
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    rack: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    acked_by: Mapped[str | None] = mapped_column(String(64))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SignIn(Base):
    """A signed-in browser: the cookie holds ``token``; ``csrf`` is the token every form must carry."""
    __tablename__ = "sessions"
    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(DateTime)
