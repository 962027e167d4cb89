"""The member page on a phone-sized Chromium (390x844): a member registered at a kiosk signs
in with the code the development sender wrote, the screenshot of their member code is read by
the kiosk's own decoder (``kiosk scan``), and a kiosk identifies them from it once: the same
code again is refused as used, and later as expired.

With MEMBER_SCREENSHOTS=DIR set, the pages are saved there (docs/screenshots/member/ is made
this way)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.domain.errors import Refusal
from edge.domain.ids import IdFactory
from edge.security.keys import load_private_key
from edge.security.personal import PhoneVault
from edge.services.members import identify, register_member
from edge.services.points import accrue_purchase
from hq.enrol import write_member_code_key
from hq.messages import FileSender
from hq.models import CentralEntry, CentralMember, GiftVoucher
from hq.web.member_page import MemberPageSettings
from tests.hq.test_feeds import send
from tests.sync.conftest import kiosk_config
from tests.waiting import wait_for
from tests.web.conftest import Served
from tests.web.test_member_page import add_campaign_coupon

SHOTS = os.environ.get("MEMBER_SCREENSHOTS")
PHONE = "13912345678"
KIOSK = Path(sys.executable).parent / "kiosk"
IDS = IdFactory()


def shot(page: Any, name: str, full: bool = True) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"member-{name}.png"), full_page=full)


def scan(image: Path) -> list[str]:
    """What ``kiosk scan`` reads in ``image``."""
    done = subprocess.run(
        [str(KIOSK), "scan", "--json", str(image)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [c["text"] for c in json.loads(done.stdout)["codes"]]


def fits(page: Any) -> bool:
    """Nothing on the page is wider than the viewport."""
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


def test_a_member_signs_in_on_a_phone_and_a_kiosk_reads_their_code_once(
    served: Served, browser: Any, make_app: Any, clock: Any, tmp_path: Path
) -> None:
    web = served.web
    private, public = write_member_code_key(tmp_path / "ca")
    # The kiosk's member-code check keeps its defaults: the code is refused as expired once
    # its 60 s have passed since HQ minted it.
    kiosk = make_app(
        kiosk_config("K001", "S001", 1, 104_271)
        + f'\n[security]\nmember_code_public_key = "{public}"\n'
    )
    clock.now = datetime.now(UTC)
    registration = register_member(kiosk, PHONE, consent=True)
    accrue_purchase(kiosk, registration.card_no, 12_800, "R-0001")
    accrue_purchase(kiosk, registration.card_no, 35_650, "R-0002")
    send(web.console.engine, kiosk, clock.now)  # what the agent does: HQ stores its events
    now = datetime.now(UTC)
    with web.session() as s:
        member = s.get(CentralMember, registration.member_id)
        assert member is not None
        # What else a member's page shows: points carried over from the chain's old system
        # that lapse soon, a campaign's coupon in the wallet, a gift not collected yet.
        member.balance += 320
        s.add(
            CentralEntry(
                id=IDS.new(), member_id=member.id, kind="opening", points=320,
                lot_id=IDS.new(), ref="import", store_id="S001", device_id="import",
                at=now - timedelta(days=340), event_id=IDS.new(),
                available_at=now - timedelta(days=340), expires_at=now + timedelta(days=20),
            )
        )  # fmt: skip
        add_campaign_coupon(s, member.id, now, "冬季满100减10")
        s.add(
            GiftVoucher(
                issuer_device_id="K001", voucher_id="R-TOWEL", store_id="S001",
                member_id=member.id, card_no=registration.card_no, sku="TOWEL",
                name="毛巾", qty=1, valid_until=None, event_id=IDS.new(), at=now,
            )
        )  # fmt: skip
        s.commit()
    sender = FileSender(tmp_path / "messages.jsonl")
    web.console.member_page = MemberPageSettings(
        vault=PhoneVault(web.config.data_key(), kiosk.keys.lookup_key),
        sender=sender,
        code_key=load_private_key(private),
        coupon_key=Ed25519PrivateKey.generate(),
    )

    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, locale="zh-CN"
    )
    context.clock.install()  # the page's timers, moved on below instead of waited for
    page = context.new_page()
    errors: list[str] = []  # a script or style the CSP refused would show here
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(served.url + "/m")
    assert "手机" in page.inner_text("h1")  # Chinese first
    assert fits(page)
    shot(page, "sign-in")
    page.fill("input[name=phone]", PHONE)
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=code]")
    text = wait_for(sender.sent, what="the sign-in code's message")[0]["text"]
    code = re.findall(r"\b(\d{6})\b", text)[0]
    shot(page, "code-sent")
    page.fill("input[name=code]", code)
    page.click("form[action='/m/sign-in'] button")
    page.wait_for_selector("#m-qr")
    assert fits(page)
    assert page.inner_text("#m-last4") == registration.card_no[-4:]
    # HQ counts the spend of the tier's rolling year from the kiosk's purchase events.
    assert "¥1,515.50" in page.inner_text("#points")
    assert page.locator("#history tr").count() == 3
    whole = page.inner_text("body")
    assert "320" in whole and "冬季满100减10" in whole and "毛巾" in whole
    assert page.locator("code.m-couponcode").count() == 1
    shot(page, "account")

    image = tmp_path / "member-code.png"
    page.locator("#member-code").screenshot(path=str(image))
    if SHOTS:
        page.locator("#member-code").screenshot(path=str(Path(SHOTS) / "member-code.png"))
    (scanned,) = scan(image)
    assert scanned.startswith("M1")

    clock.now = datetime.now(UTC)
    view = identify(kiosk, scanned)
    assert view.member_id == registration.member_id
    with pytest.raises(Refusal) as replayed:
        identify(kiosk, scanned)
    assert replayed.value.code == "code_replayed"
    clock.advance(seconds=61)  # a minute after the scan: more than 60 s after HQ minted it
    with pytest.raises(Refusal) as expired:
        identify(kiosk, scanned)
    assert expired.value.code == "code_expired"

    def renewed_after(shown: str) -> str:
        """The next code on screen once it is not ``shown`` (the countdown changes the
        picture every second: wait for another code, not other pixels)."""
        codes: list[str] = []

        def another() -> bool:
            page.locator("#member-code").screenshot(path=str(image))
            codes[:] = scan(image)
            return bool(codes) and codes != [shown]

        wait_for(another, what="a new code on screen")
        (code,) = codes
        return code

    # The page fetches a new code by itself before the shown one's minute is up: its timer
    # (45 s on the page's clock, here moved on at once) ...
    page.clock.fast_forward(46_000)
    timed = renewed_after(scanned)
    clock.now = datetime.now(UTC)
    assert identify(kiosk, timed).member_id == registration.member_id
    # ... and at once when the phone shows the page again; each a fresh code for the card
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    renewed = renewed_after(timed)
    clock.now = datetime.now(UTC)
    assert identify(kiosk, renewed).member_id == registration.member_id

    page.click("a[href='/lang/en?back=/m']")
    page.wait_for_selector("text=Show this code at the kiosk")
    assert "Points" in page.inner_text("#points")
    assert fits(page)
    shot(page, "account-en")
    # and on larger screens: a tablet, a desktop browser
    for width, height in ((820, 1180), (1280, 800)):
        page.set_viewport_size({"width": width, "height": height})
        assert fits(page), (width, height)
        assert page.locator("#m-qr").is_visible()
    assert errors == []
    context.close()
