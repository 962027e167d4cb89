"""The revocation list brokers read: the serials HQ revoked, signed by the CA, valid for years."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from edge.security.revocation import crl_pem
from edge.sync.broker import DevCA


def test_crl_lists_the_revoked_serials_signed_by_the_ca_and_outlives_a_forgotten_renewal(
    tmp_path,
):
    ca = DevCA(tmp_path)
    now = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)
    crl = x509.load_pem_x509_crl(crl_pem(ca.cert, ca.key, [(0xABC, now), (0x123, now)], now))
    assert crl.is_signature_valid(ca.cert.public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in crl) == [0x123, 0xABC]
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - now >= dt.timedelta(days=3650)  # expired = every device out
    empty = ca.write_empty_crl(tmp_path / "crl.pem")
    assert list(x509.load_pem_x509_crl(empty.read_bytes())) == []
