"""Staff, technician, idle timeout and screen settings, through the real app."""

from __future__ import annotations

import pytest

from edge.services import corrections
from edge.services import gifts as gift_service
from edge.services import members as member_service
from edge.services import staff as staff_service
from edge.services.staff import StaffIdentity
from edge.services.status import audit_log
from tests.ui.test_layouts import LayoutTour


def sign_in(kiosk, staff_id, pin):
    kiosk.type_digits(staff_id)
    kiosk.tap("key-ok")
    kiosk.type_digits(pin)
    kiosk.tap("key-ok")


def test_lost_card_is_blocked_and_replaced_with_the_balance(kiosk):
    people = kiosk.people
    old = people.zhao_card_blocked
    balance = member_service.show_member(kiosk.center.app, card_no=old).balance
    kiosk.tap("staff")
    kiosk.scan("STAFF:" + people.clerk_id)  # the badge fills in the staff number
    kiosk.wait_for(lambda: kiosk.app.staff_vm.field == "pin", what="badge read")
    kiosk.type_digits(people.clerk_pin)
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.has("lost-card"), what="staff menu")
    kiosk.tap("lost-card")
    kiosk.type_digits(people.zhao_phone)
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: "137****1111" in kiosk.find("lost-member").text, what="member found")
    kiosk.tap("replace")
    assert "核对会员身份证件" in kiosk.notice()  # not before the identity check
    kiosk.tap("verified")
    kiosk.tap("replace")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.replacement is not None, what="replacement")
    new = kiosk.app.staff_vm.replacement.new_card_no
    assert new in kiosk.notice()
    assert member_service.show_member(kiosk.center.app, card_no=old).card_state == "replaced"
    fresh = member_service.show_member(kiosk.center.app, card_no=new)
    assert fresh.card_state == "active" and fresh.balance == balance
    assert kiosk.center.simulator.receipts()[-1] == "card-replacement"
    assert "card.replace" in [a.action for a in audit_log(kiosk.center.app)]


def test_staff_adjust_points_with_a_supervisors_approval_above_the_limit(kiosk):
    people, app = kiosk.people, kiosk.center.app
    before = member_service.show_member(app, card_no=people.wang_card).balance
    kiosk.tap("staff")
    sign_in(kiosk, people.clerk_id, people.clerk_pin)
    kiosk.wait_for(lambda: kiosk.has("adjust"), what="staff menu")
    kiosk.tap("adjust")
    kiosk.type_digits(people.wang_phone)
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.member is not None, what="member found")
    kiosk.tap("reason-goodwill")
    kiosk.type_digits("30")
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.adjusted is not None, what="adjusted")
    assert "已记账 +30 积分" in kiosk.notice()
    assert member_service.show_member(app, card_no=people.wang_card).balance == before + 30

    kiosk.tap("adjust-sign")  # take points: more than the limit, so a supervisor approves
    kiosk.type_digits(str(app.config.desk.adjust_approval_above + 1))
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.approver_field == "staff_id", what="approval")
    assert "主管" in kiosk.notice()
    kiosk.type_digits(people.clerk_id)  # nobody approves their own
    kiosk.tap("key-ok")
    kiosk.type_digits(people.clerk_pin)
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: "第二位员工" in kiosk.notice(), what="refused: approved by oneself")
    assert member_service.show_member(app, card_no=people.wang_card).balance == before + 30
    supervisor = StaffIdentity(people.clerk_id, "supervisor")  # the demo's first account
    staff_service.add_staff(app, "2002", "supervisor", "4826", by=supervisor)
    kiosk.type_digits(str(app.config.desk.adjust_approval_above + 1))
    kiosk.tap("key-ok")
    kiosk.type_digits("2002")
    kiosk.tap("key-ok")
    kiosk.type_digits("4826")
    kiosk.tap("key-ok")
    kiosk.wait_for(
        lambda: kiosk.app.staff_vm.adjusted and kiosk.app.staff_vm.adjusted.points < 0,
        what="the approved debit",
    )
    assert kiosk.app.staff_vm.adjusted.approved_by == "2002"
    history = member_service.show_member(app, card_no=people.wang_card).history
    assert [h.kind for h in history[:2]] == ["adjustment", "adjustment"]


def test_staff_settle_what_a_member_owes_at_the_staff_screen(kiosk):
    people, app = kiosk.people, kiosk.center.app
    supervisor = StaffIdentity(people.clerk_id, "supervisor")  # the demo's first account
    staff_service.add_staff(app, "2002", "supervisor", "4826", by=supervisor)
    li = member_service.show_member(app, phone=people.li_phone)
    approver = StaffIdentity("2002", "supervisor")
    corrections.adjust_points(
        app, people.li_card, -(li.balance + 50), "correction", "refund after redemption",
        StaffIdentity(people.clerk_id, "clerk"), approver,
    )  # fmt: skip
    assert member_service.show_member(app, phone=people.li_phone).overdraft_flagged

    kiosk.tap("staff")
    sign_in(kiosk, people.clerk_id, people.clerk_pin)
    kiosk.wait_for(lambda: kiosk.has("adjust"), what="staff menu")
    kiosk.tap("adjust")
    kiosk.type_digits(people.wang_phone)  # Wang owes nothing: nothing to settle
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.member is not None, what="member found")
    assert kiosk.find("reason-overdraft_written_off").disabled
    assert kiosk.find("reason-overdraft_settled").opacity == 0

    kiosk.tap("staff-menu", "adjust")
    kiosk.type_digits(people.li_phone)
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.member is not None, what="member found")
    kiosk.tap("reason-overdraft_written_off")
    kiosk.wait_for(lambda: "待结清的欠分" in kiosk.texts(), what="the amount owed shown")
    sizes = LayoutTour(kiosk)  # the panel with its third row fits every supported size
    sizes.shot("settle")
    assert not sizes.faults, "\n".join(sizes.faults)
    kiosk.type_digits("999")  # the amount is what is owed, not typed
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.adjusted is not None, what="settled")
    assert "50 欠分已结清。余额 0" in kiosk.notice()
    after = member_service.show_member(app, phone=people.li_phone)
    assert (after.balance, after.overdraft_flagged) == (0, False)
    assert after.history[0].kind == "adjustment"
    assert after.history[0].ref.startswith("overdraft_written_off:")
    assert kiosk.app.staff_vm.reason == "missed_points"


def test_wrong_staff_pin_is_refused_then_locks(kiosk):
    kiosk.tap("staff")
    sign_in(kiosk, kiosk.people.clerk_id, "9999")
    kiosk.wait_for(lambda: "员工号或密码错误" in kiosk.notice(), what="wrong PIN refused")
    assert not kiosk.has("lost-card")
    for _ in range(4):
        kiosk.type_digits("9999")
        kiosk.tap("key-ok")
        kiosk.wait_for(lambda: not kiosk.app.staff_vm.busy, what="answer")
    assert "已暂时锁定" in kiosk.notice()
    kiosk.type_digits(kiosk.people.clerk_pin)  # even the right PIN now waits out the lockout
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: not kiosk.app.staff_vm.busy, what="answer")
    assert kiosk.app.staff_vm.staff is None


def test_an_account_hq_disabled_is_refused_saying_so(kiosk):
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.protocol import STAFF_SIGNING_DOMAIN, StaffAccount, StaffList
    from edge.security.pins import hash_pin
    from edge.services.pushes import apply_staff_list
    from hq.commands import sign_message

    people, app, hq = kiosk.people, kiosk.center.app, Ed25519PrivateKey.generate()
    account = StaffAccount(
        staff_id=people.clerk_id,
        role="supervisor",
        pin_hash=hash_pin(people.clerk_pin),
        active=False,
    )
    pushed = StaffList(
        store_id=app.store_id, version=1, issued_at=datetime.now(UTC), accounts=[account]
    )
    signed = sign_message(hq, STAFF_SIGNING_DOMAIN, pushed)
    assert apply_staff_list(app, signed, hq.public_key()).applied
    kiosk.tap("staff")
    sign_in(kiosk, people.clerk_id, people.clerk_pin)
    kiosk.wait_for(lambda: "此账号已被总部停用" in kiosk.notice(), what="disabled by HQ")
    assert not kiosk.has("lost-card") and kiosk.app.staff_vm.staff is None


def test_staff_tools_restock_reprint_clear_fault_and_report(kiosk):
    people = kiosk.people
    kiosk.center.redeem(people.wang_card, "TOWEL", "before-staff")
    kiosk.tap("staff")
    sign_in(kiosk, people.clerk_id, people.clerk_pin)
    kiosk.wait_for(lambda: kiosk.has("restock"), what="staff menu")
    kiosk.tap("restock")
    kiosk.wait_for(lambda: kiosk.has("restock-OIL-10"), what="restock list")
    kiosk.tap("restock-OIL-10")
    kiosk.wait_for(lambda: "库存 10" in kiosk.notice(), what="restocked")
    assert {g.sku: g.stock for g in gift_service.list_gifts(kiosk.center.app)}["OIL"] == 10
    kiosk.tap("staff-menu")
    kiosk.center.simulator.printer_out_of_paper()
    kiosk.tap("reprint")
    kiosk.wait_for(lambda: "未能打印" in kiosk.notice(), what="reprint refused by the printer")
    kiosk.tap("staff-menu")
    kiosk.tap("clear-faults")
    kiosk.wait_for(lambda: "所有设备正常" in kiosk.notice(), what="faults cleared")
    kiosk.tap("staff-menu")
    printed = len(kiosk.center.simulator.receipts())
    kiosk.tap("reprint")
    kiosk.wait_for(lambda: "已补打" in kiosk.notice(), what="reprinted")
    assert kiosk.center.simulator.receipts()[printed:] == ["gift-voucher"]
    kiosk.tap("staff-menu")
    kiosk.tap("report")
    kiosk.wait_for(lambda: kiosk.app.staff_vm.report is not None, what="report")
    report = kiosk.app.staff_vm.report
    assert report.redemptions == 1 and report.points_redeemed == 300
    assert "兑换 1 次（300 积分）" in kiosk.find("report-text").text
    assert kiosk.center.simulator.receipts()[-1] == "staff-daily-report"
    kiosk.tap("sign-out")
    assert kiosk.app.current == "attract" and kiosk.app.staff_vm.staff is None


def printed_qr(kiosk):
    """The code of the QR on the last receipt the simulated printer printed."""
    from drivers.printer import Qr

    receipt = kiosk.center.simulator.printer.printed[-1]
    return next(step.data for step in receipt.steps if isinstance(step, Qr))


def test_a_gift_is_handed_over_once_and_its_reprinted_voucher_is_refused(kiosk):
    people = kiosk.people
    kiosk.center.redeem(people.wang_card, "TOWEL", "before-handover")
    voucher = printed_qr(kiosk)
    kiosk.tap("staff")
    sign_in(kiosk, people.clerk_id, people.clerk_pin)
    kiosk.wait_for(lambda: kiosk.has("handover"), what="staff menu")
    kiosk.tap("handover")
    assert "请扫描礼品兑换券上的二维码" in kiosk.notice()
    kiosk.scan(voucher)
    kiosk.wait_for(lambda: kiosk.app.staff_vm.handover is not None, what="handed over")
    assert "请交付 纯棉毛巾 ×1。此券已核销。" in kiosk.notice()
    result = kiosk.find("handover-result").text
    assert "纯棉毛巾 ×1" in result and people.wang_card[-4:] in result
    assert people.wang_card not in result
    kiosk.tap("staff-menu")
    kiosk.tap("reprint")
    kiosk.wait_for(lambda: "已补打" in kiosk.notice(), what="reprinted")
    reprint = printed_qr(kiosk)
    assert reprint == voucher  # a reprint carries the same code
    kiosk.scan(reprint)  # from the menu: the handover page opens and refuses it
    kiosk.wait_for(lambda: "此券已核销过" in kiosk.notice(), what="reprint refused")
    assert kiosk.app.staff_vm.page == "handover" and kiosk.app.staff_vm.handover is None
    kiosk.scan(people.wang_card)  # a member card is not a voucher
    kiosk.wait_for(lambda: "这不是礼品兑换券" in kiosk.notice(), what="card refused")
    collected = [a for a in audit_log(kiosk.center.app) if a.action == "gift.collect"]
    assert len(collected) == 1 and collected[0].actor == people.clerk_id


def test_technician_mode_behind_a_hidden_gesture_and_a_pin(make_kiosk):
    # a gesture well apart from the short touch: a busy machine can stall a frame for a while
    kiosk = make_kiosk(technician_gesture_s=1.5)
    kiosk.tap("logo", hold=0.1)  # a short touch does nothing
    assert kiosk.app.current == "attract"
    kiosk.tap("logo", hold=1.8)
    assert kiosk.app.current == "technician"
    sign_in(kiosk, kiosk.people.clerk_id, kiosk.people.clerk_pin)  # a clerk is not enough
    kiosk.wait_for(lambda: "没有此项权限" in kiosk.notice(), what="clerk refused")
    kiosk.app.technician_vm.start()
    kiosk.pump(0.1)
    sign_in(kiosk, kiosk.people.technician_id, kiosk.people.technician_pin)
    kiosk.wait_for(lambda: len(kiosk.app.technician_vm.lines) == 4, what="self-test")
    kiosk.wait_for(lambda: kiosk.has("tech-info"), what="diagnostics")
    info = kiosk.find("tech-info").text
    assert "软件版本 0.1.0" in info and "门店 S001" in info and "消息服务器" in info
    assert len(kiosk.find("selftest").children) == 4
    assert "所有设备自检通过" in kiosk.notice()
    # a fresh pairing code for HQ's enrolment desk, on paper; with no paper, the reason
    simulator = kiosk.center.simulator
    kiosk.tap("pairing-slip")
    kiosk.wait_for(lambda: "配对凭条已打印" in kiosk.notice(), what="pairing slip")
    assert simulator.receipts()[-1] == "pairing-slip"
    assert (kiosk.center.app.data_dir / "provisioning/pairing.json").exists()
    simulator.printer_out_of_paper()
    kiosk.tap("pairing-slip")
    kiosk.wait_for(lambda: "未能打印" in kiosk.notice(), what="no paper")
    assert simulator.receipts()[-1] == "pairing-slip" and len(simulator.receipts()) == 1


def test_idle_screen_warns_counts_down_extends_and_clears(make_kiosk):
    kiosk = make_kiosk(idle_warn_s=1.0, idle_clear_s=2.5)
    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="identified")
    kiosk.wait_for(lambda: kiosk.app.session.warning, timeout=3, what="idle warning")
    warning = kiosk.find("idle-warning")
    assert warning.height > 0 and "秒后清除" in kiosk.texts()
    kiosk.tap("balance")  # any touch extends
    assert not kiosk.app.session.warning and kiosk.app.current == "member"
    kiosk.wait_for(lambda: kiosk.app.current == "attract", timeout=5, what="cleared")
    assert kiosk.app.session.member is None
    assert "138****8000" not in kiosk.texts() and "王先生" not in kiosk.texts()


def test_large_text_high_contrast_and_a_1024x600_screen(kiosk):
    from kivy.core.window import Window
    from kivy.graphics import Line

    def outlines(tid):
        button = kiosk.find(tid)
        found, stack = [], list(button.canvas.after.children)
        while stack:
            instruction = stack.pop()
            stack.extend(getattr(instruction, "children", ()))
            if isinstance(instruction, Line):
                found.append(instruction)
        return found, button

    # the normal palette has no outlines: no line is drawn at all, not even a transparent one
    assert outlines("register")[0] == []
    scale = kiosk.app.scale
    kiosk.tap("large-text")
    assert kiosk.app.large and kiosk.app.scale > scale
    assert kiosk.app.palette["bg"] == (0, 0, 0, 1)
    kiosk.wait_for(lambda: outlines("register")[0], what="the outline drawn")
    lines, button = outlines("register")
    assert len(lines) == 1  # high contrast: every button is outlined, where it now is
    assert lines[0].rectangle == (button.x, button.y, button.width, button.height)
    kiosk.tap("large-text")
    kiosk.wait_for(lambda: outlines("register")[0] == [], what="the outline gone")
    assert outlines("register")[0] == []
    tids = ("phone", "register", "staff", "help", "language")

    def on_the_screen(tid):
        button = kiosk.find(tid)
        x, y = button.to_window(button.x, button.y)
        return x >= 0 and y >= 0 and x + button.width <= 1024 and y + button.height <= 600

    Window.size = (1024, 600)
    try:
        kiosk.wait_for(
            lambda: kiosk.app.scale < scale and all(on_the_screen(tid) for tid in tids),
            what="the attract screen laid out for 1024x600",
        )
        assert kiosk.app.scale < scale
        for tid in tids:
            button = kiosk.find(tid)
            x, y = button.to_window(button.x, button.y)
            assert x >= 0 and y >= 0
            assert x + button.width <= 1024 and y + button.height <= 600
            assert button.height >= 48  # still a finger-sized target
        kiosk.tap("phone")
        assert kiosk.app.current == "identify"
    finally:
        Window.size = (1280, 800)
        kiosk.pump(0.2)


def _sign_in_as_technician(kiosk):
    kiosk.tap("logo", hold=0.8)
    sign_in(kiosk, kiosk.people.technician_id, kiosk.people.technician_pin)
    kiosk.wait_for(lambda: len(kiosk.app.technician_vm.lines) == 4, what="self-test")
    kiosk.wait_for(lambda: kiosk.has("tech-info"), what="diagnostics")


@pytest.mark.parametrize(("size", "large"), [((1280, 800), False), ((1024, 600), True)])
def test_the_self_test_heading_is_below_the_top_bar_at_any_size(make_kiosk, size, large):
    from kivy.core.window import Window

    kiosk = make_kiosk(technician_gesture_s=0.5)
    Window.size = size
    try:
        kiosk.app.large = large
        _sign_in_as_technician(kiosk)
        screens = kiosk.app.screens.manager

        def laid_out():
            heading = kiosk.find("selftest-heading")
            top = heading.to_window(heading.x, heading.top)[1]
            return (
                top <= screens.to_window(screens.x, screens.top)[1] + 0.5
                and 0 < heading.texture_size[1] <= heading.height
                and kiosk.find("rerun").y >= screens.y
            )

        kiosk.wait_for(laid_out, what="the self-test screen laid out")
        heading = kiosk.find("selftest-heading")
        heading_top = heading.to_window(heading.x, heading.top)[1]
        assert heading_top <= screens.to_window(screens.x, screens.top)[1] + 0.5
        assert heading.texture_size[1] > 0 and heading.height >= heading.texture_size[1]
        assert kiosk.find("rerun").y >= screens.y  # the button is on the screen as well
    finally:
        kiosk.app.large = False
        Window.size = (1280, 800)
        kiosk.pump(0.2)


def test_the_technician_screen_shows_the_app_log(make_kiosk):
    import logging

    from kiosk.__main__ import setup_logging

    kiosk = make_kiosk(technician_gesture_s=0.5)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    setup_logging(kiosk.center.ui_settings.log_dir)
    try:
        logging.getLogger("edge.station.devices").warning("printer: paper ran out (test)")
        _sign_in_as_technician(kiosk)
        kiosk.wait_for(lambda: "paper ran out (test)" in kiosk.find("log").text, what="the log")
        assert "printer: paper ran out (test)" in kiosk.find("log").text
    finally:
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def test_the_first_attract_frame_leaves_the_start_up_objects_out_of_later_collections(
    make_kiosk,
):
    import gc
    import weakref

    gc.unfreeze()  # whatever earlier kiosks in this process froze
    kiosk = make_kiosk()
    kiosk.wait_for(lambda: gc.get_freeze_count() > 0, what="the start-up objects frozen")
    frozen = gc.get_freeze_count()
    # a customer comes and goes: their screens are not frozen with the rest
    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    member = weakref.ref(kiosk.app.screens.get("member"))
    kiosk.tap("done")
    kiosk.wait_for(lambda: member() is None, what="the member screen collected")
    # frozen objects still go when nothing refers to them: the count only shrinks
    assert gc.get_freeze_count() <= frozen


def test_screens_left_behind_are_released_and_built_afresh(kiosk):
    import gc
    import weakref

    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-RICE5"), what="the gift catalogue")
    gifts = weakref.ref(kiosk.app.screens.get("gifts"))
    kiosk.tap("gifts-back")
    # the catalogue is released when left, the member screen kept for the customer
    assert kiosk.app.screens.built() == ["attract", "member"]

    def collected(screen):
        gc.collect()
        return screen() is None

    # nothing (view-model, app, session) still holds its widgets once the loop has run what
    # it had queued for the screen
    kiosk.wait_for(lambda: collected(gifts), what="the catalogue screen collected")
    assert gifts() is None
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-RICE5"), what="the rebuilt gift catalogue")
    kiosk.tap("gifts-back")
    member = weakref.ref(kiosk.app.screens.get("member"))
    kiosk.tap("done")
    assert kiosk.app.current == "attract"
    assert kiosk.app.screens.built() == ["attract"]
    kiosk.wait_for(lambda: member() is None, what="the released screens collected")
    assert member() is None
    # the next customer's member screen is a new one, filled for them
    assert "member" not in kiosk.app.screens.built()
    kiosk.scan(kiosk.people.li_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    assert kiosk.app.screens.built() == ["attract", "member"]
    shown = kiosk.find("member-ids").text
    assert "139****5678" in shown  # Li's phone, masked
    assert "138****8000" not in shown


def test_the_attract_screen_hands_a_customers_memory_back_after_both_collections(kiosk):
    """Once a customer is done, the released screens' memory goes back to the system on the
    attract screen, after the late collection too; a next customer who comes first stops it."""
    import weakref

    from kiosk.app import SETTLE_AGAIN_S

    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    assert kiosk.app.memory_settled  # nothing released yet
    member = weakref.ref(kiosk.app.screens.get("member"))
    kiosk.tap("done")
    assert kiosk.app.current == "attract"
    assert not kiosk.app.memory_settled
    kiosk.wait_for(lambda: kiosk.app.memory_settled, what="the memory handed back")
    assert member() is None  # collected before the memory was handed back
    # the next customer arrives before the second hand-back: it waits for the attract screen
    kiosk.scan(kiosk.people.li_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    kiosk.tap("done")
    assert not kiosk.app.memory_settled
    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen again")
    kiosk.pump(SETTLE_AGAIN_S + 0.5)
    assert not kiosk.app.memory_settled  # not handed back under a customer's eyes
    kiosk.tap("done")
    kiosk.wait_for(lambda: kiosk.app.memory_settled, what="the memory handed back")


def test_widgets_taken_off_the_screen_are_freed_by_the_app_straight_away(kiosk):
    """Panels, rows and screens dropped during a visit do not wait for the collector's own
    schedule (here: never, it is switched off) to be freed."""
    import gc
    import weakref

    kiosk.scan(kiosk.people.wang_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-RICE5"), what="the gift catalogue")
    gc.collect()
    gc.disable()
    try:
        tile = weakref.ref(kiosk.find("gift-RICE5"))
        kiosk.tap("gift-RICE5")  # the catalogue panel gives way to the confirmation
        kiosk.wait_for(lambda: kiosk.has("confirm"), what="the confirmation")
        kiosk.wait_for(lambda: tile() is None, what="the catalogue's tiles freed")
        assert tile() is None
        kiosk.tap("cancel")
        kiosk.wait_for(lambda: kiosk.has("gifts-back"), what="the catalogue again")
        screen = weakref.ref(kiosk.app.screens.get("gifts"))
        kiosk.tap("gifts-back")  # the catalogue screen is released when left
        kiosk.wait_for(lambda: screen() is None, what="the catalogue screen freed")
        assert screen() is None
        history = weakref.ref(kiosk.find("history").children[0])
        kiosk.tap("checkin")  # the history is filled afresh with the check-in on top
        kiosk.wait_for(kiosk.notice, what="the check-in")
        kiosk.wait_for(lambda: history() is None, what="the old history rows freed")
        assert kiosk.find("history").children
        assert history() is None
    finally:
        gc.enable()


def test_labels_keep_only_their_texture_and_buttons_draw_no_theme_image(kiosk):
    from kivy.cache import Cache
    from kivy.core.window import Window

    # Li's birthday is not this month: the birthday gift button is there, disabled
    kiosk.scan(kiosk.people.li_card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")

    def drawn_labels():
        labels = []
        stack = list(Window.children)
        while stack:
            widget = stack.pop()
            stack.extend(widget.children)
            core = getattr(widget, "_label", None)
            if core is not None and widget.text:
                labels.append(core)
        return labels if all(core.texture is not None for core in labels) else None

    kiosk.wait_for(lambda: kiosk.find("birthday").disabled, what="the birthday button disabled")
    labels = kiosk.wait_for(drawn_labels, what="the member screen's labels drawn")
    assert kiosk.find("birthday").disabled
    # a disabled button is drawn in plain colour: Kivy's theme atlas (a 512x512 texture
    # kept for the life of the process) is never loaded for it
    assert Cache.get("kv.atlas", "data/images/defaulttheme") is None
    assert len(labels) > 10
    # each label's text is on its texture; the SDL surface it was drawn on is let go
    assert all(core.texture is not None for core in labels)
    assert all(getattr(core, "_surface", None) is None for core in labels)
    # markup labels too
    from kivy.uix.label import Label

    marked = Label(text="[b]积分[/b] 100", markup=True)
    marked.texture_update()
    assert marked.texture is not None and marked._label._surface is None
