"""Shared keys and a fixed clock for the security tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# One key pair per test session: generating keys inside hypothesis examples would only slow
# the search down without exercising anything new.
_HQ_KEY = Ed25519PrivateKey.generate()
_OTHER_KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def hq_key() -> Ed25519PrivateKey:
    """Stands in for HQ's member-code key (or a device key when signing vouchers)."""
    return _HQ_KEY


@pytest.fixture(scope="session")
def hq_public(hq_key: Ed25519PrivateKey) -> Ed25519PublicKey:
    return hq_key.public_key()


@pytest.fixture(scope="session")
def other_public() -> Ed25519PublicKey:
    """A valid key that did not sign anything in these tests."""
    return _OTHER_KEY.public_key()


@pytest.fixture(scope="session")
def now() -> datetime:
    return datetime(2025, 3, 8, 9, 30, 0, tzinfo=UTC)
