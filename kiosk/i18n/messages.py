"""What the screen says for each refusal code and device fault (English msgids, translated)."""

from __future__ import annotations

from kiosk.i18n import N_

GENERIC = N_("Sorry, that did not work. Please try again or press Help.")

REFUSALS: dict[str, str] = {
    "unknown_card": N_("We do not know this card. Please ask the staff."),
    "bad_card_number": N_("This code is not a member card. Please scan your member code."),
    "card_lost": N_("This card was reported lost. Please see the staff desk."),
    "card_blocked": N_("This card is blocked. Please see the staff desk."),
    "card_replaced": N_("This card was replaced by a new one. Please use the new card."),
    "card_unusable": N_("This card cannot be used. Please see the staff desk."),
    "code_expired": N_("This member code has expired. Please refresh it on your phone."),
    "code_replayed": N_("This member code was already used. Please refresh it on your phone."),
    "code_not_yet_valid": N_("This member code is not valid yet. Please refresh it."),
    "code_bad_signature": N_("This member code is not valid. Please refresh it on your phone."),
    "code_malformed": N_("This member code is not valid. Please refresh it on your phone."),
    "bad_phone": N_("Please enter an 11-digit mobile number starting with 1."),
    "unknown_phone": N_("No member has this phone number. You can get a new card."),
    "verify_failed": N_("The digits do not match. Please try again."),
    "verify_locked": N_("Too many wrong answers. Please scan your card or ask the staff."),
    "already_checked_in": N_("You have already checked in today. See you tomorrow!"),
    "birthday_claimed": N_("This year's birthday gift was already claimed."),
    "not_birthday_month": N_("The birthday gift can be claimed in your birthday month."),
    "no_birthday": N_("We have no birthday on file for you."),
    "insufficient_points": N_("Not enough points for this gift yet."),
    "out_of_stock": N_("This gift is out of stock right now."),
    "limit_reached": N_("You have reached the limit for this gift."),
    "gift_inactive": N_("This gift is no longer offered."),
    "offline_paused": N_("Redemption is paused while the store is offline. Please ask the staff."),
    "offline_cap_redemption": N_("While the store is offline, this gift cannot be redeemed."),
    "offline_cap_member": N_("While the store is offline, your redemptions are limited."),
    "offline_cap_device": N_("While the store is offline, redemptions are limited."),
    "phone_registered": N_("This phone number is already registered. Scan your card instead."),
    "unknown_referrer": N_("No member has the referrer's phone number."),
    "self_referral": N_("You cannot refer yourself."),
    "consent_required": N_("Please read the privacy terms and tick to agree."),
    "bad_birthday": N_("Please enter a real birthday (year, month, day)."),
    "bad_name": N_("Please choose a surname and a form of address."),
    "card_range_exhausted": N_("No new cards can be issued here now. Please ask the staff."),
    "bad_credentials": N_("Wrong staff number or PIN."),
    "staff_locked": N_("Too many wrong PINs: this staff number is locked for a while."),
    "staff_disabled": N_("This account was disabled by HQ."),
    "staff_not_listed": N_("This staff number is not on HQ's staff list for this store."),
    "not_permitted": N_("This staff member may not do this."),
    "bad_staff_id": N_("Please enter a staff number."),
    "staff_session_expired": N_("Please sign in again."),
    "card_not_active": N_("This card is not active."),
    "card_already_replaced": N_("This card was already replaced."),
    "no_redemption": N_("No voucher was printed here yet."),
    "voucher_collected": N_("This voucher was already collected. Do not hand the gift over."),
    "voucher_expired": N_("This voucher has expired. Do not hand the gift over."),
    "voucher_forged": N_("This voucher is not genuine. Do not hand the gift over."),
    "voucher_malformed": N_("This is not a gift voucher. Please scan the QR code on it."),
    "not_a_gift_voucher": N_("This is a coupon, not a gift voucher: it is used at the checkout."),
    "unknown_voucher": N_("No gift was redeemed with this voucher here."),
    "voucher_foreign": N_("This voucher is from another kiosk and cannot be checked here yet."),
    "member_deleted": N_("This membership was closed."),
    "coupon_gone": N_("This coupon was used or has ended."),
    "hq_unreachable": N_("Head office cannot be reached right now. Please try again later."),
    "approval_needed": N_("This many points needs a supervisor's approval."),
    "approval_by_self": N_("The approval must come from a second staff member."),
    "beyond_balance": N_("The member does not have that many points; a supervisor must approve."),
    "bad_points": N_("Please type a number of points."),
    "weak_pin": N_("Wrong staff number or PIN."),
    "disk_full": N_(
        "The kiosk's storage is full: nothing was done or changed. Please ask the staff."
    ),
}

DEVICE_FAULTS: dict[str, str] = {
    "paper_out": N_("The printer is out of paper."),
    "paper_low": N_("The printer paper is running low."),
    "cover_open": N_("The printer cover is open."),
    "offline": N_("The printer is offline."),
    "disconnected": N_("A device is disconnected."),
    "jam": N_("A card is jammed in the dispenser."),
    "empty": N_("The card dispenser is empty."),
    "low": N_("The card dispenser is running low."),
    "card_waiting": N_("A card is waiting at the dispenser: please take it."),
    "no_answer": N_("A device does not answer."),
    "door_open": N_("The cabinet door is open."),
    "updating": N_("The kiosk is being updated. Please wait a moment and try again."),
}


def refusal_message(code: str) -> str:
    return REFUSALS.get(code, GENERIC)


def fault_message(code: str) -> str:
    return DEVICE_FAULTS.get(code, N_("A device has a fault."))


# words the screens pass through ``_`` as data
DEVICE_NAMES = (N_("scanner"), N_("printer"), N_("dispenser"), N_("gpio"))
CARD_STATES = (N_("active"), N_("lost"), N_("blocked"), N_("replaced"))
