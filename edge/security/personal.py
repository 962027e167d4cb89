"""Phone numbers, names and birthdays: encrypted at rest, phones found by hash, masked on show."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from datetime import date

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from edge.domain.errors import ConfigError, IntegrityError, InvalidInput
from edge.domain.text import fold_digits

_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_MASKED_MOBILE = re.compile(r"[0-9]{3}\*{4}[0-9]{4}")
_SEPARATORS = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014]+")
_MAX_RAW_PHONE = 64
_HONORIFICS = ("先生", "女士")

_PHONE_BLOB_VERSION = 1
_PHONE_AAD = b"phone:v1"
_TEXT_BLOB_VERSION = 1
_MAX_TEXT_BYTES = 1024
_NONCE_BYTES = 12
_TAG_BYTES = 16


def normalize_phone(raw: str) -> str:
    """Reduce a mainland China mobile number to its 11 digits, e.g. ``"13800138000"``.

    People type numbers with spaces, dashes, a country prefix (``+86``, ``0086``, ``86``) or on
    a full-width keyboard (``１３８`` is ``138``, by the one rule for typed digits,
    :func:`edge.domain.text.fold_digits`; NFKC then folds full-width ``＋`` and ``－``); all of
    them must find the same member, so every stored number and every lookup goes through here.

    Raises:
        InvalidInput: ``bad_phone`` when what is left is not 11 digits matching ``1[3-9]...``,
            or holds another script's numerals. The message does not echo the input: it may be
            someone's personal data.
    """
    if _MOBILE.fullmatch(raw):
        return raw
    text = fold_digits(raw[: _MAX_RAW_PHONE + 1], "a phone number", code="bad_phone")
    text = _SEPARATORS.sub("", unicodedata.normalize("NFKC", text))
    for prefix in ("+86", "0086", "86"):
        if text.startswith(prefix) and len(text) == len(prefix) + 11:
            text = text[len(prefix) :]
            break
    if len(raw) > _MAX_RAW_PHONE or not _MOBILE.fullmatch(text):
        raise InvalidInput(
            "This is not a mobile phone number (11 digits starting with 1).", code="bad_phone"
        )
    return text


def mask_phone(phone: str) -> str:
    """Show ``138****8000`` on screen and paper: enough to recognise, too little to call.

    Anything that is not a valid mobile number is masked wholesale except its last 4 characters,
    so a bad stored value never ends up printed in full. A number masked already is returned
    as it is (masking twice changes nothing), so paper can mask whatever it is handed.
    """
    if _MASKED_MOBILE.fullmatch(phone):
        return phone
    try:
        digits = normalize_phone(phone)
    except InvalidInput:
        visible = phone[-4:] if len(phone) >= 8 else ""
        return "*" * (len(phone) - len(visible)) + visible
    return f"{digits[:3]}****{digits[7:]}"


def mask_card(card_no: str) -> str:
    """Show only a card's last four digits (``*********0018``): the kiosk asks for those four
    to verify a phone number, so screens and the paper members throw away show no more."""
    return "*" * max(0, len(card_no) - 4) + card_no[-4:]


def mask_name(name: str | None) -> str:
    """Keep a name's first character and a trailing 先生/女士; star the rest.

    The desk greets "王**" or "王先生" without showing the full name to whoever stands behind
    the member. Latin names keep their first letter; word breaks stay, letters become stars.
    """
    if not name:
        return ""
    text = " ".join(name.split())
    if not text:
        return ""
    honorific = next((h for h in _HONORIFICS if text.endswith(h) and len(text) > len(h)), "")
    body = text[: len(text) - len(honorific)]
    masked = body[0] + "".join(" " if ch == " " else "*" for ch in body[1:])
    return masked + honorific


class TextVault:
    """Encrypts a member's other personal fields (name, birthday) with the data key.

    AES-256-GCM as for the phone number; the field's name is the associated data, so a name's
    blob copied into the birthday column fails to open instead of reading as a birthday. Each
    call draws a fresh nonce: equal names give different blobs, so nothing can be counted.

    Example::

        vault = TextVault(keys.data_key)
        row.name_cipher = vault.encrypt_text("name", "王先生")
    """

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != 32:
            raise ConfigError("the data key must be 32 bytes (AES-256)", code="key_invalid")
        self._aead = AESGCM(data_key)

    def encrypt_text(self, field: str, text: str) -> bytes:
        """Encrypt ``text`` as the value of ``field``: version byte, 12-byte nonce, ciphertext+tag.

        Raises:
            InvalidInput: ``text_too_long`` past 1 KiB (no personal field is that long).
        """
        plain = text.encode("utf-8")
        if len(plain) > _MAX_TEXT_BYTES:
            raise InvalidInput(f"the {field} is too long to keep", code="text_too_long")
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain, _text_aad(field))
        return bytes([_TEXT_BLOB_VERSION]) + nonce + sealed

    def decrypt_text(self, field: str, blob: bytes) -> str:
        """Recover what :meth:`encrypt_text` encrypted as ``field``.

        Raises:
            IntegrityError: ``personal_undecryptable`` when the blob was altered, truncated,
                has an unknown version, belongs to another field or another data key.
        """
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _TEXT_BLOB_VERSION:
            raise IntegrityError(
                f"A stored {field} is damaged or in an unknown format.",
                code="personal_undecryptable",
            )
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _text_aad(field))
        except InvalidTag as exc:
            raise IntegrityError(
                f"A stored {field} fails its integrity check (tampered or wrong key).",
                code="personal_undecryptable",
            ) from exc
        return plain.decode("utf-8")

    def encrypt_name(self, name: str | None) -> bytes | None:
        """A member's name as stored (``None`` stays ``None``: nothing to keep)."""
        return None if name is None else self.encrypt_text("name", name)

    def decrypt_name(self, blob: bytes | None) -> str | None:
        """The name :meth:`encrypt_name` stored, or ``None``."""
        return None if blob is None else self.decrypt_text("name", blob)

    def encrypt_birthday(self, birthday: date | None) -> bytes | None:
        """A member's birthday as stored (its ISO date encrypted), or ``None``."""
        return None if birthday is None else self.encrypt_text("birthday", birthday.isoformat())

    def decrypt_birthday(self, blob: bytes | None) -> date | None:
        """The birthday :meth:`encrypt_birthday` stored, or ``None``.

        Raises:
            IntegrityError: ``personal_undecryptable`` as :meth:`decrypt_text`, or when what
                it holds is not a date.
        """
        if blob is None:
            return None
        text = self.decrypt_text("birthday", blob)
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise IntegrityError(
                "A stored birthday decrypts to something that is not a date.",
                code="personal_undecryptable",
            ) from None


def _text_aad(field: str) -> bytes:
    return f"{field}:v1".encode("ascii")


class PhoneVault(TextVault):
    """Encrypts phone numbers for storage and derives the keyed hash used to find them.

    The ledger stores ``encrypt(phone)`` (AES-256-GCM; a stolen database shows nothing) next to
    ``lookup_hash(phone)`` (HMAC-SHA256; equal numbers give equal hashes, so an index finds the
    member, but without the key nobody can run all 10^10 numbers through it). The same data
    key encrypts the name and birthday (:class:`TextVault`).

    Example::

        vault = PhoneVault(keys.data_key, keys.lookup_key)
        row.phone_enc, row.phone_hash = vault.encrypt(raw), vault.lookup_hash(raw)
    """

    def __init__(self, data_key: bytes, lookup_key: bytes) -> None:
        super().__init__(data_key)
        if len(lookup_key) < 32:
            raise ConfigError("the lookup key must be at least 32 bytes", code="key_invalid")
        if hmac.compare_digest(data_key, lookup_key):
            raise ConfigError("the data key and the lookup key must differ", code="key_invalid")
        # Keying HMAC costs two compressions; do it once and copy the prepared state per call.
        self._lookup = hmac.new(lookup_key, digestmod=hashlib.sha256)

    def encrypt(self, phone: str) -> bytes:
        """Normalise and encrypt a phone number: version byte, 12-byte nonce, ciphertext+tag.

        Raises:
            InvalidInput: ``bad_phone`` when it is not a mobile number.
        """
        digits = normalize_phone(phone)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, digits.encode("ascii"), _PHONE_AAD)
        return bytes([_PHONE_BLOB_VERSION]) + nonce + sealed

    def decrypt(self, blob: bytes) -> str:
        """Recover the phone number from what :meth:`encrypt` produced.

        Raises:
            IntegrityError: ``phone_undecryptable`` when the blob was altered, truncated, has
                an unknown version, or was sealed with another data key.
        """
        if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES or blob[0] != _PHONE_BLOB_VERSION:
            raise IntegrityError(
                "A stored phone number is damaged or in an unknown format.",
                code="phone_undecryptable",
            )
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, _PHONE_AAD)
        except InvalidTag as exc:
            raise IntegrityError(
                "A stored phone number fails its integrity check (tampered or wrong key).",
                code="phone_undecryptable",
            ) from exc
        if not _MOBILE.fullmatch(plain.decode("ascii", errors="replace")):
            raise IntegrityError(
                "A stored phone number decrypts to something that is not a phone number.",
                code="phone_undecryptable",
            )
        return plain.decode("ascii")

    def lookup_hash(self, phone: str) -> str:
        """HMAC-SHA256 (hex) of the normalised number: the indexed column phone lookups use.

        Raises:
            InvalidInput: ``bad_phone`` when it is not a mobile number.
        """
        mac = self._lookup.copy()
        mac.update(normalize_phone(phone).encode("ascii"))
        return mac.hexdigest()
