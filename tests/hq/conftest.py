"""HQ's tests share the sync tests' real broker (Mosquitto with the shipped TLS and ACL)."""

from tests.sync.conftest import broker

__all__ = ["broker"]
