"""Alembic environment: batch mode, because SQLite cannot ALTER most things in place."""

from __future__ import annotations

from alembic import context

import edge.storage.command_models
import edge.storage.sync_models  # noqa: F401
from edge.storage.models import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through edge.storage.migrate, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
