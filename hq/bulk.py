"""Many rows in one statement, the same statement whatever their number.

On PostgreSQL an executemany sends one INSERT per row (pipelined), and a multi-row VALUES
has a different text (and plan) for every row count. :func:`insert_rows` sends the rows with
``COPY ... FROM STDIN`` in binary: one statement whatever the number of rows, and the server
writes them a page at a time (an INSERT writes the log row by row). SQLite runs in the
process, where executemany costs no round trips: the rows go to it as tuples, without
SQLAlchemy's work on each parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from edge.storage.types import UTCDateTime, naive_utc

_statements: dict[tuple[str, str, tuple[str, ...]], str] = {}


def insert_new(
    conn: Connection, model: type[DeclarativeBase], values: dict[str, Any], key: list[str]
) -> bool:
    """Inserts one row unless a row with the same ``key`` columns is there (``ON CONFLICT DO
    NOTHING`` on both engines); whether it was inserted. The unique index decides, so of two
    workers inserting the same key at the same moment, one inserts it and the other is told."""
    make = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    table = cast(Table, model.__table__)
    statement = (
        make(table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=key)
        .returning(*(table.c[name] for name in key))
    )
    return conn.execute(statement).first() is not None


def insert_rows(
    conn: Connection, model: type[DeclarativeBase] | Table, rows: Sequence[dict[str, Any]]
) -> None:
    """Inserts ``rows`` (dicts with the same keys, the column names) into the table, each
    value through its column's type as an INSERT of the model would, the columns' own
    defaults filled in."""
    if not rows:
        return
    table = cast(Table, model if isinstance(model, Table) else model.__table__)
    given = tuple(rows[0])
    defaults = {
        c.name: c.default.arg
        for c in table.columns
        if c.name not in given and isinstance(c.default, ScalarElementColumnDefault)
    }
    names = given + tuple(defaults)
    columns: list[list[Any]] = []
    for n in names:
        values_of = [row[n] for row in rows] if n not in defaults else [defaults[n]] * len(rows)
        if isinstance(table.c[n].type, UTCDateTime):
            columns.append(_naive_utc(values_of, as_text=conn.dialect.name == "sqlite"))
            continue
        process = cast(Callable[[Any], Any] | None, table.c[n].type.bind_processor(conn.dialect))
        columns.append([process(v) for v in values_of] if process else values_of)
    if conn.dialect.name == "postgresql":
        _copy(conn, table, names, columns)
        return
    key = (conn.dialect.name, table.name, names)
    statement = _statements.get(key)
    if statement is None:
        values = ", ".join("?" for _ in names)
        statement = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({values})"
        _statements[key] = statement
    conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))


def _naive_utc(values: list[datetime | None], as_text: bool) -> list[Any]:
    """A column of :class:`~edge.storage.types.UTCDateTime` values as that type binds them
    (:func:`~edge.storage.types.naive_utc`), in one loop rather than three calls a value,
    and the time a batch's rows share (when it was received) worked out once. ``as_text``:
    the text the sqlite3 module would make of each (``isoformat(" ")``), made here."""
    out: list[Any] = []
    last: datetime | None = None
    last_out: Any = None
    for value in values:
        if value is None:
            out.append(None)
            continue
        if value is not last:
            naive = naive_utc(value)
            last, last_out = value, naive.isoformat(" ") if as_text else naive
        out.append(last_out)
    return out


def _copy(conn: Connection, table: Table, names: tuple[str, ...], columns: list[list[Any]]) -> None:
    """The rows into ``table`` with a binary COPY, in the connection's transaction."""
    types = [_pg_type(table.c[n].type.compile(dialect=conn.dialect)) for n in names]
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
    driver = conn.connection.dbapi_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.Error as exc:
        # Raised as SQLAlchemy raises what its own statements meet (an IntegrityError, an
        # OperationalError, a lost connection invalidated), so callers handle it the same.
        lost = conn.dialect.is_disconnect(exc, driver, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement,
            None,
            exc,
            conn.dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc
    finally:
        cursor.close()


def _pg_type(compiled: str) -> str:
    """The PostgreSQL type name COPY is told a column has: ``VARCHAR(26)`` is ``varchar``."""
    return compiled.split("(", maxsplit=1)[0].strip().lower()


def among(
    conn: Connection, column: ColumnElement[Any] | QueryableAttribute[Any], values: Sequence[Any]
) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL ``column = ANY(array)``, one parameter however many
    values (an IN list is compiled and sent value by value)."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def stored_time(at: datetime) -> datetime:
    """``at`` as :class:`~edge.storage.types.UTCDateTime` stores it (naive UTC), for a
    statement written in SQL."""
    return at.astimezone(UTC).replace(tzinfo=None)
