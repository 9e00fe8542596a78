"""The first tables: racks, events (and reps, sets, health, replies drawn from them), commands, invalid
messages, alerts, users and sign-in sessions.

Revision ID: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _event_id():
    return sa.Column("id", sa.String(64), sa.ForeignKey("events.id", ondelete="CASCADE"), primary_key=True)


def upgrade() -> None:
    op.create_table(
        "racks",
        sa.Column("rack", sa.String(64), primary_key=True),
        sa.Column("online", sa.Boolean), sa.Column("availability_at", sa.DateTime), sa.Column("last_seen", sa.DateTime),
        sa.Column("state", sa.Text), sa.Column("state_time", sa.DateTime),
        sa.Column("last_rep", sa.Text), sa.Column("last_rep_time", sa.DateTime),
        sa.Column("health", sa.Text), sa.Column("health_time", sa.DateTime))
    op.create_table(
        "events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("type", sa.String(16), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False), sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("payload", sa.Text, nullable=False))
    op.create_index("ix_events_rack", "events", ["rack"])
    op.create_index("ix_events_time", "events", ["time"])
    op.create_table(
        "reps", _event_id(),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("set_id", sa.String(64), nullable=False),
        sa.Column("rep", sa.Integer, nullable=False), sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("exercise", sa.String(16), nullable=False), sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(16)), sa.Column("load_value", sa.Float), sa.Column("units", sa.String(4)),
        sa.Column("one_rm", sa.Float), sa.Column("percent_1rm", sa.Float),
        sa.Column("cave_left", sa.Float), sa.Column("cave_right", sa.Float),
        sa.Column("severity_left", sa.String(16)), sa.Column("severity_right", sa.String(16)),
        sa.Column("depth", sa.Float, nullable=False), sa.Column("unjudged_reason", sa.Text))
    op.create_index("ix_reps_rack_set", "reps", ["rack", "set_id"])
    op.create_index("ix_reps_time", "reps", ["time"])
    op.create_table(
        "sets", _event_id(),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("set_id", sa.String(64), nullable=False),
        sa.Column("time", sa.DateTime, nullable=False), sa.Column("exercise", sa.String(16), nullable=False),
        sa.Column("reps", sa.Integer, nullable=False), sa.Column("clean_reps", sa.Integer, nullable=False),
        sa.Column("load_value", sa.Float), sa.Column("units", sa.String(4)), sa.Column("percent_1rm", sa.Float),
        sa.Column("worst_rep", sa.Integer), sa.Column("weaker_side", sa.String(8)), sa.Column("advice", sa.Text))
    op.create_index("ix_sets_rack_set", "sets", ["rack", "set_id"])
    op.create_index("ix_sets_time", "sets", ["time"])
    op.create_table(
        "health", _event_id(),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("fps", sa.Float, nullable=False), sa.Column("inference_ms", sa.Float, nullable=False),
        sa.Column("dropped_frames", sa.Integer, nullable=False), sa.Column("cpu_temp_c", sa.Float),
        sa.Column("throttled", sa.Boolean), sa.Column("outbox_depth", sa.Integer, nullable=False))
    op.create_index("ix_health_rack_time", "health", ["rack", "time"])
    op.create_table(
        "replies", _event_id(),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("time", sa.DateTime, nullable=False),
        sa.Column("command_id", sa.String(64)), sa.Column("command", sa.String(16)),
        sa.Column("status", sa.String(16), nullable=False), sa.Column("reason", sa.Text))
    op.create_index("ix_replies_command_id", "replies", ["command_id"])
    op.create_table(
        "commands",
        sa.Column("id", sa.String(64), primary_key=True), sa.Column("rack", sa.String(64), nullable=False),
        sa.Column("name", sa.String(16), nullable=False), sa.Column("payload", sa.Text, nullable=False),
        sa.Column("sent_by", sa.String(64), nullable=False), sa.Column("sent_at", sa.DateTime, nullable=False))
    op.create_index("ix_commands_rack", "commands", ["rack"])
    op.create_table(
        "invalid_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text, nullable=False), sa.Column("payload", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=False), sa.Column("received_at", sa.DateTime, nullable=False))
    op.create_index("ix_invalid_messages_received_at", "invalid_messages", ["received_at"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False, unique=True),
        sa.Column("rack", sa.String(64), nullable=False), sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False), sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("acked_by", sa.String(64)), sa.Column("acked_at", sa.DateTime))
    op.create_index("ix_alerts_rack", "alerts", ["rack"])
    op.create_index("ix_alerts_created_at", "alerts", ["created_at"])
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True), sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False), sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_table(
        "sessions",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False), sa.Column("expires_at", sa.DateTime, nullable=False))


def downgrade() -> None:
    for table in ("sessions", "users", "alerts", "invalid_messages", "commands", "replies", "health", "sets",
                  "reps", "events", "racks"):
        op.drop_table(table)
