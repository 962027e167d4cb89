"""The pairing slip a device prints for HQ's enrolment desk until it is provisioned.

On first boot (not yet provisioned, real hardware) the slip prints once: a restart while
that pairing is pending and unexpired prints no other code, unless its slip never came out
of the printer (the code digest of such a pairing is kept in the ledger's meta table, and
the slip is printed again, with a new code, at the next start). A slip that cannot print yet
(no paper, say) is tried again on every station poll, and only once the printer is ready,
so a failing printer does not burn a code per poll.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from edge.app import AppContext
from edge.services.tx import get_meta, set_meta
from edge.station.api import PrintOutcome
from edge.station.devices import Station

log = logging.getLogger(__name__)

# the code digest of a pairing whose first-boot slip did not print (printed again at start)
PAIRING_UNPRINTED = "station.pairing_unprinted"


class FirstBootPairing:
    """The pairing slip of one kiosk: :meth:`start` on first boot, :meth:`poll` on the
    station's poll, :meth:`print_slip` when the technician asks for a fresh one."""

    def __init__(self, app: AppContext, station: Station) -> None:
        self.app = app
        self.station = station
        self.due = False  # a first-boot slip is still to come out

    def start(self) -> None:
        """On the station's worker at start: a device not yet provisioned prints its slip,
        unless a pairing is pending whose slip already came out."""
        if self._provisioned():
            return
        pending = _pending_pairing(self.app.data_dir, self.app.clock())
        if pending is not None:
            with self.app.db.read() as session:
                unprinted = get_meta(session, PAIRING_UNPRINTED) or ""
            if pending != unprinted:
                log.info("not provisioned; the pairing slip printed earlier is still valid")
                return
        self.due = True
        self.poll()

    def poll(self) -> None:
        """Prints the first-boot slip still due, once the printer is ready."""
        if not self.due:
            return
        if self._provisioned():
            self.due = False
            return
        if not self.station.printer_health().ok:
            return  # a new code only when it can come out; the poll tries again
        self.due = not self.print_slip().printed

    def print_slip(self) -> PrintOutcome:
        """A fresh one-time pairing code with this device's certificate request, on a slip
        for HQ (as ``kiosk provision pairing-slip`` prints it); it replaces any earlier code."""
        from edge.provisioning.bundle import code_digest
        from edge.provisioning.pairing import pairing_slip, start_pairing

        now = self.app.clock()
        request = start_pairing(self.app.data_dir, now=now)
        printed_at = now.astimezone(self.app.tz).strftime("%Y-%m-%d %H:%M")
        outcome = self.station.print_receipt(pairing_slip(request, printed_at))
        if outcome.printed:
            log.info("pairing slip printed for serial %s", request.serial)
        else:
            log.warning("pairing slip for serial %s did not print: %s", request.serial, outcome)
        self._note_unprinted("" if outcome.printed else code_digest(request.code))
        return outcome

    def _note_unprinted(self, digest: str) -> None:
        try:
            with self.app.db.write() as session:
                if (get_meta(session, PAIRING_UNPRINTED) or "") != digest:
                    set_meta(session, PAIRING_UNPRINTED, digest)
        except Exception:
            log.exception("could not note whether the pairing slip printed")

    def _provisioned(self) -> bool:
        from edge.provisioning.enrolment import is_provisioned

        # the SQLite file the ledger is in: the provisioning check reads it on its own
        name = self.app.db.engine.url.database
        return is_provisioned(self.app.data_dir, Path(name) if name else None)


def _pending_pairing(data_dir: Path, now: datetime) -> str | None:
    """The code digest of the pairing request waiting for HQ's bundle, if it has not expired."""
    from edge.provisioning.pairing import pending_pairing

    pending = pending_pairing(data_dir)
    return pending.code_sha256 if pending is not None and pending.expires_at > now else None
