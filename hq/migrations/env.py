"""Alembic environment of HQ's database (PostgreSQL in a chain, SQLite for a trial).

Batch mode on SQLite only, which cannot ALTER most things in place.
"""

from __future__ import annotations

from alembic import context

from hq.models import HqBase

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run HQ's migrations through hq.schema, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=HqBase.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
