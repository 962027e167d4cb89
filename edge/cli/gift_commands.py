"""``kiosk gift``: catalogue, restock, redeem, hand over."""

from __future__ import annotations

from pathlib import Path

import click

from edge.cli.common import emit, json_option, state
from edge.cli.staff_auth import staff_login
from edge.console import NUMBER
from edge.domain.staff import Permission
from edge.protocol import MAX_PICTURE_BYTES
from edge.security.personal import mask_card
from edge.services import coupons, gifts, vouchers

IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group("gift")
def gift_group() -> None:
    """Gifts and coupons."""


@gift_group.command("add")
@click.option("--sku", required=True)
@click.option("--name", required=True)
@click.option("--points", required=True, type=NUMBER)
@click.option("--stock", required=True, type=NUMBER)
@click.option("--low-stock", default=0, show_default=True, type=NUMBER)
@click.option("--per-member-limit", default=None, type=NUMBER)
@click.option("--coupon-cents", default=None, type=NUMBER, help="Makes it a coupon of this value.")
@click.option("--coupon-days", default=30, show_default=True, type=NUMBER)
@click.option("--image", type=IMAGE, default=None, help="Its picture: a PNG or JPEG file.")
@json_option
def add_cmd(
    sku: str,
    name: str,
    points: int,
    stock: int,
    low_stock: int,
    per_member_limit: int | None,
    coupon_cents: int | None,
    coupon_days: int,
    image: Path | None,
) -> None:
    """Add a gift (or, with --coupon-cents, a coupon) to the catalogue."""
    kind = "coupon" if coupon_cents is not None else "gift"
    line = gifts.add_gift(
        state().app,
        sku,
        name,
        points,
        stock,
        low_stock,
        per_member_limit,
        kind,
        coupon_cents or 0,
        coupon_days,
        image=read_image(image) if image else None,
    )
    emit(
        line,
        lambda g: f"added {g.kind} {g.sku} '{g.name}': {g.points_price} points, {g.stock} in stock",
    )


@gift_group.command("picture")
@click.argument("sku")
@click.argument("image", type=IMAGE)
@json_option
def picture_cmd(sku: str, image: Path) -> None:
    """Give gift SKU the picture in IMAGE (a PNG or JPEG file) on this kiosk's screen."""
    line = gifts.set_gift_picture(state().app, sku, read_image(image))
    emit(line, lambda g: f"{g.sku} '{g.name}' shows picture {g.picture}")


def read_image(path: Path) -> bytes:
    """The file's bytes, read no further than the largest picture allowed (and one more)."""
    with path.open("rb") as f:
        return f.read(MAX_PICTURE_BYTES + 1)


@gift_group.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Include withdrawn gifts.")
@json_option
def list_cmd(include_inactive: bool) -> None:
    """The catalogue with prices and stock."""
    lines = gifts.list_gifts(state().app, include_inactive)

    def human(items: list[gifts.GiftLine]) -> str:
        if not items:
            return "no gifts in the catalogue"
        rows = [f"{'SKU':<12} {'POINTS':>7} {'STOCK':>6}  NAME"]
        for g in items:
            flag = "  LOW" if g.is_low else ""
            rows.append(f"{g.sku:<12} {g.points_price:>7} {g.stock:>6}  {g.name}{flag}")
        return "\n".join(rows)

    emit(lines, human)


@gift_group.command("restock")
@click.option("--sku", required=True)
@click.option("--qty", required=True, type=NUMBER)
@click.option("--staff", "staff_id", required=True)
@json_option
def restock_cmd(sku: str, qty: int, staff_id: str) -> None:
    """Add stock (staff PIN required)."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.RESTOCK)
    emit(gifts.restock_gift(app, sku, qty, staff), lambda g: f"{g.sku}: {g.stock} in stock")


@gift_group.command("redeem")
@click.option("--card", required=True)
@click.option("--sku", required=True)
@click.option("--qty", default=1, show_default=True, type=NUMBER)
@click.option("--request-id", required=True, help="Makes a retry harmless.")
@json_option
def redeem_cmd(card: str, sku: str, qty: int, request_id: str) -> None:
    """Redeem points for a gift or coupon."""
    result = gifts.redeem_gift(state().app, card, sku, qty, request_id, actor="console")

    def human(r: gifts.RedemptionResult) -> str:
        text = (
            f"redeemed {r.qty} x {r.name} for {r.points} points; balance {r.balance}\n"
            f"redemption {r.redemption_id}"
        )
        if r.voucher_code:
            text += f"\nvoucher {r.voucher_code}"
        for code in r.coupon_codes:
            text += f"\ncoupon {code}"
        if r.low_stock:
            text += f"\nwarning: {r.sku} is low on stock"
        if r.offline:
            text += "\n(redeemed offline; HQ reconciles on reconnect)"
        return text

    emit(result, human)


@gift_group.command("use-coupon")
@click.argument("code")
@click.option("--ref", required=True, help="The receipt the coupon is used on.")
@json_option
def use_coupon_cmd(code: str, ref: str) -> None:
    """Validate and spend a coupon: one this kiosk printed, or one of HQ's campaigns (used
    once in the whole chain; HQ is asked)."""

    def human(u: coupons.CouponTaken) -> str:
        gives = {
            "amount_off": f"{u.value_cents / 100:.2f} yuan off",
            "threshold_off": (
                f"{u.value_cents / 100:.2f} yuan off a basket of {u.threshold_cents / 100:.2f}"
            ),
            "percent_off": f"{u.percent}% off",
            "gift": f"the gift {u.sku}",
        }[u.kind]
        note = " (HQ unreachable: accepted on this kiosk's offline allowance)" if u.offline else ""
        return f"coupon {u.coupon_id} accepted: {gives}{note}"

    emit(coupons.take_coupon(state().app, code, ref, actor="console"), human)


@gift_group.command("collect")
@click.argument("code")
@click.option("--staff", "staff_id", required=True)
@json_option
def collect_cmd(code: str, staff_id: str) -> None:
    """Hand a gift over against its voucher CODE (核销; staff PIN required): once per voucher,
    reprints included."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.HAND_OVER_GIFT)

    def human(h: vouchers.VoucherHandover) -> str:
        if not h.verified:
            return (
                f"voucher {h.voucher_id} of kiosk {h.issuer_device_id} collected on this "
                "desk's record (HQ unreachable or not answering): hand over the gift printed "
                "on it; HQ checks it"
            )
        until = h.valid_until.isoformat() if h.valid_until else "-"
        return (
            f"hand over {h.qty} x {h.name} ({h.sku}) to card {mask_card(h.card_no)}: "
            f"voucher {h.voucher_id} collected (valid until {until})"
        )

    emit(vouchers.collect_voucher(app, code, staff), human)


@gift_group.command("lapse-vouchers")
@json_option
def lapse_vouchers_cmd() -> None:
    """Gift vouchers not collected by their printed date lapse: their gifts go back in stock,
    their points too if HQ's rules say so (also run daily by a timer on the appliance)."""
    run = vouchers.lapse_vouchers(state().app)
    emit(
        run,
        lambda r: (
            f"{r.vouchers} vouchers lapsed, their gifts back in stock; "
            + (f"{r.points_returned} points returned" if r.refund else "no points returned (rule)")
        ),
    )


def register(group: click.Group) -> None:
    group.add_command(gift_group)
