"""Customers at the touchscreen: attract, identify, points, check-in, gifts, new card.

Each test drives the real app with touches and the simulated scanner, then checks what the
screen says and what the ledger holds.
"""

from __future__ import annotations

import io

from PIL import Image

from edge.protocol.pictures import SHOWN
from edge.services import gifts as gift_service
from edge.services import members as member_service
from edge.services.status import audit_log


def identify_by_scan(kiosk, card):
    kiosk.scan(card)
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="the member screen")


def test_attract_screen_is_chinese_with_an_english_switch(kiosk):
    assert kiosk.app.current == "attract"
    assert "请扫描您的会员码" in kiosk.texts()
    kiosk.tap("language")
    assert "Please scan your member code" in kiosk.texts()
    assert "请扫描您的会员码" not in kiosk.texts()
    kiosk.tap("language")
    assert "请扫描您的会员码" in kiosk.texts()


def test_scanning_a_card_shows_points_tier_expiry_and_history_masked(kiosk):
    identify_by_scan(kiosk, kiosk.people.wang_card)
    view = member_service.show_member(kiosk.center.app, card_no=kiosk.people.wang_card)
    assert f"{view.balance} 积分" in kiosk.find("balance").text
    ids = kiosk.find("member-ids").text
    assert "138****8000" in ids and kiosk.people.wang_phone not in ids
    assert kiosk.people.wang_card not in kiosk.texts()  # the card number is masked too
    assert "银卡会员" in kiosk.find("tier").text and "金卡会员" in kiosk.find("tier").text
    soonest = view.expiring[0]
    assert kiosk.find("expiring").text == f"{soonest.points} 积分将于 {soonest.expires_on} 过期"
    assert len(kiosk.find("history").children) == len(view.history)


def test_daily_check_in_credits_points_once(kiosk):
    card = kiosk.people.wang_card
    identify_by_scan(kiosk, card)
    before = member_service.show_member(kiosk.center.app, card_no=card).balance
    kiosk.tap("checkin")
    kiosk.wait_for(lambda: "签到成功" in kiosk.notice(), what="check-in confirmation")
    after = member_service.show_member(kiosk.center.app, card_no=card)
    assert after.balance == before + 5 and after.checked_in_today
    assert f"{after.balance} 积分" in kiosk.find("balance").text
    assert kiosk.find("checkin").text.startswith("今日已签到")
    kiosk.tap("checkin")
    kiosk.wait_for(lambda: "已经签到过了" in kiosk.notice(), what="the second check-in refused")
    assert member_service.show_member(kiosk.center.app, card_no=card).balance == after.balance


def test_birthday_gift_is_offered_in_the_birthday_month(kiosk):
    card = kiosk.people.wang_card
    identify_by_scan(kiosk, card)
    assert kiosk.find("birthday").opacity == 1
    before = member_service.show_member(kiosk.center.app, card_no=card).balance
    kiosk.tap("birthday")
    kiosk.wait_for(lambda: "生日快乐" in kiosk.notice(), what="birthday bonus")
    assert member_service.show_member(kiosk.center.app, card_no=card).balance == before + 100
    kiosk.wait_for(lambda: kiosk.find("birthday").disabled, what="offer withdrawn")


def test_phone_number_with_verification_digits(kiosk):
    people = kiosk.people
    kiosk.tap("phone")
    kiosk.type_digits(people.li_phone)
    assert kiosk.find("phone-field").text == "139 1234 5678"
    kiosk.tap("key-ok")
    kiosk.type_digits("0000")
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: "数字不匹配" in kiosk.notice(), what="wrong digits refused")
    assert kiosk.app.current == "identify"
    kiosk.type_digits("0918")  # 李女士's birthday, MMDD
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: kiosk.app.current == "member", what="identified by phone")
    assert "李女士" in kiosk.find("greeting").text
    actions = [line.action for line in audit_log(kiosk.center.app)]
    assert "member.verify_failed" in actions and actions[-1] == "member.lookup"


def test_unknown_phone_is_told_to_get_a_card(kiosk):
    kiosk.tap("phone")
    kiosk.type_digits("13511112222")
    kiosk.tap("key-ok")
    kiosk.type_digits("1234")
    kiosk.tap("key-ok")
    kiosk.wait_for(lambda: "还不是会员" in kiosk.notice(), what="unknown phone explained")


def test_blocked_card_is_refused_with_the_reason(kiosk):
    kiosk.scan(kiosk.people.zhao_card_blocked)
    kiosk.wait_for(lambda: "已挂失" in kiosk.notice(), what="lost card refused")
    assert kiosk.app.current == "attract"
    assert kiosk.app.session.member is None


def test_redeeming_a_gift_prints_the_voucher(kiosk):
    card = kiosk.people.wang_card
    out = io.BytesIO()
    Image.new("RGB", (900, 600), "teal").save(out, format="JPEG")
    gift_service.set_gift_picture(kiosk.center.app, "TOWEL", out.getvalue())
    identify_by_scan(kiosk, card)
    stock = {g.sku: g.stock for g in gift_service.list_gifts(kiosk.center.app)}
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-TOWEL"), what="the catalogue")
    # the towel's picture, scaled once to a tile's size; the rice, without one, its character
    picture = kiosk.find("picture-TOWEL")
    assert picture.opacity == 1 and picture.texture is not None
    assert max(picture.texture.size) <= SHOWN
    assert kiosk.find("picture-RICE5").opacity == 0 and "东" in kiosk.texts()
    kiosk.tap("gift-TOWEL")
    assert "用 300 积分兑换纯棉毛巾" in kiosk.find("confirm-text").text
    assert kiosk.find("confirm-picture").height > 0
    kiosk.tap("confirm")
    kiosk.wait_for(lambda: kiosk.app.gifts_vm.stage == "done", what="redemption")
    assert "兑换成功" in kiosk.notice()
    assert kiosk.center.simulator.receipts()[-1] == "gift-voucher"
    after = {g.sku: g.stock for g in gift_service.list_gifts(kiosk.center.app)}
    assert after["TOWEL"] == stock["TOWEL"] - 1
    last = gift_service.last_redemption(kiosk.center.app)
    assert last.card_no == card and last.points == 300


def test_out_of_stock_and_not_enough_points_are_explained_not_errors(kiosk):
    identify_by_scan(kiosk, kiosk.people.wang_card)
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-OIL"), what="the catalogue")
    assert "暂时缺货" in kiosk.texts() and "积分不足" in kiosk.texts()
    kiosk.tap("gift-OIL")
    assert "花生油1.8L暂时缺货" in kiosk.notice()
    kiosk.tap("gift-KETTLE")
    assert "电热水壶需要 6000 积分" in kiosk.notice()
    assert kiosk.app.gifts_vm.stage == "browse"
    assert gift_service.last_redemption(kiosk.center.app) is None


def test_printer_out_of_paper_keeps_the_redemption_and_says_so(kiosk):
    kiosk.center.simulator.printer_out_of_paper()
    identify_by_scan(kiosk, kiosk.people.wang_card)
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-TOWEL"), what="the catalogue")
    kiosk.tap("gift-TOWEL")
    kiosk.tap("confirm")
    kiosk.wait_for(lambda: kiosk.app.gifts_vm.stage == "done", what="redemption")
    assert "兑换券未能打印" in kiosk.notice() and "打印机缺纸" in kiosk.notice()
    assert gift_service.last_redemption(kiosk.center.app).sku == "TOWEL"
    kiosk.wait_for(lambda: "打印机缺纸" in kiosk.find("fault").text, what="fault strip")
    kiosk.tap("help")  # the help button still works during a fault
    assert "工作人员马上就到" in kiosk.texts()
    kiosk.wait_for(
        lambda: "help.requested" in [a.action for a in audit_log(kiosk.center.app)],
        what="help recorded",
    )


def test_new_card_registration_dispenses_and_prints(kiosk):
    kiosk.tap("register")
    kiosk.type_digits("13611112222")
    kiosk.tap("key-ok")
    kiosk.tap("surname-王")
    kiosk.tap("title-ms")
    kiosk.tap("reg-next")
    kiosk.type_digits("19600101")
    kiosk.tap("key-ok")
    kiosk.tap("reg-skip")  # no referral
    assert "会员个人信息保护告知书" in kiosk.find("terms-text").text
    kiosk.tap("reg-next")
    assert "请阅读隐私条款并勾选同意" in kiosk.notice()
    kiosk.tap("consent")
    kiosk.tap("reg-next")
    kiosk.wait_for(lambda: kiosk.app.register_vm.step == "done", what="registration")
    # the next step is the largest text; the notice welcomes
    assert kiosk.find("take").text == "请取走会员卡和凭条" and "欢迎入会" in kiosk.notice()
    view = member_service.show_member(kiosk.center.app, phone="13611112222")
    assert view.name_masked == "王女士" and view.card_state == "active"
    assert kiosk.find("new-card").text.endswith(view.card_no)
    assert kiosk.center.station.sim.dispenser_link.dispensed == 1
    assert kiosk.center.simulator.receipts()[-1] == "new-card"
    kiosk.tap("to-points")
    assert kiosk.app.current == "member" and "王女士" in kiosk.find("greeting").text


def test_dispenser_jam_prints_a_card_slip_instead(kiosk):
    kiosk.center.simulator.dispenser_jam()
    kiosk.tap("register")
    kiosk.type_digits("13622223333")
    kiosk.tap("key-ok")
    kiosk.tap("reg-skip")
    kiosk.tap("reg-skip")
    kiosk.tap("reg-skip")
    kiosk.tap("consent")
    kiosk.tap("reg-next")
    kiosk.wait_for(lambda: kiosk.app.register_vm.step == "done", what="registration")
    assert kiosk.find("take").text == "请取走凭条，工作人员会为您补发会员卡"
    assert "发卡机卡住了" in kiosk.notice()
    view = member_service.show_member(kiosk.center.app, phone="13622223333")
    assert view.card_state == "active"
    assert kiosk.center.station.sim.dispenser_link.dispensed == 0
    assert kiosk.center.simulator.receipts()[-1] == "new-card"


def test_core_operations_take_three_taps_or_fewer_after_identification(kiosk):
    identify_by_scan(kiosk, kiosk.people.wang_card)
    # see points: already on screen, no tap
    assert kiosk.find("balance").text
    start = kiosk.app.taps
    kiosk.tap("checkin")
    kiosk.wait_for(lambda: "签到成功" in kiosk.notice(), what="check-in")
    assert kiosk.app.taps - start == 1
    start = kiosk.app.taps
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-TOWEL"), what="the catalogue")
    kiosk.tap("gift-TOWEL")
    kiosk.tap("confirm")
    kiosk.wait_for(lambda: kiosk.app.gifts_vm.stage == "done", what="redemption")
    assert kiosk.app.taps - start == 3
    assert kiosk.center.simulator.receipts()[-1] == "gift-voucher"


def test_a_voucher_during_an_update_is_refused_plainly_and_the_redemption_kept(kiosk):
    from edge.lifecycle import busy

    kiosk.center.station.hold_timeout_s = 0.3
    identify_by_scan(kiosk, kiosk.people.wang_card)
    kiosk.tap("gifts")
    kiosk.wait_for(lambda: kiosk.has("gift-TOWEL"), what="the catalogue")
    kiosk.tap("gift-TOWEL")
    with busy.exclusive(kiosk.data_dir, timeout=1):  # the updater holds the lock
        kiosk.tap("confirm")
        kiosk.wait_for(lambda: kiosk.app.gifts_vm.stage == "done", what="redemption")
    assert "自助机正在更新，请稍候再试" in kiosk.notice()
    assert gift_service.last_redemption(kiosk.center.app).sku == "TOWEL"
    assert kiosk.center.simulator.receipts() == []  # nothing came out of the printer
