"""A folder of Alembic migrations and the questions asked of it: which revision is newest,
which one a database is at, and bringing a database up to one.

The appliance's ledger (:mod:`edge.storage.migrate`) and HQ's database (:mod:`hq.schema`)
each have their own folder. Whether a schema is current is answered without Alembic (the
revision files are read with ``ast``, the version table with one query), so that Alembic and
its templating libraries are imported only when there is a migration to run.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from collections.abc import Mapping

    from alembic.config import Config

VERSION_TABLE = "alembic_version"


def _assigned(tree: ast.Module, name: str) -> object:
    """The literal assigned to ``name`` at the top of a revision file."""
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return ast.literal_eval(value)
    raise ValueError(f"no {name} in the revision file")


@functools.cache
def _head(directory: Path) -> str:
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((directory / "versions").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        revision = _assigned(tree, "revision")
        if not isinstance(revision, str):
            raise ValueError(f"{path}: no revision")
        revisions.add(revision)
        down = _assigned(tree, "down_revision")
        if isinstance(down, str):
            parents.add(down)
        elif isinstance(down, tuple | list):
            parents.update(str(d) for d in down)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads: {sorted(heads)}")
    return heads.pop()


# The attribute holding what opens the data key (edge.storage.migrate, hq.schema): a
# migration that encrypts rows in place defines ``key_refusal(connection)``, the error to
# raise when the key is missing and rows need it (None when they don't).
KEY_ATTRIBUTE = "text_vault"


@dataclass(frozen=True)
class Migrations:
    """One schema's migrations: ``directory`` holds ``env.py`` and ``versions/``."""

    directory: Path

    def config(self) -> Config:
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(self.directory))
        return cfg

    def head_revision(self) -> str:
        """The newest revision: the one no other revision names as its ``down_revision``."""
        return _head(self.directory)

    def revisions(self) -> list[str]:
        """Every revision, oldest first."""
        from alembic.script import ScriptDirectory

        walked = ScriptDirectory.from_config(self.config()).walk_revisions()
        return [r.revision for r in reversed(list(walked))]

    def current_revision(self, engine: Engine) -> str | None:
        """The schema's revision as Alembic recorded it; ``None`` for an empty database."""
        # A read: it must not take SQLite's write lock (BEGIN IMMEDIATE) behind a writer.
        with engine.execution_options(sqlite_begin="DEFERRED").connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return None
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        if len(rows) > 1:
            raise RuntimeError(f"the database records {len(rows)} schema heads: {rows}")
        return rows[0] if rows else None

    def upgrade(
        self,
        engine: Engine,
        revision: str = "head",
        attributes: Mapping[str, object] | None = None,
    ) -> tuple[str | None, str]:
        """Brings the schema to ``revision`` in one transaction; returns (before, after).

        ``attributes`` reach the migrations as ``op.get_context().config.attributes`` (e.g.
        what opens the data key, for a migration that encrypts rows in place).
        """
        from alembic import command
        from alembic.script import ScriptDirectory

        before = self.current_revision(engine)
        cfg = self.config()
        with engine.begin() as conn:
            cfg.attributes.update(attributes or {})
            if KEY_ATTRIBUTE not in cfg.attributes:
                # Before any migration runs: one that needs the data key must not find out
                # half way, with the ones before it applied (SQLite commits DDL as it goes).
                pending = ScriptDirectory.from_config(cfg).iterate_revisions(
                    revision, before or "base"
                )
                for script in reversed(list(pending)):
                    refusal = getattr(script.module, "key_refusal", None)
                    if refusal is not None and (why := refusal(conn)) is not None:
                        raise why
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return before, self.current_revision(engine) or ""

    def downgrade(self, engine: Engine, revision: str) -> None:
        """Takes the schema back to ``revision`` (``base``: empty), for migration tests."""
        from alembic import command

        cfg = self.config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, revision)

    def revision(self, engine: Engine, message: str) -> None:
        """Writes a new autogenerated migration (a development tool)."""
        from alembic import command

        cfg = self.config()
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=message, autogenerate=True)
