"""Alembic's environment: runs the migrations on the connection the dashboard hands over
(``config.attributes["connection"]``), or on ``sqlalchemy.url`` when run from the ``alembic`` command."""

from alembic import context
from sqlalchemy import create_engine

from rackwatch.dashboard.tables import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        with create_engine(config.get_main_option("sqlalchemy.url")).connect() as connection:
            _migrate(connection)
    else:
        _migrate(connection)


def _migrate(connection) -> None:
    # render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does that for us.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
