"""The view-models without Kivy's window: what they say and what they change."""

from __future__ import annotations

from datetime import UTC, date, datetime

from edge.services import gifts as gift_service
from edge.services import members as member_service
from edge.station.api import GiftTile, MemberView
from edge.station.center import open_center
from edge.station.seed import seed_demo
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.gifts import GiftsViewModel, availability
from kiosk.viewmodels.health import HealthViewModel
from kiosk.viewmodels.identify import IdentifyViewModel
from kiosk.viewmodels.points import PointsViewModel
from kiosk.viewmodels.register import RegisterViewModel
from kiosk.viewmodels.session import SessionViewModel
from kiosk.viewmodels.staff import StaffViewModel


def test_idle_countdown_warns_extends_and_clears():
    session = SessionViewModel(warn_s=30, clear_s=45)
    timeouts = []
    session.bind(on_timeout=lambda *_a: timeouts.append(1))
    session.start(private=True)
    session.tick(29.9)
    assert not session.warning
    session.tick(0.2)
    assert session.warning and session.seconds_left == 15
    session.touched()
    assert not session.warning and session.idle_s == 0
    session.tick(44.9)
    assert not timeouts and session.seconds_left == 1
    session.tick(0.2)
    assert timeouts == [1] and not session.active


def test_idle_timer_sleeps_while_nobody_is_identified():
    session = SessionViewModel(warn_s=1, clear_s=2)
    session.tick(10)
    assert not session.warning and session.idle_s == 0


def test_identify_by_phone_then_proof(center, people, runner, session):
    vm = IdentifyViewModel(center, session, runner)
    found = []
    vm.bind(on_identified=lambda _vm, member: found.append(member))
    for key in "1391234567":
        vm.press(key)
    vm.press("ok")
    assert vm.stage == "phone" and "11-digit" in vm.notice
    vm.press("8")
    vm.press("ok")
    assert vm.stage == "proof"
    for key in "9999":
        vm.press(key)
    vm.press("ok")
    assert vm.notice.startswith("The digits do not match") and vm.proof == ""
    for key in people.li_card[-4:]:
        vm.press(key)
    vm.press("ok")
    assert found and found[0].phone_masked == "139****5678"
    assert session.member is found[0] and vm.stage == "phone" and vm.phone == ""


def test_verification_locks_after_three_wrong_answers(center, people, runner, session):
    vm = IdentifyViewModel(center, session, runner)
    for _ in range(3):
        vm.phone, vm.stage, vm.proof = people.li_phone, "proof", "0000"
        vm.submit()
    assert vm.notice.startswith("Too many wrong answers")
    vm.phone, vm.stage, vm.proof = people.li_phone, "proof", people.li_card[-4:]
    vm.submit()
    assert session.member is None  # even the right digits wait out the lockout


def test_a_phone_lockout_outlasts_a_restart_and_ends_after_ten_minutes(tmp_path):
    from datetime import UTC, datetime, timedelta

    import pytest

    from edge.domain.errors import Refusal

    now = [datetime(2026, 11, 30, 9, 0, tzinfo=UTC)]
    center = open_center(tmp_path / "data", simulate=True)
    try:
        center.app.clock = lambda: now[0]
        people = seed_demo(center.app)
        right = people.li_card[-4:]
        # two wrong answers, then the right one: the count starts again
        for _ in range(2):
            with pytest.raises(Refusal, match="do not match"):
                center.identify_by_phone(people.li_phone, "0000")
        assert center.identify_by_phone(people.li_phone, right).phone_masked == "139****5678"
        for _ in range(2):
            with pytest.raises(Refusal, match="do not match"):
                center.identify_by_phone(people.li_phone, "0000")
        with pytest.raises(Refusal) as third:
            center.identify_by_phone(people.li_phone, "0000")
        assert third.value.code == "verify_locked"
    finally:
        center.close()
    # the app restarts: the lockout holds, even for the right digits
    center = open_center(tmp_path / "data", simulate=True)
    try:
        center.app.clock = lambda: now[0]
        now[0] += timedelta(minutes=9)
        with pytest.raises(Refusal) as locked:
            center.identify_by_phone(people.li_phone, right)
        assert locked.value.code == "verify_locked"
        # another member is not affected
        assert center.identify_by_phone(people.wang_phone, people.wang_card[-4:])
        now[0] += timedelta(minutes=1, seconds=1)
        assert center.identify_by_phone(people.li_phone, right).phone_masked == "139****5678"
    finally:
        center.close()


def test_old_wrong_answers_lapse_and_a_clock_set_back_does_not_stretch_a_lockout(center, people):
    from datetime import UTC, datetime, timedelta

    import pytest

    from edge.domain.errors import Refusal

    now = [datetime(2026, 11, 30, 9, 0, tzinfo=UTC)]
    center.app.clock = lambda: now[0]
    for _ in range(2):
        with pytest.raises(Refusal, match="do not match"):
            center.identify_by_phone(people.li_phone, "0000")
    now[0] += timedelta(minutes=11)  # the two are more than ten minutes old: not counted
    with pytest.raises(Refusal) as third:
        center.identify_by_phone(people.li_phone, "0000")
    assert third.value.code == "verify_failed"
    for _ in range(2):
        with pytest.raises(Refusal):
            center.identify_by_phone(people.li_phone, "0000")
    with pytest.raises(Refusal) as locked:
        center.identify_by_phone(people.li_phone, people.li_card[-4:])
    assert locked.value.code == "verify_locked"
    # the clock is set back an hour: the lock, dated in its future, does not hold it longer
    now[0] -= timedelta(hours=1)
    assert center.identify_by_phone(people.li_phone, people.li_card[-4:])


def test_staff_badges_are_not_member_codes(center, people, runner, session):
    vm = IdentifyViewModel(center, session, runner)
    vm.scanned("STAFF:1001")
    assert vm.notice == "" and session.member is None


def test_check_in_updates_the_session_member(center, people, runner, session):
    session.start(center.identify(people.wang_card))
    before = session.member.balance
    vm = PointsViewModel(center, session, runner)
    vm.check_in()
    assert vm.notice_kind == "ok" and vm.notice_args == {"points": 5}
    assert session.member.balance == before + 5 and session.member.checked_in_today
    vm.check_in()
    assert vm.notice_kind == "warn" and "already checked in" in vm.notice


def _member(available: int) -> MemberView:
    return MemberView(
        member_id="M1", card_no="2900000000018", card_state="active",
        card_masked="*********0018", phone_masked="138****8000", name_masked="王先生",
        tier="normal", tier_name_zh="普通会员", tier_name_en="Member",
        balance=available, available=available, pending=0, expiring=(),
        next_tier=None, next_tier_name_zh="", next_tier_name_en="", next_tier_missing=None,
        tier_basis="spend", birthday_month=False, checked_in_today=False,
        birthday_bonus_claimed=False, overdraft_flagged=False,
        registered_at=datetime(2026, 1, 1, tzinfo=UTC), deleted=False,
    )  # fmt: skip


def test_tile_availability_is_known_before_a_tap():
    tile = GiftTile("T", "毛巾", "gift", 300, 5, False, 0)
    assert availability(tile, _member(300)) == "ok"
    assert availability(tile, _member(299)) == "insufficient_points"
    empty = GiftTile("T", "毛巾", "gift", 300, 0, False, 0)
    assert availability(empty, _member(5000)) == "out_of_stock"


def test_redeem_confirms_first_and_redeems_once(center, people, runner, session):
    session.start(center.identify(people.wang_card))
    vm = GiftsViewModel(center, session, runner)
    vm.load()
    vm.select("OIL")
    assert vm.stage == "browse" and vm.notice_args["name"] == "花生油1.8L"
    vm.select("TOWEL")
    assert vm.stage == "confirm"
    assert gift_service.last_redemption(center.app) is None  # nothing before the confirm
    vm.confirm()
    vm.confirm()  # a second tap on a finished redemption does nothing
    assert vm.stage == "done" and vm.outcome.voucher.printed
    assert len([r for r in center.simulator.receipts() if r == "gift-voucher"]) == 1
    assert session.member.balance == vm.outcome.balance


def test_registration_validates_each_step(center, people, runner, session):
    vm = RegisterViewModel(center, session, runner)
    vm.start("zh_CN")
    assert "会员个人信息保护告知书" in vm.terms_text
    vm.phone = "12345"
    vm.next()
    assert vm.step == "phone" and vm.notice_kind == "warn"
    vm.phone = "13633334444"
    vm.next()
    vm.pick_surname("李")
    vm.next()
    assert vm.step == "name"  # a surname needs a form of address
    vm.pick_title("先生")
    vm.next()
    vm.birthday = "19561340"
    vm.next()
    assert vm.step == "birthday"
    vm.birthday = "19561130"
    vm.next()
    vm.referrer = people.wang_phone
    vm.next()
    vm.next()
    assert vm.step == "terms" and "tick to agree" in vm.notice
    vm.toggle_consent()
    vm.next()
    assert vm.step == "done" and vm.outcome.card.dispensed
    # the next step is said first, with where: the card slot and the printer's
    assert vm.take == "Please take your card and your slip" and vm.slots == ["card", "slip"]
    view = member_service.show_member(center.app, phone="13633334444")
    assert view.name_masked == "李先生"
    assert vm.outcome.member.card_no == view.card_no
    assert session.member.card_no == view.card_no


def test_registration_of_a_known_phone_is_refused(center, people, runner, session):
    vm = RegisterViewModel(center, session, runner)
    vm.start("en")
    vm.phone, vm.step, vm.consent = people.wang_phone, "terms", True
    vm.next()
    assert vm.step == "terms" and "already registered" in vm.notice


def test_staff_sign_in_and_lost_card(center, people, runner, session):
    vm = StaffViewModel(center, session, runner)
    vm.start()
    vm.badge("STAFF:" + people.clerk_id)
    assert vm.field == "pin"
    for key in people.clerk_pin:
        vm.press(key)
    vm.press("ok")
    assert vm.page == "menu" and vm.staff.staff_id == people.clerk_id
    vm.open_page("lost")
    for key in people.zhao_phone:
        vm.press(key)
    vm.press("ok")
    assert vm.member.card_state == "lost"
    vm.replace_card()  # identity not yet checked: nothing happens
    assert vm.notice_kind == "warn"
    assert (
        member_service.show_member(center.app, phone=people.zhao_phone).card_state == "lost"
    )  # not replaced yet
    vm.confirm_identity()
    vm.replace_card()
    new = vm.replacement.new_card_no
    assert member_service.show_member(center.app, card_no=new).card_state == "active"
    vm.sign_out()
    assert vm.staff is None and not session.active


def test_birthday_date_is_parsed(center, runner, session):
    vm = RegisterViewModel(center, session, runner)
    vm.birthday = "19600229"
    assert vm.parsed_birthday() == date(1960, 2, 29)


def test_keypads_take_full_width_digits_and_no_other_numerals(center, people, runner, session):
    identify = IdentifyViewModel(center, session, runner)
    for key in ["１", "3", "٩", "९", "²", "①", "９", "x"]:
        identify.press(key)
    assert identify.phone == "139"
    register = RegisterViewModel(center, session, runner)
    for key in ["１", "٣", "３"]:
        register.press(key)
    assert register.phone == "13"
    staff = StaffViewModel(center, session, runner)
    staff.start()
    staff.badge("STAFF:" + people.clerk_id)
    wide = people.clerk_pin.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    for key in ["٣", *wide]:
        staff.press(key)
    assert staff.pin == people.clerk_pin
    staff.press("ok")
    assert staff.page == "menu" and staff.staff.staff_id == people.clerk_id


def test_the_fault_strip_says_what_the_device_list_says(center, people, runner, session):
    health = HealthViewModel()
    vm = StaffViewModel(center, session, runner)
    health.follow(vm)
    center.simulator.dispenser_jam()
    staff = center.staff_sign_in(people.clerk_id, people.clerk_pin, "replace_card")
    assert center.replace_lost_card(staff, people.li_card).card.dispense_problem == "jam"
    health.seen(center.device_status())  # the app's poll, every few seconds
    assert health.fault == fault_message("jam")
    vm.start()
    vm.badge("STAFF:" + people.clerk_id)
    for key in people.clerk_pin:
        vm.press(key)
    vm.press("ok")
    vm.clear_faults()
    assert vm.devices and all(d.ok for d in vm.devices)
    assert health.fault == ""  # at once, not at the next poll
    center.simulator.dispenser_jam()
    center.replace_lost_card(staff, people.wang_card)
    vm.open_page("devices")  # the list read again: the strip follows
    assert not all(d.ok for d in vm.devices) and health.fault == fault_message("jam")


def test_a_jammed_dispenser_sends_the_new_member_to_the_slip_and_the_staff(
    center, people, runner, session
):
    vm = RegisterViewModel(center, session, runner)
    vm.start("zh_CN")
    center.simulator.dispenser_jam()
    vm.phone, vm.step, vm.consent = "13633335555", "terms", True
    vm.next()
    assert vm.step == "done" and not vm.outcome.card.dispensed
    assert vm.take == "Please take your slip: staff will give you your card"
    assert vm.slots == ["slip"] and vm.notice_kind == "warn"
    vm.start("zh_CN")  # the next customer starts clean
    assert vm.take == "" and vm.slots == []


def test_a_staff_account_hq_disabled_is_refused_on_the_screen_saying_so(
    center, people, runner, session
):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.protocol import STAFF_SIGNING_DOMAIN, StaffAccount, StaffList
    from edge.security.pins import hash_pin
    from edge.services.pushes import apply_staff_list
    from hq.commands import sign_message

    hq = Ed25519PrivateKey.generate()
    disabled = StaffAccount(
        staff_id=people.clerk_id,
        role="supervisor",
        pin_hash=hash_pin(people.clerk_pin),
        active=False,
    )
    pushed = StaffList(
        store_id=center.app.store_id, version=1, issued_at=datetime.now(UTC), accounts=[disabled]
    )
    signed = sign_message(hq, STAFF_SIGNING_DOMAIN, pushed)
    assert apply_staff_list(center.app, signed, hq.public_key()).applied
    vm = StaffViewModel(center, session, runner)
    vm.start()
    vm.badge("STAFF:" + people.clerk_id)
    for key in people.clerk_pin:
        vm.press(key)
    vm.press("ok")
    assert vm.page == "sign_in" and vm.staff is None
    assert (vm.notice, vm.notice_kind) == ("This account was disabled by HQ.", "warn")


def test_a_voucher_hq_says_was_collected_elsewhere_says_where_and_when(
    center, people, runner, session, monkeypatch
):
    from edge.domain.errors import Refusal

    def collected_elsewhere(staff, code):
        raise Refusal(
            "this voucher was already collected on 2026-03-02 11:00 at store S002",
            code="voucher_collected",
            collected_at="2026-03-02T03:00:00+00:00",
            when="2026-03-02 11:00",
            store_id="S002",
            device_id="K002",
        )

    monkeypatch.setattr(center, "hand_over_gift", collected_elsewhere)
    vm = StaffViewModel(center, session, runner)
    vm.start()
    vm.badge("STAFF:" + people.clerk_id)
    for key in people.clerk_pin:
        vm.press(key)
    vm.press("ok")
    vm.voucher("MCK1-some-voucher")
    assert vm.page == "handover" and vm.handover is None
    assert vm.notice_kind == "warn"
    assert vm.notice.format(**vm.notice_args) == (
        "Collected before, at store S002 on 2026-03-02 11:00. Do not hand the gift over."
    )
