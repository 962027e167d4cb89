"""The member's phone page in-process: sign-in by a code sent to the phone, its rate limits,
expiry and lockout, CSRF, its sessions apart from the staff's, what a member sees, consent."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from edge.domain.cards import card_number
from edge.domain.errors import Refusal
from edge.domain.ids import IdFactory
from edge.security.codes import verify_voucher
from edge.security.keys import load_secret
from edge.security.personal import PhoneVault
from hq.accounts import Role
from hq.enrol import LOOKUP_KEY_FILE, write_lookup_key, write_member_code_key
from hq.member_signin import ADDRESS_PER_HOUR, NUMBER_PER_HOUR
from hq.messages import FileSender
from hq.models import (
    AuditRecord,
    Campaign,
    CampaignCoupon,
    CentralCard,
    CentralEntry,
    CentralMember,
    DeviceCoupon,
    GiftVoucher,
    HqMessage,
    MemberSession,
    VoucherCollection,
)
from hq.service import HqConfig
from hq.web.app import make_app
from hq.web.member_page import MEMBER_COOKIE, MEMBER_LOGIN_COOKIE, MemberPageSettings
from hq.web_cli import member_page_settings
from tests.hq.database import HQ_VAULT, hq_data_key_file, sqlite_hq_url
from tests.web.conftest import Web

VAULT = PhoneVault(bytes(range(32)), secrets.token_bytes(32))  # HQ's data key, chain lookup
PHONE = "13800138000"
CARD = card_number(200_001)
IDS = IdFactory()


@dataclass
class Phone:
    web: Web
    sender: FileSender
    key: Ed25519PrivateKey

    def client(self, address: str = "203.0.113.7") -> TestClient:
        """A phone's browser at ``address``, reading the page in English."""
        client = TestClient(make_app(self.web.console), follow_redirects=False, client=(address, 1))
        client.cookies.set("lang", "en")
        return client

    def codes(self) -> list[str]:
        return [re.findall(r"\b(\d{6})\b", m["text"])[0] for m in self.sender.sent()]


def add_member(
    web: Web,
    member_id: str = "M" * 26,
    phone: str = PHONE,
    card_no: str = CARD,
    card_state: str = "active",
    sealed_phone: bool = True,
) -> None:
    with web.console.tx() as s:
        s.add(
            CentralMember(
                id=member_id, store_id="S001", tier="normal", phone_masked="138****8000",
                balance=0, overdraft_flagged=False, deleted=False,
                created_at=web.clock(), updated_at=web.clock(),
                phone_hash=VAULT.lookup_hash(phone),
                phone_enc=HQ_VAULT.encrypt_text("phone", phone) if sealed_phone else None,
                message_consent_version="2026-01", message_consent_at=web.clock(),
            )
        )  # fmt: skip
        s.add(CentralCard(card_no=card_no, member_id=member_id, state=card_state, store_id="S001"))


@pytest.fixture
def phone(web: Web) -> Iterator[Phone]:
    sender = FileSender(web.tmp / "sent.jsonl")
    key = Ed25519PrivateKey.generate()
    web.console.member_page = MemberPageSettings(vault=VAULT, sender=sender, code_key=key)
    yield Phone(web, sender, key)


def form_token(client: TestClient) -> str:
    client.get("/m")
    return str(client.cookies.get(MEMBER_LOGIN_COOKIE))


def ask(client: TestClient, number: str = PHONE) -> Any:
    return client.post("/m/code", data={"csrf": form_token(client), "phone": number})


def enter(client: TestClient, code: str, number: str = PHONE) -> Any:
    token = client.cookies.get(MEMBER_LOGIN_COOKIE) or form_token(client)
    return client.post("/m/sign-in", data={"csrf": token, "phone": number, "code": code})


def signed_in(phone: Phone, client: TestClient) -> None:
    assert ask(client).status_code == 200
    response = enter(client, phone.codes()[-1])
    assert response.status_code == 303, response.text


def member_csrf(client: TestClient) -> str:
    html = client.get("/m").text
    return re.findall(r'name="csrf" value="([^"]+)"', html)[0]


def test_a_member_signs_in_with_the_code_sent_to_their_phone(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    response = ask(client, "138 0013 8000")
    assert response.status_code == 200
    assert "138****8000" in response.text
    (sent,) = phone.sender.sent()
    assert sent["to"] == PHONE
    with phone.web.session() as s:
        message = s.scalars(select(HqMessage)).one()
        assert (message.kind, message.status, message.phone_enc) == ("otp", "sent", None)
    response = enter(client, phone.codes()[0])
    assert response.status_code == 303 and response.headers["location"] == "/m"
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith(MEMBER_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/m" in cookie
    page = client.get("/m")
    assert page.status_code == 200 and CARD[-4:] in page.text and 'id="m-qr"' in page.text
    # without script the page still renews its code: it reloads itself before the code expires
    assert '<noscript><meta http-equiv="refresh" content="45"></noscript>' in page.text
    with phone.web.session() as s:
        token_hash = s.scalars(select(MemberSession.token_hash)).one()
        assert token_hash != client.cookies.get(MEMBER_COOKIE)  # only its hash is kept
        actions = s.scalars(select(AuditRecord.action).where(AuditRecord.source == "member"))
        assert list(actions) == ["member.sign_in"]


def test_a_number_that_is_no_member_is_offered_only_registration(phone: Phone):
    add_member(phone.web)
    response = ask(phone.client(), "13900139000")
    assert response.status_code == 200
    assert 'id="not-member"' in response.text
    assert 'action="/m/sign-in"' not in response.text
    assert phone.sender.sent() == []
    with phone.web.session() as s:
        assert s.scalar(select(func.count()).select_from(HqMessage)) == 0


def test_a_bad_number_is_refused_in_one_line(phone: Phone):
    response = ask(phone.client(), "12345")
    assert response.status_code == 400
    assert "11" in response.text and phone.sender.sent() == []


def test_one_code_a_minute_and_five_an_hour_per_number(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    assert ask(client).status_code == 200
    again = ask(client)
    assert again.status_code == 429 and "60 s" in again.text
    for _ in range(NUMBER_PER_HOUR - 1):
        phone.web.clock.advance(seconds=61)
        assert ask(client).status_code == 200
    phone.web.clock.advance(seconds=61)
    sixth = ask(client)
    assert sixth.status_code == 429 and "5" in sixth.text
    assert len(phone.sender.sent()) == NUMBER_PER_HOUR
    phone.web.clock.advance(minutes=60)
    assert ask(client).status_code == 200
    assert len(phone.sender.sent()) == NUMBER_PER_HOUR + 1


def test_an_address_asks_for_twenty_codes_an_hour_at_most(phone: Phone):
    add_member(phone.web)
    crowded = phone.client("198.51.100.9")
    for n in range(ADDRESS_PER_HOUR):
        response = ask(crowded, f"139{n:08d}")  # numbers that are not members count too
        assert response.status_code == 200, n
    refused = ask(crowded)
    assert refused.status_code == 429
    assert phone.sender.sent() == []
    assert ask(phone.client("198.51.100.10")).status_code == 200
    assert len(phone.sender.sent()) == 1
    phone.web.clock.advance(minutes=61)
    assert ask(crowded, "13700137000").status_code == 200


def test_a_code_expires_after_five_minutes_and_is_used_once(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    ask(client)
    phone.web.clock.advance(minutes=5, seconds=1)
    late = enter(client, phone.codes()[0])
    assert late.status_code == 401 and "has expired or was used" in late.text
    ask(client)
    code = phone.codes()[1]
    assert enter(client, code).status_code == 303
    assert enter(phone.client(), code).status_code == 401


def test_a_new_code_ends_the_one_before(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    ask(client)
    phone.web.clock.advance(seconds=61)
    ask(client)
    first, second = phone.codes()
    if first != second:
        assert enter(client, first).status_code == 401
    assert enter(client, second).status_code == 303


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def test_five_wrong_codes_lock_the_number_for_thirty_minutes(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    ask(client)
    code = phone.codes()[0]
    for left in (4, 3, 2, 1):
        response = enter(client, _wrong(code))
        assert response.status_code == 401 and str(left) in response.text
    locked = enter(client, _wrong(code))
    assert locked.status_code == 429 and "09:30" in locked.text
    assert enter(client, code).status_code == 429  # even the right code
    phone.web.clock.advance(minutes=10)
    assert ask(client).status_code == 429
    assert len(phone.sender.sent()) == 1
    phone.web.clock.advance(minutes=20, seconds=1)
    signed_in(phone, client)
    with phone.web.session() as s:
        actions = list(s.scalars(select(AuditRecord.action).order_by(AuditRecord.id)))
    assert actions == ["member.sign_in_locked", "member.sign_in"]


def test_forms_without_their_token_change_nothing(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    client.get("/m")
    forged = client.post("/m/code", data={"csrf": "forged", "phone": PHONE})
    assert forged.status_code == 403 and phone.sender.sent() == []
    assert ask(client).status_code == 200
    code = phone.codes()[0]
    forged = client.post("/m/sign-in", data={"csrf": "", "phone": PHONE, "code": code})
    assert forged.status_code == 403 and MEMBER_COOKIE not in client.cookies
    assert enter(client, code).status_code == 303  # the code was not spent by the refusal
    for path in ("/m/consent/withdraw", "/m/consent/give"):
        for token in ("forged", ""):
            assert client.post(path, data={"csrf": token}).status_code == 403, (path, token)
    with phone.web.session() as s:
        assert s.get(CentralMember, "M" * 26).message_consent_version == "2026-01"


def test_member_and_staff_sessions_are_apart(phone: Phone):
    add_member(phone.web)
    phone.web.account("ops", Role.OPERATOR)
    staff = phone.web.client("ops")
    assert 'action="/m/code"' in staff.get("/m").text  # a staff session is no member's
    member = phone.client()
    signed_in(phone, member)
    assert member.get("/fleet").status_code == 303  # a member's session is no staff's
    assert member.get("/fleet").headers["location"].startswith("/login")
    member.cookies.set("mck_session", str(member.cookies.get(MEMBER_COOKIE)))
    assert member.get("/fleet").status_code == 303


def test_consent_is_withdrawn_and_given_again_on_the_page(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    signed_in(phone, client)
    response = client.post("/m/consent/withdraw", data={"csrf": member_csrf(client)})
    assert response.status_code == 303
    with phone.web.session() as s:
        assert s.get(CentralMember, "M" * 26).message_consent_version is None
        record = s.scalars(
            select(AuditRecord).where(AuditRecord.action == "member.message_consent")
        ).one()
        assert record.source == "member"
    with phone.web.session() as s:
        assert s.get(CentralMember, "M" * 26).phone_enc is None  # forgotten with the consent
    assert 'id="give"' in client.get("/m").text
    # Given again, with the number typed: it must be the membership's own.
    wrong = client.post(
        "/m/consent/give", data={"csrf": member_csrf(client), "phone": "13900139000"}
    )
    assert wrong.status_code == 400 and "not the number" in wrong.text
    bad = client.post("/m/consent/give", data={"csrf": member_csrf(client), "phone": "12"})
    assert bad.status_code == 400
    with phone.web.session() as s:
        member = s.get(CentralMember, "M" * 26)
        assert member.message_consent_version is None and member.phone_enc is None
    client.post("/m/consent/give", data={"csrf": member_csrf(client), "phone": PHONE})
    with phone.web.session() as s:
        member = s.get(CentralMember, "M" * 26)
        assert member.message_consent_version == "2026-12"
        assert member.phone_enc is not None and VAULT.decrypt(member.phone_enc) == PHONE


def test_the_code_the_page_fetches_is_hqs_signed_member_code(phone: Phone):
    add_member(phone.web)
    client = phone.client()
    signed_in(phone, client)
    fresh = client.get("/m/code").json()
    assert fresh["last4"] == CARD[-4:] and fresh["valid_s"] == 60 and fresh["refresh_s"] < 60
    assert fresh["qr"].startswith("data:image/svg+xml;base64,")
    assert phone.client().get("/m/code").status_code == 401


def test_a_blocked_card_shows_no_code(phone: Phone):
    add_member(phone.web, card_state="blocked")
    client = phone.client()
    signed_in(phone, client)
    page = client.get("/m").text
    assert 'id="m-qr"' not in page and "m-error" in page
    assert client.get("/m/code").status_code == 409


def test_without_a_sender_the_page_says_sign_in_is_not_available(web: Web):
    add_member(web)
    client = TestClient(make_app(web.console), follow_redirects=False)
    assert 'action="/m/code"' not in client.get("/m").text
    response = ask(client)
    assert response.status_code == 503


def test_points_expiring_soon_history_and_vouchers_are_shown(phone: Phone):
    add_member(phone.web)
    now = phone.web.clock()
    soon, later = now + timedelta(days=10), now + timedelta(days=200)
    with phone.web.console.tx() as s:
        member = s.get(CentralMember, "M" * 26)
        assert member is not None
        member.balance = 300 + 500 - 100
        for n, (points, lot, expires) in enumerate(
            [(300, IDS.new(), soon), (500, IDS.new(), later), (-100, None, None)]
        ):
            s.add(
                CentralEntry(
                    id=IDS.new(), member_id=member.id,
                    kind="purchase" if points > 0 else "redemption", points=points,
                    lot_id=lot, ref=f"r{n}", store_id="S001", device_id="K001",
                    at=now - timedelta(days=30 - n), event_id=IDS.new(),
                    available_at=now - timedelta(days=30) if lot else None, expires_at=expires,
                )
            )  # fmt: skip
        s.add(
            GiftVoucher(
                issuer_device_id="K001", voucher_id="R1", store_id="S001", member_id=member.id,
                card_no=CARD, sku="TOWEL", name="<b>毛巾</b>", qty=1, valid_until=None,
                event_id="V9", at=now,
            )
        )  # fmt: skip
        # a gift collected already (at another store): no longer one to collect
        s.add(
            GiftVoucher(
                issuer_device_id="K001", voucher_id="R2", store_id="S001", member_id=member.id,
                card_no=CARD, sku="KETTLE", name="电水壶", qty=1, valid_until=None,
                event_id="V8", at=now - timedelta(days=1),
            )
        )  # fmt: skip
        s.add(
            VoucherCollection(
                issuer_device_id="K001", voucher_id="R2", store_id="S002", device_id="K002",
                event_id="V7", at=now,
            )
        )  # fmt: skip
    client = phone.client()
    signed_in(phone, client)
    page = client.get("/m").text
    # The redemption took from the lot expiring first: 200 of its 300 are left.
    assert "200 points expire on" in page and "500 points expire" not in page
    assert "Shopping" in page and "Redeemed at the member center" in page
    assert "&lt;b&gt;毛巾&lt;/b&gt;" in page  # shown escaped
    assert "电水壶" not in page


def test_the_member_code_key_is_made_once(tmp_path: Path):
    private, public = write_member_code_key(tmp_path / "ca")
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = private.read_bytes()
    with pytest.raises(Refusal):
        write_member_code_key(tmp_path / "ca")
    assert private.read_bytes() == before


def test_the_command_makes_the_member_code_key(tmp_path: Path):
    kiosk = Path(sys.executable).parent / "kiosk"
    made = subprocess.run(
        [str(kiosk), "hq", "member-code-key", "--out", str(tmp_path / "ca")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "ca" / "hq-member-code.pem").stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [str(kiosk), "hq", "member-code-key", "--out", str(tmp_path / "ca")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode != 0 and "already exists" in again.stderr
    assert len((again.stdout + again.stderr).strip().splitlines()) == 1


def add_campaign_coupon(s: Session, member_id: str, now: datetime, title: str) -> None:
    """HQ's campaign WINTER (¥10 off ¥100, valid 30 days more) and its coupon C-WINTER-1 in
    ``member_id``'s wallet."""
    s.add(
        Campaign(
            campaign_id="WINTER", title=title, kind="threshold_off",
            value_cents=1000, threshold_cents=10000, percent=0, gift_sku="",
            valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=30),
            audience="all", audience_tier=None, pool_total=100, per_member_limit=1,
            issued=1, created_at=now, created_by="ops",
        )
    )  # fmt: skip
    s.add(
        CampaignCoupon(
            coupon_id="C-WINTER-1", campaign_id="WINTER", member_id=member_id, issued_at=now
        )
    )


def test_coupons_in_the_wallet_carry_the_code_the_lane_takes(phone: Phone):
    add_member(phone.web)
    coupon_key = Ed25519PrivateKey.generate()
    phone.web.console.member_page = MemberPageSettings(
        vault=VAULT, sender=phone.sender, code_key=phone.key, coupon_key=coupon_key
    )
    now = phone.web.clock()
    with phone.web.console.tx() as s:
        add_campaign_coupon(s, "M" * 26, now, "满100减10 <冬季>")
        s.add(CampaignCoupon(coupon_id="C-WINTER-0", campaign_id="WINTER", member_id="M" * 26,
                             issued_at=now, used_at=now))  # fmt: skip
        s.add(
            DeviceCoupon(
                issuer_device_id="K001", coupon_id="P-1", member_id="M" * 26, sku="CPN-5",
                value_cents=500, expires_at=now + timedelta(days=60),
            )
        )  # fmt: skip
    client = phone.client()
    signed_in(phone, client)
    page = client.get("/m").text
    codes = re.findall(r'<code class="m-couponcode">([^<]+)</code>', page)
    assert len(codes) == 1  # the used coupon is gone
    claims = verify_voucher(coupon_key.public_key(), codes[0])
    assert (claims.kind, claims.voucher_id) == ("coupon", "C-WINTER-1")
    assert "满100减10 &lt;冬季&gt;" in page
    assert "¥5.00 off" in page
    assert "valid until 2027-01-06" in page  # the last day, in the stores' timezone


def test_kiosk_hq_web_finds_the_member_pages_keys_in_hqs_tls_folder(tmp_path: Path):
    tls = tmp_path / "tls"
    write_lookup_key(tls / LOOKUP_KEY_FILE)
    write_member_code_key(tls)
    base = {"database_url": sqlite_hq_url(tmp_path / "hq.db"), "data_key_file": hq_data_key_file()}
    config = HqConfig(
        **base, ca_file=str(tls / "ca.crt"), messages={"sender": f"file:{tmp_path}/m.jsonl"}
    )
    settings = member_page_settings(config, None)
    assert settings.signs_in and settings.code_key is not None
    assert settings.vault is not None
    chain = PhoneVault(bytes(range(32)), load_secret(tls / LOOKUP_KEY_FILE))
    assert settings.vault.lookup_hash(PHONE) == chain.lookup_hash(PHONE)
    bare = member_page_settings(HqConfig(**base), None)
    assert not bare.signs_in and bare.code_key is None and bare.sender is None
