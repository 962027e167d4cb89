"""Many rows in one statement, the same statement whatever their number.

On PostgreSQL an executemany sends one INSERT per row (pipelined), and a multi-row VALUES
has a different text (and plan) for every row count. :func:`insert_rows` sends each column
as one array (in binary) and inserts ``SELECT * FROM unnest(...)``: one statement, prepared
once, whatever the number of rows. SQLite runs in the process, where executemany costs no round
trips: the rows go to it as tuples, without SQLAlchemy's work on each parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Connection, Table, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import DeclarativeBase, QueryableAttribute
from sqlalchemy.sql.schema import ScalarElementColumnDefault

_statements: dict[tuple[str, str, tuple[str, ...]], str] = {}


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
    postgresql = conn.dialect.name == "postgresql"
    key = (conn.dialect.name, table.name, names)
    statement = _statements.get(key)
    if statement is None:
        if postgresql:
            # %(name)b: psycopg sends the array in binary, with no quoting of its text.
            arrays = ", ".join(
                f"CAST(%({n})b AS {table.c[n].type.compile(dialect=conn.dialect)}[])" for n in names
            )
            values = f"SELECT * FROM unnest({arrays})"
        else:
            values = f"VALUES ({', '.join('?' for _ in names)})"
        statement = f"INSERT INTO {table.name} ({', '.join(names)}) {values}"
        _statements[key] = statement
    columns: list[list[Any]] = []
    for n in names:
        process = cast(Callable[[Any], Any] | None, table.c[n].type.bind_processor(conn.dialect))
        values_of = [row[n] for row in rows] if n not in defaults else [defaults[n]] * len(rows)
        columns.append([process(v) for v in values_of] if process else values_of)
    if postgresql:
        conn.exec_driver_sql(statement, dict(zip(names, columns, strict=True)))
    else:
        conn.exec_driver_sql(statement, list(zip(*columns, strict=True)))


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
