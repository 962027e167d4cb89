"""The broker renderer refuses input that would leave a broken or half-written broker."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge.sync.broker import DevCA, Identity, render_broker

STORE = [
    Identity("K001", "kiosk", "S001"),
    Identity("S001-L1", "lane", "S001"),
    Identity("bridge-S001", "bridge", "S001"),
]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_store_directory_with_the_chains_ca_crt_alone_is_refused_and_kept(tmp_path):
    chain = tmp_path / "chain"
    DevCA(chain)
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.crt").write_bytes((chain / "ca.crt").read_bytes())
    before = _sha(store / "ca.crt")

    with pytest.raises(ValueError, match=r"ca\.crt and ca\.key go together"):
        render_broker(store, 18883, STORE, hq_address="127.0.0.1:28883")

    assert _sha(store / "ca.crt") == before  # the chain's CA certificate is untouched
    assert sorted(p.name for p in store.iterdir()) == ["ca.crt"]  # and nothing was added


def test_a_key_without_its_certificate_is_refused_too(tmp_path):
    DevCA(tmp_path / "chain")
    store = tmp_path / "store"
    store.mkdir()
    (store / "ca.key").write_bytes((tmp_path / "chain" / "ca.key").read_bytes())
    with pytest.raises(ValueError, match="go together"):
        DevCA(store)
    assert sorted(p.name for p in store.iterdir()) == ["ca.key"]


def test_both_halves_of_the_chains_ca_are_reused(tmp_path):
    chain = tmp_path / "chain"
    DevCA(chain)
    store = tmp_path / "store"
    store.mkdir()
    for name in ("ca.crt", "ca.key"):
        (store / name).write_bytes((chain / name).read_bytes())
    render_broker(store, 18883, STORE, hq_address="127.0.0.1:28883")
    assert _sha(store / "ca.crt") == _sha(chain / "ca.crt")
    assert (store / "conf.d" / "bridge-S001.conf").exists()


@pytest.mark.parametrize("address", ["nohost", ":8883", "hq:", "hq:port", "hq:0", "hq:65536"])
def test_a_bad_hq_address_writes_nothing(tmp_path, address):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="host:port"):
        render_broker(out, 18883, STORE, hq_address=address)
    assert not out.exists()


def test_a_store_broker_without_devices_writes_nothing(tmp_path):
    out = tmp_path / "store"
    with pytest.raises(ValueError, match="no kiosk or lane"):
        render_broker(out, 18883, [STORE[2]], hq_address="127.0.0.1:28883")
    assert not out.exists()
