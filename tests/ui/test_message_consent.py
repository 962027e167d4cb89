"""SMS reminders at the touchscreen: a separate choice at registration, unticked by default,
and a switch on the member's points screen; each reaches the ledger and HQ's outbox."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from edge.security.contact import contact_public_pem, open_phone
from edge.security.keys import HQ_CONTACT_PUBLIC_KEY_FILE
from edge.services import members as member_service
from edge.storage.models import OutboxEvent


def install_hq_contact_key(kiosk) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    keys_dir = kiosk.center.app.keys.keys_dir
    keys_dir.mkdir(parents=True, exist_ok=True)
    (keys_dir / HQ_CONTACT_PUBLIC_KEY_FILE).write_text(contact_public_pem(key))
    return key


def sent(kiosk, kind: str) -> list[dict]:
    with kiosk.center.app.db.read() as s:
        rows = s.scalars(select(OutboxEvent.payload).where(OutboxEvent.kind == kind))
        return [json.loads(p)["data"] for p in rows]


def register(kiosk, phone: str, messages: bool) -> None:
    kiosk.tap("register")
    kiosk.type_digits(phone)
    kiosk.tap("key-ok")
    kiosk.tap("reg-skip")
    kiosk.tap("reg-skip")
    kiosk.tap("reg-skip")
    choice = kiosk.find("messages")
    assert choice.text == "□ 接收积分到期、生日月和优惠券短信提醒，可随时退订"  # not ticked
    kiosk.tap("consent")
    if messages:
        kiosk.tap("messages")
        assert kiosk.find("messages").text.startswith("√ ")
    kiosk.tap("reg-next")
    kiosk.wait_for(lambda: kiosk.app.register_vm.step == "done", what="registration")
    kiosk.tap("to-points")


def test_registration_asks_for_messages_apart_from_the_terms(kiosk):
    hq_key = install_hq_contact_key(kiosk)
    register(kiosk, "13644445555", messages=False)
    assert kiosk.find("messages-state").text == "短信提醒：未开启"
    assert not member_service.show_member(kiosk.center.app, phone="13644445555").message_consent
    kiosk.tap("done")
    register(kiosk, "13655556666", messages=True)
    assert kiosk.find("messages-state").text == "短信提醒：已开启"
    view = member_service.show_member(kiosk.center.app, phone="13655556666")
    assert view.message_consent
    first, second = sent(kiosk, "member.registered")[-2:]
    assert "phone_sealed" not in first and "message_consent_version" not in first
    assert second["message_consent_version"] == "2026-12"
    assert open_phone(hq_key, second["phone_sealed"], view.member_id) == "13655556666"


def test_the_points_screen_turns_sms_reminders_on_and_off(kiosk):
    install_hq_contact_key(kiosk)
    card = kiosk.people.wang_card
    kiosk.scan(card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    assert kiosk.find("messages-state").text == "短信提醒：未开启"
    kiosk.tap("messages")
    kiosk.wait_for(lambda: "短信提醒已开启" in kiosk.notice(), what="reminders turned on")
    assert kiosk.find("messages-state").text == "短信提醒：已开启"
    assert kiosk.find("messages").text == "关闭短信提醒"
    assert member_service.show_member(kiosk.center.app, card_no=card).message_consent
    kiosk.tap("messages")
    kiosk.wait_for(lambda: "短信提醒已关闭" in kiosk.notice(), what="reminders turned off")
    assert kiosk.find("messages-state").text == "短信提醒：未开启"
    assert not member_service.show_member(kiosk.center.app, card_no=card).message_consent
    given, withdrawn = sent(kiosk, "member.message_consent")
    assert given["version"] == "2026-12" and "phone_sealed" in given
    assert withdrawn["version"] is None and "phone_sealed" not in withdrawn
