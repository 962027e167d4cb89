"""What every view-model shares: a runner for slow work, a busy flag and a notice.

Slow work (database, printer, dispenser, network) runs through a :class:`Runner`: on the
appliance a thread whose result comes back on the UI thread through Kivy's clock, in the
view-model tests the same thread at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from kivy.clock import Clock
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, DictProperty, StringProperty

from edge.domain.errors import KioskError
from kiosk.i18n.messages import GENERIC, refusal_message

log = logging.getLogger(__name__)
T = TypeVar("T")


class Runner(Protocol):
    def run(
        self,
        work: Callable[[], T],
        done: Callable[[T], None],
        failed: Callable[[Exception], None],
    ) -> None: ...


class ThreadRunner:
    """Runs work on a daemon thread; ``done``/``failed`` run on the UI thread."""

    def run(
        self,
        work: Callable[[], T],
        done: Callable[[T], None],
        failed: Callable[[Exception], None],
    ) -> None:
        def body() -> None:
            try:
                result = work()
            except Exception as exc:
                error = exc  # ``exc`` is unbound when the except block ends
                Clock.schedule_once(lambda _dt: failed(error), 0)
                return
            Clock.schedule_once(lambda _dt: done(result), 0)

        threading.Thread(target=body, name="kiosk-work", daemon=True).start()


class InlineRunner:
    """Runs work at once on the caller's thread (view-model tests)."""

    def run(
        self,
        work: Callable[[], T],
        done: Callable[[T], None],
        failed: Callable[[Exception], None],
    ) -> None:
        try:
            result = work()
        except Exception as exc:
            failed(exc)
            return
        done(result)


class ViewModel(EventDispatcher):  # type: ignore[misc]
    """``busy`` while work runs; ``notice`` is a msgid the screen translates with ``args``."""

    busy = BooleanProperty(False)
    notice = StringProperty("")
    notice_kind = StringProperty("info")  # info, ok, warn, error
    notice_args = DictProperty({})

    def __init__(self, runner: Runner, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runner = runner

    def say(self, msgid: str, kind: str = "info", **args: Any) -> None:
        self.notice = ""  # never format the old text with the new arguments
        self.notice_args = args
        self.notice_kind = kind
        self.notice = msgid

    def clear_notice(self) -> None:
        self.say("")

    def work(
        self,
        job: Callable[[], T],
        done: Callable[[T], None],
        failed: Callable[[Exception], None] | None = None,
    ) -> None:
        """Runs ``job`` off the UI thread unless already busy (a double tap does nothing)."""
        if self.busy:
            return
        self.busy = True

        def finish(result: T) -> None:
            self.busy = False
            done(result)

        def fail(exc: Exception) -> None:
            self.busy = False
            (failed or self.refused)(exc)

        self.runner.run(job, finish, fail)

    def refused(self, exc: Exception) -> None:
        if isinstance(exc, KioskError):
            self.say(refusal_message(exc.code), "warn")
        else:
            log.error("unexpected failure", exc_info=exc)
            self.say(GENERIC, "error")
