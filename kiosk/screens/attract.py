"""The attract screen: what the member center offers; scan, type a phone number or join."""

from kiosk.screens.base import KioskScreen


class AttractScreen(KioskScreen):
    pass
