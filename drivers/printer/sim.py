"""A simulated receipt printer: keeps the exact byte stream and counts paper, with faults."""

from __future__ import annotations

from pathlib import Path

from drivers.errors import DeviceUnavailableError
from drivers.health import Health
from drivers.printer.document import Receipt
from drivers.printer.interface import ReceiptPrinter
from drivers.printer.profiles import PrinterProfile
from drivers.printer.status import Paper, PrinterStatus

LINE_DOTS = 30  # a text line with its spacing, in dots; used to spend paper


class SimulatedPrinter(ReceiptPrinter):
    """Accepts ESC/POS bytes as a printer does and keeps them in :attr:`output`.

    Paper is counted in dots of feed (``paper_dots``; ``None`` for endless). When it runs
    out, later bytes are still received (a real printer buffers them) but nothing more
    prints, and the status reports paper out. Faults are set by the ``paper_low``,
    ``offline`` and ``cover_open`` attributes and :meth:`unplug`; :meth:`load_paper` puts a
    new roll in.

    Example:
        >>> printer = SimulatedPrinter(PrinterProfile())
        >>> printer.send(b"\\x1b@hello\\n")
        >>> printer.output
        b'\\x1b@hello\\n'
    """

    def __init__(
        self,
        profile: PrinterProfile,
        paper_dots: int | None = None,
        output_dir: Path | None = None,
    ) -> None:
        super().__init__(profile)
        self.output = bytearray()
        self.output_dir = output_dir
        self.printed: list[Receipt] = []
        self.paper_dots = paper_dots
        self.paper_low = False
        self.offline = False
        self.cover_open = False
        self.unplugged = False

    def print_receipt(self, receipt: Receipt) -> None:
        """Prints as a real printer would, and with ``output_dir`` keeps each receipt's
        bytes (``.bin``) and a PNG preview there for a person to look at."""
        start = len(self.output)
        try:
            super().print_receipt(receipt)
        finally:
            if len(self.output) > start:
                self.printed.append(receipt)
                if self.output_dir is not None:
                    self._keep(receipt, bytes(self.output[start:]))

    def _keep(self, receipt: Receipt, data: bytes) -> None:
        assert self.output_dir is not None
        from drivers.printer.preview import render_preview  # Pillow, only for the pictures

        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = self.output_dir / f"{len(self.printed):04d}-{receipt.title}"
        stem.with_suffix(".bin").write_bytes(data)
        render_preview(receipt, self.profile).save(stem.with_suffix(".png"))

    def send(self, data: bytes) -> None:
        if self.unplugged:
            raise DeviceUnavailableError(Health.failed("disconnected", "printer unplugged"))
        self.output += data
        if self.paper_dots is not None:
            spent = data.count(b"\n") * LINE_DOTS + _raster_rows(data) + _feeds(data)
            self.paper_dots = max(0, self.paper_dots - spent)

    def status(self) -> PrinterStatus:
        if self.unplugged:
            raise DeviceUnavailableError(Health.failed("disconnected", "printer unplugged"))
        out = self.paper_dots == 0
        paper: Paper = "out" if out else "low" if self.paper_low else "ok"
        return PrinterStatus(not (self.offline or self.cover_open or out), paper, self.cover_open)

    def unplug(self) -> None:
        self.unplugged = True

    def load_paper(self, dots: int | None = None) -> None:
        """A new roll: ``dots`` of feed (``None``: endless); clears paper low and paper out."""
        if dots is not None and dots <= 0:
            raise ValueError("a roll holds some paper")
        self.paper_dots = dots
        self.paper_low = False

    def clear(self) -> None:
        self.output.clear()

    def close(self) -> None:
        pass


def _raster_rows(data: bytes) -> int:
    rows, start = 0, 0
    while (at := data.find(b"\x1dv0", start)) >= 0 and at + 8 <= len(data):
        rows += data[at + 6] | data[at + 7] << 8
        start = at + 8
    return rows


def _feeds(data: bytes) -> int:
    dots, start = 0, 0
    while (at := data.find(b"\x1bd", start)) >= 0 and at + 2 < len(data):
        dots += data[at + 2] * LINE_DOTS
        start = at + 3
    return dots
