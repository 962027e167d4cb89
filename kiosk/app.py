"""The touchscreen app: a registry of screens over view-models, the idle timer, the devices.

Import this module only after :func:`kiosk.boot.configure_kivy` (it imports Kivy's window).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kivy.app import App
from kivy.clock import Clock
from kivy.core.text import LabelBase
from kivy.core.window import Window
from kivy.lang import Builder, global_idmap
from kivy.properties import (
    BooleanProperty,
    DictProperty,
    ListProperty,
    NumericProperty,
    StringProperty,
)
from kivy.uix.floatlayout import FloatLayout
from kivy.uix.screenmanager import NoTransition, ScreenManager

from edge.process import freeze_startup_objects
from edge.station.api import (
    STAFF_BADGE_PREFIX,
    MemberCenter,
    MemberView,
    TechnicianInfo,
    UiSettings,
)
from edge.station.displays import min_target_px
from edge.systemd import sd_notify, watchdog_interval_s
from kiosk.boot import drop_text_surfaces, give_back_memory
from kiosk.fonts import ensure_fonts
from kiosk.i18n import LANGUAGES, N_, Translator
from kiosk.i18n.messages import fault_message
from kiosk.screens.attract import AttractScreen
from kiosk.screens.base import KioskScreen
from kiosk.screens.coupons import CouponsScreen
from kiosk.screens.gifts import GiftsScreen
from kiosk.screens.identify import IdentifyScreen
from kiosk.screens.member import MemberScreen
from kiosk.screens.register import RegisterScreen
from kiosk.screens.staff import StaffScreen
from kiosk.screens.technician import TechnicianScreen
from kiosk.viewmodels.base import Runner, ThreadRunner
from kiosk.viewmodels.coupons import CouponsViewModel
from kiosk.viewmodels.gifts import GiftsViewModel
from kiosk.viewmodels.health import HealthViewModel
from kiosk.viewmodels.identify import IdentifyViewModel
from kiosk.viewmodels.points import PointsViewModel
from kiosk.viewmodels.register import RegisterViewModel
from kiosk.viewmodels.session import SessionViewModel
from kiosk.viewmodels.staff import StaffViewModel
from kiosk.viewmodels.technician import TechnicianViewModel

log = logging.getLogger(__name__)
drop_text_surfaces()
SCREENS_DIR = Path(__file__).resolve().parent / "screens"
KV_FILES = (
    "widgets",
    "attract",
    "identify",
    "member",
    "gifts",
    "coupons",
    "register",
    "staff",
    "technician",
)
# The layouts are drawn for these windows, landscape and portrait, and scaled by the smaller
# ratio to the window's.
DESIGN_SIZE = (1280, 800)
PORTRAIT_DESIGN_SIZE = (800, 1280)
FONT_LADDER = (20, 26, 32, 44, 60, 80)
# how often the fault banner reads the devices' health (the station records what it reads)
FAULT_BANNER_POLL_S = 5.0
HELP_SHOWN_S = 8.0
# after the attract screen is drawn and the button that led there has been let go (Kivy
# holds a pressed button, and with it its screen, for its minimum pressed time)
SETTLE_AFTER_S = 0.25
# and once more after the late collection of what was dropped (kiosk.screens.base's second
# collection, 1.5 s after the widgets were dropped): what it freed goes back to the system too
SETTLE_AGAIN_S = 2.0
# screens a customer or staff member passes through once: released as soon as they are left
RELEASED_ON_LEAVE = frozenset({"gifts", "coupons", "register", "staff", "technician"})

NORMAL = {
    "bg": (0.97, 0.95, 0.91, 1),
    "fg": (0.10, 0.10, 0.10, 1),
    "muted": (0.35, 0.35, 0.35, 1),
    "panel": (1, 1, 1, 1),
    "accent": (0.78, 0.06, 0.18, 1),
    "bar": (0.78, 0.06, 0.18, 1),
    "bar_text": (1, 1, 1, 1),
    "primary": (0.12, 0.35, 0.66, 1),
    "primary_text": (1, 1, 1, 1),
    "accent_text": (1, 1, 1, 1),
    "secondary": (0.86, 0.88, 0.92, 1),
    "secondary_text": (0.10, 0.10, 0.10, 1),
    "danger": (0.95, 0.55, 0.10, 1),
    "danger_text": (0.05, 0.05, 0.05, 1),
    "quiet": (0.93, 0.91, 0.87, 1),
    "quiet_text": (0.20, 0.20, 0.20, 1),
    "pressed": (0.05, 0.15, 0.35, 1),
    "disabled": (0.88, 0.87, 0.85, 1),
    "disabled_text": (0.50, 0.50, 0.50, 1),
    "outline": (0, 0, 0, 0),
    "notice_info": (0.12, 0.35, 0.66, 1),
    "notice_ok": (0.10, 0.50, 0.20, 1),
    "notice_warn": (0.70, 0.30, 0.00, 1),
    "notice_error": (0.75, 0.05, 0.05, 1),
    "warn_bg": (0.99, 0.85, 0.30, 1),
    "warn_text": (0.05, 0.05, 0.05, 1),
}
HIGH_CONTRAST = {
    **NORMAL,
    "bg": (0, 0, 0, 1),
    "fg": (1, 1, 1, 1),
    "muted": (0.90, 0.90, 0.90, 1),
    "panel": (0.12, 0.12, 0.12, 1),
    "accent": (1, 0.84, 0, 1),
    "bar": (0, 0, 0, 1),
    "bar_text": (1, 0.84, 0, 1),
    "primary": (1, 0.84, 0, 1),
    "primary_text": (0, 0, 0, 1),
    "accent_text": (0, 0, 0, 1),
    "secondary": (1, 1, 1, 1),
    "secondary_text": (0, 0, 0, 1),
    "quiet": (0.85, 0.85, 0.85, 1),
    "quiet_text": (0, 0, 0, 1),
    "pressed": (0.3, 0.6, 1, 1),
    "disabled": (0.25, 0.25, 0.25, 1),
    "disabled_text": (0.70, 0.70, 0.70, 1),
    "outline": (1, 1, 1, 1),
    "notice_info": (0.6, 0.85, 1, 1),
    "notice_ok": (0.5, 1, 0.5, 1),
    "notice_warn": (1, 0.84, 0, 1),
    "notice_error": (1, 0.5, 0.5, 1),
}


class Root(FloatLayout):  # type: ignore[misc]
    """The window's one child: top bar, screens, fault strip and the idle warning."""


class ScreenRegistry:
    """Screens by name, built on first use; :meth:`show` switches to one.

    A screen is built when first shown and kept while it may be shown again soon; the
    screens a customer visits once (gifts, a new card, staff and technician tools) are
    released when left, and every screen but the attract screen when the customer is done
    (:meth:`release_all_but`): their widgets and text textures are memory the attract
    screen does not need.
    """

    def __init__(self, manager: ScreenManager, release_on_leave: frozenset[str]) -> None:
        self.manager = manager
        self.release_on_leave = release_on_leave
        self._factories: dict[str, Callable[[], KioskScreen]] = {}
        self._built: dict[str, KioskScreen] = {}

    def register(self, name: str, factory: Callable[[], KioskScreen]) -> None:
        self._factories[name] = factory

    def built(self) -> list[str]:
        return list(self._built)

    def get(self, name: str) -> KioskScreen:
        if name not in self._built:
            screen = self._factories[name]()
            screen.name = name
            self._built[name] = screen
        return self._built[name]

    def show(self, name: str) -> KioskScreen:
        screen = self.get(name)
        left = self.manager.current_screen
        if left is not screen:
            self.manager.switch_to(screen, transition=NoTransition())
            # finish now: the manager ignores touches while a transition is running, and a
            # zero-length one would still wait for an animation frame
            self.manager.transition.stop()
            if left is not None and left.name in self.release_on_leave:
                self.release(left.name)
        screen.entered()
        return screen

    def release(self, name: str) -> bool:
        """Forgets screen ``name`` (not the one shown); it is built afresh when next shown."""
        screen = self._built.get(name)
        if screen is None or screen is self.manager.current_screen:
            return False
        del self._built[name]
        screen.release()
        return True

    def release_all_but(self, keep: str) -> int:
        return sum(self.release(name) for name in list(self._built) if name != keep)


class KioskApp(App):  # type: ignore[misc]
    """The member center on the touchscreen."""

    scale = NumericProperty(1.0)
    # The window is taller than wide: every screen stacks what landscape puts side by side.
    portrait = BooleanProperty(False)
    # The smallest touch target in pixels (9 mm on the panel, see edge.station.displays).
    touch_min = NumericProperty(34.0)
    # Text comes in five sizes only: the SDL2 text provider keeps a copy of the CJK font's
    # outlines (16 MB) for every size in use, so sizes are a short ladder, not a continuum.
    font = ListProperty([20, 26, 32, 44, 60])
    large = BooleanProperty(False)
    palette = DictProperty(NORMAL)
    screen_title = StringProperty("")
    fault = StringProperty("")
    help_called = BooleanProperty(False)
    current = StringProperty("")
    taps = NumericProperty(0)
    # False from the moment a customer's screens are released until the attract screen has
    # handed their memory back to the system (both collections after them done)
    memory_settled = BooleanProperty(True)

    def __init__(self, center: MemberCenter, runner: Runner | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.center = center
        self.settings: UiSettings = center.ui_settings
        self.runner = runner or ThreadRunner()
        self.tr = Translator(self.settings.cache_dir / "locale", self.settings.language)
        self.session = SessionViewModel(self.settings.idle_warn_s, self.settings.idle_clear_s)
        self.large = self.settings.large_text
        self.title = "Member Center"
        self._events: list[Any] = []
        self._settle = Clock.create_trigger(self._give_back, SETTLE_AFTER_S)
        self._settle_again = Clock.create_trigger(self._give_back_again, SETTLE_AGAIN_S)

    # ---- building ----------------------------------------------------------------------

    def build(self) -> Root:
        terms = (self.center.privacy_terms(language)[1] for language in LANGUAGES)
        fonts = ensure_fonts(self.settings.cache_dir / "fonts", extra_text=terms)
        # the SC face replaces Kivy's default font everywhere (no fallback in Kivy)
        LabelBase.register("Roboto", str(fonts.regular), None, str(fonts.bold), None)
        global_idmap["_"] = self.tr
        for name in KV_FILES:
            path = str(SCREENS_DIR / f"{name}.kv")
            if path not in Builder.files:  # rules load once per process, apps may be many
                Builder.load_file(path)
        c, s, r = self.center, self.session, self.runner
        self.identify_vm = IdentifyViewModel(c, s, r)
        self.points_vm = PointsViewModel(c, s, r)
        self.gifts_vm = GiftsViewModel(c, s, r)
        self.coupons_vm = CouponsViewModel(c, s, r)
        self.register_vm = RegisterViewModel(c, s, r)
        self.staff_vm = StaffViewModel(c, s, r)
        self.technician_vm = TechnicianViewModel(c, s, r)
        self.health_vm = HealthViewModel()
        self.health_vm.follow(self.staff_vm)
        self.health_vm.bind(fault=lambda _vm, fault: setattr(self, "fault", fault))
        self.identify_vm.bind(on_identified=lambda *_a: self.go("member"))
        self.session.bind(on_timeout=lambda *_a: self.timed_out())
        root = Root()
        self.screens = ScreenRegistry(root.ids.screens, RELEASED_ON_LEAVE)
        for name, cls, vm, title in (
            ("attract", AttractScreen, self.identify_vm, ""),
            ("identify", IdentifyScreen, self.identify_vm, N_("Find me by phone")),
            ("member", MemberScreen, self.points_vm, N_("My points")),
            ("gifts", GiftsScreen, self.gifts_vm, N_("Gifts")),
            ("coupons", CouponsScreen, self.coupons_vm, N_("My coupons")),
            ("register", RegisterScreen, self.register_vm, N_("New member card")),
            ("staff", StaffScreen, self.staff_vm, N_("Staff")),
            ("technician", TechnicianScreen, self.technician_vm, N_("Technician")),
        ):
            self.screens.register(name, _factory(cls, self, vm, title))
        self.bind(large=self._restyle)
        self.tr.bind(language=lambda *_a: self._retitle())
        Window.bind(size=self._restyle, on_touch_down=self._touched)
        self._restyle()
        self._events.append(Clock.schedule_interval(self._tick, 0.25))
        self._events.append(Clock.schedule_interval(self._poll_health, FAULT_BANNER_POLL_S))
        self.center.on_scan(lambda text: Clock.schedule_once(lambda _dt: self.scanned(text)))
        self.center.on_help_button(lambda: Clock.schedule_once(lambda _dt: self.call_staff()))
        Window.bind(on_flip=self._drawn)
        self.go("attract")
        self._poll_health()
        return root

    # ---- systemd -----------------------------------------------------------------------

    def _drawn(self, *_args: Any) -> None:
        """The first frame of the attract screen is on the glass: tell systemd, start pinging,
        and leave the objects made to start out of later collections.

        The pings come from the clock on the UI thread, so a UI thread stuck in a slow call
        stops them and systemd restarts the app (``WatchdogSec`` in member-kiosk.service).
        """
        if self.current != "attract":
            return
        Window.unbind(on_flip=self._drawn)
        # the collection between two customers (give_back_memory) then takes a few
        # milliseconds instead of a hundred or more just as the next customer may touch
        freeze_startup_objects()
        sd_notify("READY=1\nSTATUS=attract screen shown")
        interval = watchdog_interval_s()
        if interval is not None:
            self._events.append(Clock.schedule_interval(self._watchdog, interval))

    def _watchdog(self, _dt: float) -> None:
        sd_notify("WATCHDOG=1")

    def _restyle(self, *_args: Any) -> None:
        width, height = Window.size
        self.portrait = height > width
        design = PORTRAIT_DESIGN_SIZE if self.portrait else DESIGN_SIZE
        base = min(width / design[0], height / design[1])
        self.scale = base * (1.2 if self.large else 1.0)
        self.touch_min = min_target_px(width, height, *self.settings.panel_mm)
        # large text moves every text one step up the ladder (one new size, not five)
        ladder = FONT_LADDER[1:] if self.large else FONT_LADDER[:-1]
        self.font = [round(size * base) for size in ladder]
        self.palette = HIGH_CONTRAST if self.large else NORMAL

    def _retitle(self) -> None:
        screen = self.screens.manager.current_screen
        self.screen_title = self.tr(screen.title) if screen is not None and screen.title else ""

    # ---- navigation --------------------------------------------------------------------

    def go(self, name: str) -> None:
        """Shows screen ``name``, preparing its view-model."""
        if name == "identify":
            self.identify_vm.reset()
            self.session.start(private=True)
        elif name == "gifts":
            self.gifts_vm.load()
        elif name == "coupons":
            self.coupons_vm.load()
        elif name == "register":
            self.register_vm.start(self.tr.language)
        elif name == "staff":
            self.staff_vm.start()
        elif name == "technician":
            self.technician_vm.start()
        elif name == "member":
            self.points_vm.clear_notice()
        self.current = name
        self.screens.show(name)
        self._retitle()
        if name == "attract" and self.screens.release_all_but("attract"):
            # between customers: the released screens' memory goes back to the system once
            # the attract screen is on the glass, and again after the late collection
            self.memory_settled = False
            for trigger in (self._settle, self._settle_again):
                trigger.cancel()  # counted from this customer's release, not an earlier one
                trigger()

    def _give_back(self, _dt: float) -> None:
        if self.current == "attract":
            give_back_memory()

    def _give_back_again(self, _dt: float) -> None:
        if self.current == "attract":
            give_back_memory()
            self.memory_settled = True

    def finish(self) -> None:
        """The customer (or staff member) is done: clear everything personal."""
        for vm in (self.staff_vm, self.technician_vm):
            if vm.staff is not None:
                vm.sign_out()
        self.session.end()
        self.identify_vm.reset()
        self.coupons_vm.forget()
        self.go("attract")

    def timed_out(self) -> None:
        log.info("idle timeout on %s", self.current)
        self.finish()

    def open_technician(self) -> None:
        self.go("technician")

    # ---- input and devices ---------------------------------------------------------------

    def _touched(self, _window: Any, _touch: Any) -> None:
        self.taps += 1
        self.session.touched()
        self.center.touch_feedback()

    def _tick(self, dt: float) -> None:
        self.session.tick(dt)

    def scanned(self, text: str) -> None:
        """A code from the scanner: a staff badge, a gift voucher on the staff screen, or a
        member's code on the customer screens."""
        self.session.touched()
        if text.startswith(STAFF_BADGE_PREFIX):
            if self.current not in ("staff", "technician"):
                self.go("staff")
            vm = self.technician_vm if self.current == "technician" else self.staff_vm
            vm.badge(text)
        elif self.current == "staff":
            self.staff_vm.voucher(text)
        elif self.current in ("attract", "identify"):
            self.identify_vm.scanned(text)

    def call_staff(self) -> None:
        self.help_called = True
        self.runner.run(self.center.call_staff, lambda _r: None, lambda exc: log.error("%s", exc))
        Clock.schedule_once(lambda _dt: setattr(self, "help_called", False), HELP_SHOWN_S)

    def _poll_health(self, *_args: Any) -> None:
        self.runner.run(self.center.device_status, self.health_vm.seen, lambda _e: None)

    # ---- text helpers for kv rules -------------------------------------------------------

    def tr_args(self, args: dict[str, Any]) -> dict[str, Any]:
        return {k: self.tr(v) if isinstance(v, str) and v else v for k, v in args.items()}

    def fault_text(self, code: str) -> str:
        return fault_message(code)

    def tier_text(self, member: MemberView | None, language: str) -> str:
        if member is None:
            return ""
        english = language == "en"
        tier = member.tier_name_en if english else member.tier_name_zh
        if member.next_tier_missing is None:
            return self.tr("Tier: {tier} (the highest)").format(tier=tier)
        upcoming = member.next_tier_name_en if english else member.next_tier_name_zh
        if member.tier_basis == "spend":
            missing = f"¥{member.next_tier_missing / 100:,.0f}"
            msgid = N_("Tier: {tier}. Spend {missing} more to reach {next}.")
        else:
            missing = str(member.next_tier_missing)
            msgid = N_("Tier: {tier}. {missing} more points to reach {next}.")
        return self.tr(msgid).format(tier=tier, missing=missing, next=upcoming)

    def expiring_text(self, member: MemberView | None, _language: str) -> str:
        if member is None or not member.expiring:
            return ""
        soonest = member.expiring[0]
        return self.tr("{points} points expire on {date}").format(
            points=soonest.points, date=soonest.expires_on.isoformat()
        )

    def technician_text(self, info: TechnicianInfo) -> str:
        broker = {
            None: self.tr("not used"),
            True: self.tr("reachable"),
            False: self.tr("unreachable"),
        }
        lines = [
            self.tr("Software version {version}").format(version=info.version),
            self.tr("Store {store}, device {device}").format(
                store=info.store_id, device=info.device_id
            ),
            self.tr("Config {path} ({state})").format(
                path=info.config_file,
                state=self.tr("present") if info.config_present else self.tr("defaults"),
            ),
            self.tr("Keys: {state}").format(
                state=self.tr("present") if info.keys_present else self.tr("missing")
            ),
            self.tr("Card range {range}").format(range=info.card_range),
            self.tr("Broker {broker}: {state}").format(
                broker=info.broker, state=broker[info.broker_reachable]
            ),
            self.tr("HQ: {state}, {pending} events waiting").format(
                state=self.tr("offline") if info.offline else self.tr("online"),
                pending=info.outbox_pending,
            ),
            self.tr("Members: {count}").format(count=info.members),
        ]
        return "\n".join(lines)

    def on_stop(self) -> None:
        sd_notify("STOPPING=1")
        Window.unbind(size=self._restyle, on_touch_down=self._touched, on_flip=self._drawn)
        self._settle.cancel()
        self._settle_again.cancel()
        for event in self._events:
            event.cancel()
        self._events.clear()


def _factory(cls: type[KioskScreen], app: KioskApp, vm: Any, title: str) -> Callable[[], Any]:
    def build() -> KioskScreen:
        return cls(app=app, vm=vm, title=title)

    return build
