"""Who is at the kiosk, and the idle countdown that clears personal data from the screen."""

from __future__ import annotations

from typing import Any

from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, NumericProperty, ObjectProperty

from edge.station.api import MemberCenter, MemberView
from kiosk.viewmodels.base import Runner, ViewModel


class SessionViewModel(EventDispatcher):  # type: ignore[misc]
    """The identified member (or nobody) and the idle timer.

    While someone is identified (or a staff or registration flow is open: ``private``),
    ``idle_s`` grows with :meth:`tick`; after ``warn_s`` the screen shows ``seconds_left``
    and after ``clear_s`` the session ends (``on_timeout``). Any touch calls :meth:`touched`.
    """

    member = ObjectProperty(None, allownone=True)
    private = BooleanProperty(False)
    idle_s = NumericProperty(0.0)
    warning = BooleanProperty(False)
    seconds_left = NumericProperty(0)

    __events__ = ("on_timeout",)

    def __init__(self, warn_s: float, clear_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warn_s = warn_s
        self.clear_s = clear_s

    @property
    def active(self) -> bool:
        return self.member is not None or self.private

    def start(self, member: MemberView | None = None, private: bool = False) -> None:
        self.member = member
        self.private = private or member is not None
        self.touched()

    def update(self, member: MemberView) -> None:
        self.member = member

    def touched(self) -> None:
        self.idle_s = 0.0
        self.warning = False
        self.seconds_left = int(self.clear_s)

    def tick(self, dt: float) -> None:
        if not self.active:
            return
        self.idle_s += dt
        self.warning = self.idle_s >= self.warn_s
        self.seconds_left = max(0, int(self.clear_s - self.idle_s + 0.999))
        if self.idle_s >= self.clear_s:
            self.end()
            self.dispatch("on_timeout")

    def end(self) -> None:
        self.member = None
        self.private = False
        self.touched()

    def on_timeout(self) -> None:
        pass


class ForMember(ViewModel):
    """A view-model that acts for ``session.member`` through the member center."""

    def __init__(
        self, center: MemberCenter, session: SessionViewModel, runner: Runner, **kw: Any
    ) -> None:
        super().__init__(runner, **kw)
        self.center = center
        self.session = session

    @property
    def card_no(self) -> str:
        """The identified member's card ('' when nobody is identified)."""
        member: MemberView | None = self.session.member
        return (member.card_no or "") if member else ""
