"""The card dispenser interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

from drivers.dispenser.protocol import DispenserStatus
from drivers.errors import DeviceError
from drivers.health import Health


class DispenseError(DeviceError):
    """No card came to the mouth; ``health.code`` says why (empty, jam, card_waiting)."""


class CardDispenser(ABC):
    """Gives one blank member card to the customer.

    Backends must override :meth:`dispense`, :meth:`status`, :meth:`reset` and :meth:`close`.
    """

    @abstractmethod
    def dispense(self) -> None:
        """Moves one card to the mouth, or raises :class:`DispenseError` / ``DeviceError``."""

    @abstractmethod
    def status(self) -> DispenserStatus:
        """The dispenser's sensors; raises ``DeviceError`` if it does not answer."""

    @abstractmethod
    def reset(self) -> None:
        """Clears a jam state after a technician opened the card path and took the card out;
        raises ``DeviceError`` if it does not answer."""

    @abstractmethod
    def close(self) -> None:
        """Releases the port; safe to call twice."""

    def health(self) -> Health:
        try:
            return self.status().health()
        except DeviceError as exc:
            return exc.health
