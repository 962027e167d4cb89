"""KeyStore: dev keys made once with tight permissions, credentials win and stay untouched."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.domain.errors import ConfigError
from edge.security.keys import (
    LOOKUP_KEY_FILE,
    KeyStore,
    _create_exclusively,
    create_secret_file,
    load_private_key,
    load_public_key,
    load_secret,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_nothing_is_touched_until_a_key_is_asked_for(tmp_path: Path) -> None:
    KeyStore(tmp_path / "keys")
    assert not (tmp_path / "keys").exists()


def test_dev_keys_are_created_private(tmp_path: Path) -> None:
    keys_dir = tmp_path / "var" / "keys"
    store = KeyStore(keys_dir)
    assert len(store.data_key) == 32
    assert len(store.lookup_key) == 32
    store.device_signing_key  # noqa: B018 - the property creates the file
    store.member_code_signing_key("")
    assert _mode(keys_dir) == 0o700
    names = sorted(p.name for p in keys_dir.iterdir())
    assert names == ["data.key", "device-signing.pem", "lookup.key", "member-code-signing.pem"]
    assert all(_mode(keys_dir / name) == 0o600 for name in names)
    assert store.data_key != store.lookup_key
    assert (keys_dir / "data.key").read_bytes() == store.data_key


def test_dev_keys_are_reused_by_the_next_start(tmp_path: Path) -> None:
    first = KeyStore(tmp_path)
    second = KeyStore(tmp_path)
    assert second.data_key == first.data_key
    assert second.lookup_key == first.lookup_key
    assert second.device_public_key_pem == first.device_public_key_pem
    assert _raw_public(second.member_code_signing_key("")) == _raw_public(
        first.member_code_signing_key("")
    )


def test_device_public_key_pem_is_the_signing_keys_half(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    public = serialization.load_pem_public_key(store.device_public_key_pem)
    signature = store.device_signing_key.sign(b"voucher")
    public.verify(signature, b"voucher")  # type: ignore[call-arg]
    assert store.device_public_key_pem.startswith(b"-----BEGIN PUBLIC KEY-----")


def test_credentials_win_and_are_never_written(tmp_path: Path) -> None:
    creds, keys_dir = tmp_path / "creds", tmp_path / "keys"
    creds.mkdir()
    data_key = bytes(range(32))
    device_key = Ed25519PrivateKey.generate()
    (creds / "data.key").write_bytes(data_key)
    (creds / "device-signing.pem").write_bytes(_pem(device_key))
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in creds.iterdir()}

    store = KeyStore(keys_dir, credentials_dir=creds)

    assert store.data_key == data_key
    assert _raw_public(store.device_signing_key) == _raw_public(device_key)
    assert not (keys_dir / "data.key").exists()
    assert not (keys_dir / "device-signing.pem").exists()
    # A key the credentials do not provide is still a dev key, made in keys_dir only.
    assert len(store.lookup_key) == 32
    assert (keys_dir / "lookup.key").exists()
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in creds.iterdir()}
    assert after == before


def test_a_credential_shadows_an_existing_dev_key(tmp_path: Path) -> None:
    keys_dir, creds = tmp_path / "keys", tmp_path / "creds"
    dev = KeyStore(keys_dir).data_key
    creds.mkdir()
    (creds / "data.key").write_bytes(b"\x07" * 32)
    assert KeyStore(keys_dir, credentials_dir=creds).data_key == b"\x07" * 32
    assert (keys_dir / "data.key").read_bytes() == dev


def test_secret_may_be_hex_as_openssl_prints_it(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "lookup.key").write_text("ab" * 32 + "\n")
    assert KeyStore(tmp_path / "keys", creds).lookup_key == b"\xab" * 32


@pytest.mark.parametrize("content", [b"", b"short", b"x" * 33, b"zz" * 32])
def test_secret_of_the_wrong_size_is_refused_by_path(tmp_path: Path, content: bytes) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "data.key").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        KeyStore(tmp_path / "keys", creds).data_key  # noqa: B018
    assert str(creds / "data.key") in caught.value.message


def test_a_dev_key_others_can_read_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.data_key  # noqa: B018
    os.chmod(tmp_path / "data.key", 0o644)
    with pytest.raises(ConfigError) as caught:
        KeyStore(tmp_path).data_key  # noqa: B018
    assert caught.value.code == "key_permissions"


def test_creation_never_clobbers_a_key_that_appeared_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "data.key"
    target.write_bytes(b"first")
    assert _create_exclusively(target, b"second") == b"first"
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["data.key"]  # no temp file left


def test_configured_member_code_keys_are_loaded(tmp_path: Path) -> None:
    hq = Ed25519PrivateKey.generate()
    private_path, public_path = tmp_path / "hq.pem", tmp_path / "hq.pub.pem"
    private_path.write_bytes(_pem(hq))
    public_path.write_bytes(
        hq.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    store = KeyStore(tmp_path / "keys")
    assert _raw_public(store.member_code_signing_key(str(private_path))) == _raw_public(hq)
    public = store.member_code_public_key(str(public_path))
    public.verify(hq.sign(b"m"), b"m")
    assert not (tmp_path / "keys").exists()
    # Read once: every scan verifies with the key in memory, not by reading the file again.
    private_path.unlink()
    public_path.unlink()
    assert store.member_code_public_key(str(public_path)) is public
    assert _raw_public(store.member_code_signing_key(str(private_path))) == _raw_public(hq)


def test_dev_member_code_public_key_matches_the_dev_signing_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    signature = store.member_code_signing_key("").sign(b"m")
    store.member_code_public_key("").verify(signature, b"m")
    assert (tmp_path / "member-code-signing.pem").exists()


def test_missing_key_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_private_key(missing)
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        load_public_key(missing)
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        KeyStore(tmp_path).member_code_public_key(str(missing))


def test_non_ed25519_and_garbage_are_refused(tmp_path: Path) -> None:
    ec_path = tmp_path / "ec.pem"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_path.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_pub = tmp_path / "ec.pub.pem"
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key at all")
    directory = tmp_path / "a-directory"
    directory.mkdir()
    for path in (ec_path, garbage, directory):
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            load_private_key(path)
    for path in (ec_pub, garbage, ec_path):
        with pytest.raises(ConfigError, match=re.escape(str(path))):
            load_public_key(path)


def test_encrypted_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.pem"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_private_key(path)


def test_a_secret_file_is_made_once_and_read_back_with_its_mode_checked(tmp_path: Path) -> None:
    path = tmp_path / "hq" / "ca" / "hq-lookup.key"
    assert create_secret_file(path)  # the directories are made too
    made = path.read_bytes()
    assert len(made) == 32 and _mode(path) == 0o600
    assert not create_secret_file(path)  # never overwritten
    assert path.read_bytes() == made == load_secret(path)
    assert not list(path.parent.glob(".hq-lookup.key.*"))  # no temp file left
    as_hex = tmp_path / "hex.key"
    as_hex.write_text(made.hex() + "\n")
    as_hex.chmod(0o644)
    with pytest.raises(ConfigError) as loose:
        load_secret(as_hex)
    assert loose.value.code == "key_permissions"
    assert load_secret(as_hex, check_mode=False) == made  # e.g. a systemd credential
    with pytest.raises(ConfigError) as missing:
        load_secret(tmp_path / "nothing.key")
    assert missing.value.code == "key_unreadable"
    as_hex.chmod(0o600)
    as_hex.write_text("too short")
    with pytest.raises(ConfigError) as short:
        load_secret(as_hex)
    assert short.value.code == "key_invalid"


def test_restoring_a_secret_puts_back_the_file_and_what_the_store_hands_out(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys")
    old = store.lookup_key  # a dev key, made on first use
    new = os.urandom(32)
    store.install_secret(LOOKUP_KEY_FILE, new)
    assert store.lookup_key == new
    store.restore_secret(LOOKUP_KEY_FILE, old)
    path = tmp_path / "keys" / LOOKUP_KEY_FILE
    assert path.read_bytes() == old == store.lookup_key and _mode(path) == 0o600
    assert KeyStore(tmp_path / "keys").existing_secret(LOOKUP_KEY_FILE) == old
    store.restore_secret(LOOKUP_KEY_FILE, None)  # there was no key file before
    assert not path.exists() and store.existing_secret(LOOKUP_KEY_FILE) is None
    assert not list(path.parent.glob(".lookup.key.*"))
