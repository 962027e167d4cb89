"""Technician mode: self-test of every device, network and broker, version, logs, provisioning."""

from __future__ import annotations

import re
from typing import Any

from kivy.properties import ListProperty, ObjectProperty

from edge.station.api import MemberCenter, PrintOutcome, SelfTestLine, TechnicianInfo
from kiosk.i18n import N_
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.base import Runner
from kiosk.viewmodels.session import SessionViewModel
from kiosk.viewmodels.staff import StaffViewModel

LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d (?P<time>\d\d:\d\d:\d\d)[,.]\d+ (?P<level>[A-Z]+) [\w.]+: (?P<text>.*)$"
)
LOG_LINE_CHARS = 160
LOG_MARK = {"WARNING": "!", "ERROR": "!!", "CRITICAL": "!!"}


def log_lines(tail: tuple[str, ...] | list[str]) -> list[str]:
    """The log's last lines as a technician reads them in a hurry: newest first, the time of
    day, ``!`` before a warning and ``!!`` before an error, the message without the module's
    name, each cut to one line's worth."""
    shown = []
    for raw in reversed(tail):
        line = raw.strip()
        if not line:
            continue
        match = LOG_LINE.match(line)
        if match:
            mark = LOG_MARK.get(match["level"], "")
            line = f"{match['time']} {mark + ' ' if mark else ''}{match['text']}"
        if len(line) > LOG_LINE_CHARS:
            line = line[: LOG_LINE_CHARS - 1] + "…"
        shown.append(line)
    return shown


class TechnicianViewModel(StaffViewModel):
    """Signs in with the technician permission, then shows the diagnostics."""

    lines = ListProperty([])
    info = ObjectProperty(None, allownone=True)
    log = ListProperty([])  # the log's tail as shown (log_lines)

    def __init__(
        self, center: MemberCenter, session: SessionViewModel, runner: Runner, **kw: Any
    ) -> None:
        super().__init__(center, session, runner, permission="technician_tools", **kw)

    def _signed_in(self, staff: Any) -> None:
        super()._signed_in(staff)
        self.page = "diagnostics"
        self.run_diagnostics()

    def run_diagnostics(self) -> None:
        self.say(N_("Testing the devices..."), "info")
        self.work(lambda: (self.center.self_test(), self.center.technician_info()), self._diagnosed)

    def _diagnosed(self, result: tuple[list[SelfTestLine], TechnicianInfo]) -> None:
        self.lines, self.info = result
        self.log = log_lines(self.info.log_tail)
        failed = [line for line in self.lines if line.state != "ok"]
        if failed:
            self.say(N_("{count} device(s) need attention."), "warn", count=len(failed))
        else:
            self.say(N_("All devices passed the self-test."), "ok")

    def print_pairing_slip(self) -> None:
        """A fresh one-time pairing code for HQ's enrolment desk, on the receipt printer."""
        self.say(N_("Printing..."), "info")
        self.work(self.center.print_pairing_slip, self._pairing_printed)

    def _pairing_printed(self, outcome: PrintOutcome) -> None:
        if outcome.printed:
            self.say(N_("The pairing slip was printed: register it at HQ."), "ok")
        else:
            self.say(
                N_("{fault} Nothing was printed."), "warn", fault=fault_message(outcome.problem)
            )
