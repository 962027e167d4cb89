"""The fault strip along the bottom of every screen: the devices' health in one line.

It shows the first device that failed (else the first not ready, leaving out one still
starting or never heard of), in the customer's words. Whatever last read the devices sets
it: the app's poll every few seconds, and the staff screen's device list (opened, or its
faults cleared), so the strip and the list never disagree.
"""

from __future__ import annotations

from kivy.event import EventDispatcher
from kivy.properties import StringProperty

from edge.station.api import DeviceStatus
from kiosk.i18n.messages import fault_message
from kiosk.viewmodels.staff import StaffViewModel


class HealthViewModel(EventDispatcher):  # type: ignore[misc]
    fault = StringProperty("")

    def seen(self, statuses: list[DeviceStatus]) -> None:
        bad = [s for s in statuses if s.state == "failed"] or [
            s for s in statuses if not s.ok and s.code not in ("starting", "no_status")
        ]
        self.fault = fault_message(bad[0].code) if bad else ""

    def follow(self, staff: StaffViewModel) -> None:
        """What the staff screen's device list reads, the strip shows too."""
        staff.bind(devices=lambda _vm, devices: self.seen(devices))
