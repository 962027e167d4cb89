"""``kiosk member``: register, show, delete, mint a member code."""

from __future__ import annotations

import click

from edge.cli.common import emit, json_option, state
from edge.cli.staff_auth import staff_login
from edge.console import NumberRange
from edge.domain.member_view import MemberView
from edge.domain.staff import Permission
from edge.domain.text import escape_controls
from edge.services import contact, coupons, members

KIND_LABELS = {
    "purchase": "purchase",
    "checkin": "check-in",
    "birthday": "birthday gift",
    "referral": "referral bonus",
    "redemption": "redemption",
    "expiry": "expired",
    "adjustment": "adjustment",
    "refund": "refund",
    "merge_in": "records merged",
    "merge_out": "merged into another record",
}


def render_member(v: MemberView) -> str:
    lines = [
        f"member     {v.member_id}{'  (deleted)' if v.deleted else ''}",
        f"card       {v.card_no or '-'} ({v.card_state or 'no active card'})",
        f"name       {v.name_masked or '-'}",
        f"phone      {v.phone_masked or '-'}",
        f"tier       {v.tier_name_en} / {v.tier_name_zh}",
        f"balance    {v.balance} points ({v.available} available, {v.pending} pending)",
    ]
    if v.next_tier is not None:
        unit = "yuan spend" if v.tier_basis == "spend" else "points"
        missing = v.next_tier_missing or 0
        amount = f"{missing / 100:.2f}" if v.tier_basis == "spend" else str(missing)
        lines.append(f"next tier  {v.next_tier}: {amount} {unit} to go")
    for x in v.expiring:
        lines.append(f"expiring   {x.points} points on {x.expires_on.isoformat()}")
    if v.overdraft_flagged:
        lines.append("ATTENTION  offline overdraft flagged for staff")
    lines.append(f"messages   {'on' if v.message_consent else 'off'} (SMS reminders)")
    if v.history:
        lines.append("recent:")
        for h in v.history:
            lines.append(
                f"  {h.at:%Y-%m-%d %H:%M}Z  {h.points:+7d}  {KIND_LABELS.get(h.kind, h.kind)}"
                f"  {h.ref}" + (f"  ({escape_controls(h.note)})" if h.note else "")
            )
    return "\n".join(lines)


@click.group("member")
def member_group() -> None:
    """Members: register, look up, delete."""


@member_group.command("register")
@click.option("--phone", required=True, help="Mobile phone number (required, unique).")
@click.option("--name", default=None, help="Form of address, e.g. 王女士.")
@click.option("--birthday", default=None, help="YYYY-MM-DD")
@click.option("--referrer", default=None, help="Phone number of the referring member.")
@click.option("--consent", is_flag=True, help="The member consented to the privacy terms.")
@click.option(
    "--messages",
    "message_consent",
    is_flag=True,
    help="The member also agreed to SMS reminders (a separate consent).",
)
@click.option("--request-id", default=None, help="Makes a retry harmless.")
@json_option
def register_cmd(
    phone: str,
    name: str | None,
    birthday: str | None,
    referrer: str | None,
    consent: bool,
    message_consent: bool,
    request_id: str | None,
) -> None:
    """Register a member and issue a card (needs --consent)."""
    result = members.register_member(
        state().app,
        phone,
        consent,
        name,
        birthday,
        referrer,
        request_id,
        actor="console",
        message_consent=message_consent,
    )
    emit(result, lambda r: f"registered: card {r.card_no}\n" + render_member(r.view))


def _selector(card: str | None, phone: str | None) -> None:
    if (card is None) == (phone is None):
        raise click.UsageError("name the member with exactly one of --card or --phone")


@member_group.command("show")
@click.option("--card", default=None)
@click.option("--phone", default=None)
@click.option("--history", default=10, show_default=True, type=NumberRange(0, 500))
@json_option
def show_cmd(card: str | None, phone: str | None, history: int) -> None:
    """Balance, tier, card state, expiring points and recent history."""
    _selector(card, phone)
    emit(members.show_member(state().app, card, phone, history), render_member)


@member_group.command("delete")
@click.option("--card", default=None)
@click.option("--phone", default=None)
@click.option("--staff", "staff_id", required=True, help="Supervisor carrying out the request.")
@json_option
def delete_cmd(card: str | None, phone: str | None, staff_id: str) -> None:
    """Erase a member's personal data on request; the ledger is kept anonymised."""
    _selector(card, phone)
    app = state().app
    staff = staff_login(app, staff_id, Permission.DELETE_MEMBER)
    result = members.delete_member(app, staff, card, phone)
    emit(
        result,
        lambda r: (
            f"member {r.member_id} deleted; cards blocked: "
            f"{', '.join(r.cards_blocked) or 'none'}; {r.ledger_entries_kept} ledger entries kept"
        ),
    )


@member_group.command("update")
@click.option("--card", required=True)
@click.option("--phone", required=True, help="The member's new phone number.")
@click.option("--staff", "staff_id", required=True, help="Staff member making the change.")
@json_option
def update_cmd(card: str, phone: str, staff_id: str) -> None:
    """Change a member's phone number (still unique; the old one is forgotten)."""
    app = state().app
    staff = staff_login(app, staff_id, Permission.LOOKUP_MEMBER)
    emit(members.update_contact(app, card, phone, staff), render_member)


@member_group.command("messages")
@click.option("--card", default=None)
@click.option("--phone", default=None)
@click.argument("switch", type=click.Choice(["on", "off"]))
@json_option
def messages_cmd(card: str | None, phone: str | None, switch: str) -> None:
    """Turn a member's SMS reminders on (their consent to the message terms in force) or off."""
    _selector(card, phone)
    view = contact.set_message_consent(state().app, switch == "on", card, phone, actor="console")
    emit(view, render_member)


@member_group.command("code")
@click.option("--card", required=True)
@json_option
def code_cmd(card: str) -> None:
    """Mint a short-lived member code for a card (with the configured signing key)."""
    from edge.domain.cards import parse_card_number
    from edge.security.codes import mint_member_code

    app = state().app
    key = app.keys.member_code_signing_key(app.config.security.member_code_signing_key)
    card_no = parse_card_number(card)
    code = mint_member_code(key, card_no, app.clock())
    emit({"card_no": card_no, "code": code, "valid_s": app.config.security.member_code_ttl_s}, code)


@member_group.command("identify")
@click.argument("scanned")
@json_option
def identify_cmd(scanned: str) -> None:
    """What the kiosk does with a scanned member code or card number."""
    emit(members.identify(state().app, scanned), render_member)


def render_wallet(wallet: coupons.Wallet) -> str:
    if not wallet.reachable:
        return "HQ cannot be asked now: the member's coupons cannot be shown"
    if not wallet.coupons:
        return "no coupons"
    lines = []
    for c in wallet.coupons:
        t = c.terms
        lines.append(
            f"{escape_controls(t.title)}  ({t.kind}, until {t.valid_until:%Y-%m-%d %H:%M} UTC)\n"
            f"  {c.code}"
        )
    return "\n".join(lines)


@member_group.command("coupons")
@click.option("--card", required=True)
@json_option
def coupons_cmd(card: str) -> None:
    """The member's coupons from HQ's campaigns, with their codes for the till."""
    emit(coupons.wallet_for_card(state().app, card), render_wallet)


def register(group: click.Group) -> None:
    group.add_command(member_group)
