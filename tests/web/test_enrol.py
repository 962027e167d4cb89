"""The enrolment desk in the console: a device's slip in, the bundle's QR code on screen,
read back from a screenshot by the kiosk's own decoder; move and revoke, audited."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from sqlalchemy import select

from drivers.scanner import CodeDecoder
from edge.provisioning.bundle import bundle_from_qr
from edge.provisioning.enrolment import verify_enrolment
from edge.provisioning.pairing import start_pairing
from hq.accounts import Role
from hq.enrol import EnrolmentDesk
from hq.models import AuditRecord, EnrolledDevice
from tests.lifecycle.hq_desk import make_desk
from tests.web.conftest import Served, Web, csrf_of, refused
from tests.web.test_browser import shot, sign_in


def with_desk(web: Web) -> EnrolmentDesk:
    made = make_desk(web.tmp / "desk", web.tmp / "ca")
    made.engine.dispose()
    web.console.desk = EnrolmentDesk(web.console.engine, made.settings, source="web")
    return web.console.desk


def test_enrol_a_device_and_its_kiosk_reads_the_code_off_the_screen(
    served: Served, browser
) -> None:
    web = served.web
    desk = with_desk(web)
    web.account("olga", Role.OPERATOR)
    slip = start_pairing(web.tmp / "kiosk-data", serial="10000000cafe0001")
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    page = context.new_page()
    sign_in(page, served.url, "olga")
    page.goto(served.url + "/enrol")
    page.fill("textarea[name=qr_text]", slip.qr_text)
    page.fill("input[name=store]", "S021")
    shot(page, "enrol")
    page.click("#enrol-form button")
    page.wait_for_selector("#bundle-qr")
    page.set_viewport_size({"width": 1280, "height": 1000})
    shot(page, "enrolled")
    png = page.locator("#bundle-qr").screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    (code,) = CodeDecoder().decode(image)  # type: ignore[arg-type]
    bundle = bundle_from_qr(code.text)
    public = (desk.settings.ca_dir / "hq-enrol.pub").read_bytes()
    from cryptography.hazmat.primitives import serialization

    enrolment = verify_enrolment(bundle, serialization.load_pem_public_key(public))  # type: ignore[arg-type]
    assert (enrolment.store_id, enrolment.device_id) == ("S021", "K001")
    with web.session() as s:
        device = s.get(EnrolledDevice, "K001")
        assert device is not None and device.store_id == "S021"
        audit = s.scalars(select(AuditRecord).where(AuditRecord.action == "device.enrol")).all()
        assert [(a.actor, a.source, a.store_id) for a in audit] == [("olga", "web", "S021")]
    # the same slip again: refused with a reason, nothing more enrolled
    page.goto(served.url + "/enrol")
    page.fill("textarea[name=qr_text]", slip.qr_text)
    page.fill("input[name=store]", "S021")
    page.click("#enrol-form button")
    page.wait_for_selector(".flash.error")
    assert "pairing code was already used" in page.locator(".flash.error").inner_text()
    context.close()


def test_revoke_and_refusals_from_the_desk(web: Web) -> None:
    with_desk(web)
    web.account("olga", Role.OPERATOR)
    web.account("vera", Role.VIEWER)
    slip = start_pairing(web.tmp / "kiosk-data", serial="10000000cafe0002")
    client = web.client("olga")
    token = csrf_of(client, "/enrol")
    garbled = client.post(
        "/enrol", data={"csrf": token, "qr_text": slip.qr_text[:-30] + "xyz", "store": "S1"}
    )
    assert garbled.status_code == 303 and refused(garbled)
    done = client.post("/enrol", data={"csrf": token, "qr_text": slip.qr_text, "store": "S001"})
    assert done.status_code == 200 and 'id="bundle-qr"' in done.text
    viewer = web.client("vera")
    assert "Move" not in viewer.get("/enrol").text and "迁移" not in viewer.get("/enrol").text
    # the device moves to another store: a new slip from it, a new bundle on screen
    moved_slip = start_pairing(web.tmp / "kiosk-data", serial="10000000cafe0002")
    moved = client.post(
        "/devices/K001/move", data={"csrf": token, "qr_text": moved_slip.qr_text, "store": "S002"}
    )
    assert moved.status_code == 200 and 'id="bundle-qr"' in moved.text
    with web.session() as s:
        device = s.get(EnrolledDevice, "K001")
        assert device is not None and device.store_id == "S002"
    # a broken device replaced by a spare, which takes its id
    spare = start_pairing(web.tmp / "spare-data", serial="10000000cafe0003")
    replaced = client.post(
        "/devices/K001/replace",
        data={"csrf": token, "qr_text": spare.qr_text, "reason": "screen broken"},
    )
    assert replaced.status_code == 200 and 'id="bundle-qr"' in replaced.text
    with web.session() as s:
        device = s.get(EnrolledDevice, "K001")
        assert device is not None and device.serial == "10000000cafe0003"
    no_reason = client.post("/devices/K001/revoke", data={"csrf": token, "reason": " "})
    assert no_reason.status_code == 303
    with web.session() as s:
        assert s.get(EnrolledDevice, "K001").state == "active"
    client.post("/devices/K001/revoke", data={"csrf": token, "reason": "stolen from the store"})
    with web.session() as s:
        assert s.get(EnrolledDevice, "K001").state == "revoked"
        actions = s.scalars(select(AuditRecord.action).order_by(AuditRecord.id)).all()
    assert [a for a in actions if a.startswith("device.")] == [
        "device.enrol",
        "device.move",
        "device.replace",
        "device.revoke",
    ]
    assert (Path(web.console.desk.settings.crl_path)).exists()
