"""Alembic environment for the feedback store.

`rlhf.feedback.store.migrate` passes an open connection in `config.attributes["connection"]`; the
`alembic` command line (for writing new revisions) uses `sqlalchemy.url` from its own config instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from rlhf.feedback.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.connect() as connection:
            _run(connection)
    else:
        _run(connection)


def _run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode rebuilds the table instead.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
