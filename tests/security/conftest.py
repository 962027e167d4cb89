"""Key fixtures for the security tests."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .sample_keys import HQ_KEY, OTHER_KEY


@pytest.fixture(scope="session")
def hq_key() -> Ed25519PrivateKey:
    return HQ_KEY


@pytest.fixture(scope="session")
def hq_public() -> Ed25519PublicKey:
    return HQ_KEY.public_key()


@pytest.fixture(scope="session")
def other_public() -> Ed25519PublicKey:
    return OTHER_KEY.public_key()
