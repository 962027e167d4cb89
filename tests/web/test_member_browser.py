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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.domain.errors import Refusal
from edge.security.keys import load_private_key
from edge.security.personal import PhoneVault
from edge.services.members import identify, register_member
from edge.services.points import accrue_purchase
from hq.enrol import write_member_code_key
from hq.messages import FileSender
from hq.models import CentralMember
from hq.web.member_page import MemberPageSettings
from tests.hq.test_feeds import send
from tests.sync.conftest import kiosk_config
from tests.waiting import wait_for
from tests.web.conftest import Served

SHOTS = os.environ.get("MEMBER_SCREENSHOTS")
PHONE = "13912345678"
KIOSK = Path(sys.executable).parent / "kiosk"


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
    # The kiosk's member-code check keeps its default skew (90 s): the code is refused as
    # expired once ttl + skew (150 s) have passed since it was minted.
    kiosk = make_app(
        kiosk_config("K001", "S001", 1, 104_271)
        + f'\n[security]\nmember_code_public_key = "{public}"\n'
    )
    clock.now = datetime.now(UTC)
    registration = register_member(kiosk, PHONE, consent=True)
    accrue_purchase(kiosk, registration.card_no, 12_800, "R-0001")
    accrue_purchase(kiosk, registration.card_no, 35_650, "R-0002")
    send(web.console.engine, kiosk, clock.now)  # what the agent does: HQ stores its events
    with web.session() as s:
        assert s.get(CentralMember, registration.member_id) is not None
    sender = FileSender(tmp_path / "messages.jsonl")
    web.console.member_page = MemberPageSettings(
        vault=PhoneVault(web.config.data_key(), kiosk.keys.lookup_key),
        sender=sender,
        code_key=load_private_key(private),
    )

    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, locale="zh-CN"
    )
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
    assert page.locator("#history tr").count() == 2
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
    clock.advance(seconds=151)
    with pytest.raises(Refusal) as expired:
        identify(kiosk, scanned)
    assert expired.value.code == "code_expired"

    # The page fetches a new code by itself (here: at once, as when the phone shows the page
    # again) and that one is a different, fresh code for the same card.
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    renewed_codes: list[str] = []

    def renewed_on_screen() -> bool:
        # The countdown changes the picture every second: wait for another code, not pixels.
        page.locator("#member-code").screenshot(path=str(image))
        renewed_codes[:] = scan(image)
        return bool(renewed_codes) and renewed_codes != [scanned]

    wait_for(renewed_on_screen, what="a new code on screen")
    (renewed,) = renewed_codes
    clock.now = datetime.now(UTC)
    assert identify(kiosk, renewed).member_id == registration.member_id

    page.click("a[href='/lang/en?back=/m']")
    page.wait_for_selector("text=Show this code at the kiosk")
    assert "Points" in page.inner_text("#points")
    assert fits(page)
    shot(page, "account-en")
    assert errors == []
    context.close()
