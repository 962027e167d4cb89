"""Identify by phone number: the keypad, then four verification digits."""

from typing import ClassVar

from kiosk.screens.base import StagedScreen


class IdentifyScreen(StagedScreen):
    panels: ClassVar[dict[str, str]] = {"phone": "PhonePanel", "proof": "ProofPanel"}
