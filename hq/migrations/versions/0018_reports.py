"""HQ's reports: rollups of the central ledger kept as events arrive, and each entry's tier.

``hq_rollup_points`` sums the entries of each UTC day, store and member tier by kind,
``hq_rollup_gift`` the gift redemptions and lapsed vouchers of each day, store and sku,
``hq_rollup_member`` the members who joined and departed each day at each home store; the
``_month`` tables the same by month, the ``_chain`` ones for the whole chain by day (see
hq.rollups). ``hq_entry.tier`` is the member's tier when HQ stored the entry; entries stored
before this revision have none, and count under their member's tier of the day of the
upgrade.

The rollups are filled here from what the database holds, one INSERT ... SELECT each, in the
upgrade's transaction (``kiosk hq reports rebuild`` does the same later, with a progress bar).

Revision ID: hq_0018
Revises: hq_0017
Create Date: 2026-12-08
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "hq_0018"
down_revision = "hq_0017"
branch_labels = None
depends_on = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The kinds of entry with a column of their own (hq.rollups.KIND_COLUMNS as of this revision).
KINDS = (
    "purchase",
    "checkin",
    "birthday",
    "referral",
    "redemption",
    "expiry",
    "refund",
    "adjustment",
    "voucher_return",
    "opening",
    "merge_in",
    "merge_out",
)
MEASURES = ("entries", "checkins", *KINDS, "other")
GIFTS = ("redemptions", "quantity", "points", "lapsed", "returned")


def _measures() -> list[sa.Column[int]]:
    return [sa.Column(name, BIG, nullable=False) for name in MEASURES]


def _sql(postgresql: bool) -> dict[str, str]:
    """The fragments that differ between the engines: a timestamp's day, a day's month (its
    first day), a field of an event's data, the later of two times."""
    if postgresql:
        return {
            "day": "CAST({} AS date)",
            "month": "CAST(date_trunc('month', {}) AS date)",
            "data": "(CAST({} AS json) -> 'data' ->> '{}')",
            "int": "CAST({} AS bigint)",
            "later": "GREATEST({}, {})",
        }
    return {
        "day": "date({})",
        "month": "date({}, 'start of month')",
        "data": "json_extract({}, '$.data.{}')",
        "int": "{}",
        "later": "max({}, {})",
    }


def _fill(postgresql: bool) -> None:
    sql = _sql(postgresql)

    def day(column: str) -> str:
        return sql["day"].format(column)

    def data(key: str) -> str:
        return sql["data"].format("ev.payload", key)

    listed = ", ".join(f"'{k}'" for k in KINDS)
    sums = ", ".join(f"SUM(CASE WHEN e.kind = '{k}' THEN e.points ELSE 0 END)" for k in KINDS)
    op.execute(
        f"INSERT INTO hq_rollup_points (day, store_id, tier, {', '.join(MEASURES)}) "
        f"SELECT {day('e.at')}, e.store_id, COALESCE(e.tier, m.tier, 'unknown'), COUNT(*), "
        f"SUM(CASE WHEN e.kind = 'checkin' THEN 1 ELSE 0 END), {sums}, "
        f"SUM(CASE WHEN e.kind NOT IN ({listed}) THEN e.points ELSE 0 END) "
        "FROM hq_entry e LEFT JOIN hq_member m ON m.id = e.member_id GROUP BY 1, 2, 3"
    )
    op.execute(
        "INSERT INTO hq_rollup_gift (day, store_id, sku, name, redemptions, quantity, points, "
        "lapsed, returned) "
        "SELECT day, store_id, sku, MAX(name), SUM(redemptions), SUM(quantity), SUM(points), "
        "SUM(lapsed), SUM(returned) FROM ("
        f" SELECT {day('ev.at')} AS day, ev.store_id AS store_id,"
        f" COALESCE({data('sku')}, '') AS sku, COALESCE({data('name')}, '') AS name,"
        " CASE WHEN ev.kind = 'gift.redeemed' THEN 1 ELSE 0 END AS redemptions,"
        " CASE WHEN ev.kind = 'gift.redeemed'"
        f" THEN COALESCE({sql['int'].format(data('qty'))}, 0) ELSE 0 END AS quantity,"
        " 0 AS points, CASE WHEN ev.kind = 'gift.voucher_lapsed' THEN 1 ELSE 0 END AS lapsed,"
        " 0 AS returned"
        " FROM hq_event ev WHERE ev.kind IN ('gift.redeemed', 'gift.voucher_lapsed')"
        " UNION ALL"
        f" SELECT {day('ev.at')}, ev.store_id, COALESCE({data('sku')}, ''), '', 0, 0,"
        " CASE WHEN e.kind = 'redemption' THEN -e.points ELSE 0 END, 0,"
        " CASE WHEN e.kind = 'voucher_return' THEN e.points ELSE 0 END"
        " FROM hq_entry e JOIN hq_event ev ON ev.event_id = e.event_id"
        " WHERE (e.kind = 'redemption' AND ev.kind = 'gift.redeemed')"
        " OR (e.kind = 'voucher_return' AND ev.kind = 'gift.voucher_lapsed')"
        ") AS g GROUP BY day, store_id, sku"
    )
    erased_at = sql["later"].format("m.created_at", "d.at")
    op.execute(
        "INSERT INTO hq_rollup_member (day, store_id, joined, departed) "
        "SELECT day, store_id, SUM(joined), SUM(departed) FROM ("
        f" SELECT {day('created_at')} AS day, store_id, 1 AS joined, 0 AS departed"
        " FROM hq_member WHERE tier <> 'unknown'"
        " UNION ALL"
        f" SELECT {day('mm.at')}, m.store_id, 0, 1 FROM hq_member_merge mm"
        " JOIN hq_member m ON m.id = mm.absorbed_member_id"
        " UNION ALL"
        f" SELECT {day(erased_at)}, m.store_id, 0, 1 FROM hq_member m JOIN ("
        f"  SELECT {data('member_id')} AS member_id, MIN(ev.at) AS at FROM hq_event ev"
        "  WHERE ev.kind = 'member.deleted' GROUP BY 1"
        " ) AS d ON d.member_id = m.id"
        " WHERE m.deleted AND m.merged_into IS NULL AND m.tier <> 'unknown'"
        ") AS j GROUP BY day, store_id"
    )
    month = sql["month"].format("day")
    gifts = "MAX(name), " + ", ".join(f"SUM({c})" for c in GIFTS)
    for table, keys, measures, source, grouped in (
        ("hq_rollup_points_month", "month, store_id, tier", ", ".join(MEASURES),
         "hq_rollup_points", f"{month}, store_id, tier"),
        ("hq_rollup_points_chain", "day, tier", ", ".join(MEASURES),
         "hq_rollup_points", "day, tier"),
        ("hq_rollup_gift_month", "month, store_id, sku", "name, " + ", ".join(GIFTS),
         "hq_rollup_gift", f"{month}, store_id, sku"),
        ("hq_rollup_gift_chain", "day, sku", "name, " + ", ".join(GIFTS),
         "hq_rollup_gift", "day, sku"),
        ("hq_rollup_member_chain", "day", "joined, departed", "hq_rollup_member", "day"),
    ):  # fmt: skip
        totals = (
            gifts
            if source == "hq_rollup_gift"
            else ", ".join(f"SUM({c})" for c in measures.split(", "))
        )
        op.execute(
            f"INSERT INTO {table} ({keys}, {measures}) SELECT {grouped}, {totals} "
            f"FROM {source} GROUP BY {grouped}"
        )


def _gift_figures() -> list[sa.Column[Any]]:
    return [
        sa.Column("name", sa.String(length=256), nullable=False),
        *(sa.Column(name, BIG, nullable=False) for name in GIFTS),
    ]


def _member_figures() -> list[sa.Column[int]]:
    return [sa.Column(name, BIG, nullable=False) for name in ("joined", "departed")]


def upgrade() -> None:
    with op.batch_alter_table("hq_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("tier", sa.String(length=16), nullable=True))
    for table, period in (("hq_rollup_points", "day"), ("hq_rollup_points_month", "month")):
        op.create_table(
            table,
            sa.Column(period, sa.Date(), nullable=False),
            sa.Column("store_id", sa.String(length=64), nullable=False),
            sa.Column("tier", sa.String(length=16), nullable=False),
            *_measures(),
            sa.PrimaryKeyConstraint(period, "store_id", "tier", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_store_{period}", table, ["store_id", period])
    op.create_table(
        "hq_rollup_points_chain",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        *_measures(),
        sa.PrimaryKeyConstraint("day", "tier", name=op.f("pk_hq_rollup_points_chain")),
    )
    for table, period in (("hq_rollup_gift", "day"), ("hq_rollup_gift_month", "month")):
        op.create_table(
            table,
            sa.Column(period, sa.Date(), nullable=False),
            sa.Column("store_id", sa.String(length=64), nullable=False),
            sa.Column("sku", sa.String(length=32), nullable=False),
            *_gift_figures(),
            sa.PrimaryKeyConstraint(period, "store_id", "sku", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_store_{period}", table, ["store_id", period])
    op.create_table(
        "hq_rollup_gift_chain",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sku", sa.String(length=32), nullable=False),
        *_gift_figures(),
        sa.PrimaryKeyConstraint("day", "sku", name=op.f("pk_hq_rollup_gift_chain")),
    )
    op.create_table(
        "hq_rollup_member",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("store_id", sa.String(length=64), nullable=False),
        *_member_figures(),
        sa.PrimaryKeyConstraint("day", "store_id", name=op.f("pk_hq_rollup_member")),
    )
    op.create_index("ix_hq_rollup_member_store_day", "hq_rollup_member", ["store_id", "day"])
    op.create_table(
        "hq_rollup_member_chain",
        sa.Column("day", sa.Date(), nullable=False),
        *_member_figures(),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_hq_rollup_member_chain")),
    )
    _fill(op.get_bind().dialect.name == "postgresql")


def downgrade() -> None:
    op.drop_table("hq_rollup_member_chain")
    op.drop_index("ix_hq_rollup_member_store_day", table_name="hq_rollup_member")
    op.drop_table("hq_rollup_member")
    op.drop_table("hq_rollup_gift_chain")
    for table, period in (("hq_rollup_gift_month", "month"), ("hq_rollup_gift", "day")):
        op.drop_index(f"ix_{table}_store_{period}", table_name=table)
        op.drop_table(table)
    op.drop_table("hq_rollup_points_chain")
    for table, period in (("hq_rollup_points_month", "month"), ("hq_rollup_points", "day")):
        op.drop_index(f"ix_{table}_store_{period}", table_name=table)
        op.drop_table(table)
    with op.batch_alter_table("hq_entry", schema=None) as batch_op:
        batch_op.drop_column("tier")
