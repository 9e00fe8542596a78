"""An index on events (type, rack, time): the board's newest movement not counted of each rack and a rack's
page's latest ones are read from the events table by type, which holds every health report too (millions of rows
at 180 days' retention); without it each read scanned the whole table.

Revision ID: 0002
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_events_type_rack_time", "events", ["type", "rack", "time"])


def downgrade() -> None:
    op.drop_index("ix_events_type_rack_time", table_name="events")
