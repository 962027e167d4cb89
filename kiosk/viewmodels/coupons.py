"""The member's coupons from HQ's campaigns: shown with what each gives, one printed on
request."""

from __future__ import annotations

from kivy.properties import ListProperty, StringProperty

from edge.domain.errors import KioskError
from edge.station.api import PrintOutcome, WalletView
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.session import ForMember


class CouponsViewModel(ForMember):
    """``state``: loading -> shown, or unreachable when HQ could not be asked (then the
    screen says so instead of "no coupons")."""

    coupons = ListProperty([])
    state = StringProperty("loading")

    def forget(self) -> None:
        """The customer is done: nothing of their wallet stays for the next one."""
        self.coupons, self.state = [], "loading"
        self.clear_notice()

    def load(self) -> None:
        self.coupons, self.state = [], "loading"
        self.say(N_("Looking up your coupons..."), "info")
        card = self.card_no
        self.work(lambda: self.center.wallet(card), self._loaded)

    def _loaded(self, wallet: WalletView) -> None:
        self.coupons = list(wallet.coupons)
        if not wallet.reachable:
            self.state = "unreachable"
            self.say(N_("Your coupons cannot be shown right now. Please try again later."), "warn")
            return
        self.state = "shown"
        if self.coupons:
            self.say(N_("Tap Print to take a coupon to the checkout."), "info")
        else:
            self.say(N_("You have no coupons right now."), "info")

    def print_coupon(self, coupon_id: str) -> None:
        card = self.card_no
        self.say(N_("Printing..."), "info")
        self.work(lambda: self.center.print_coupon(card, coupon_id), self._printed, self._failed)

    def _printed(self, outcome: PrintOutcome) -> None:
        if outcome.printed:
            self.say(N_("Your coupon is printed. Show it at the checkout."), "ok")
        else:
            self.say(
                N_("{fault} The coupon could not be printed."),
                "warn",
                fault=fault_message(outcome.problem),
            )

    def _failed(self, exc: Exception) -> None:
        self.refused(exc)
        if isinstance(exc, KioskError) and exc.code == "coupon_gone":
            # it was used (or its campaign ended) since the list was shown: show it as it is
            notice, kind = self.notice, self.notice_kind
            card = self.card_no
            self.work(lambda: self.center.wallet(card), lambda w: self._reloaded(w, notice, kind))

    def _reloaded(self, wallet: WalletView, notice: str, kind: str) -> None:
        self._loaded(wallet)
        self.say(notice, kind)
