"""Key pairs made once per test run, shared by fixtures and hypothesis tests alike."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Generating keys inside hypothesis examples would only slow the search without testing more.
HQ_KEY = Ed25519PrivateKey.generate()
"""Stands in for HQ's member-code key, or a device's voucher key."""

OTHER_KEY = Ed25519PrivateKey.generate()
"""A valid key that signs nothing: its public half must refuse everything signed above."""
