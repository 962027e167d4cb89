"""Keys, encryption of personal data, PIN hashing and signed codes."""

from edge.security.chain import GENESIS, canonical_json, chain_hash, verify_chain
from edge.security.codes import (
    MEMBER_CODE_PREFIX,
    VOUCHER_PREFIX,
    MemberCodeClaims,
    VoucherClaims,
    VoucherKind,
    looks_like_member_code,
    looks_like_voucher,
    mint_member_code,
    sign_voucher,
    unverified_voucher_claims,
    verify_member_code,
    verify_voucher,
    voucher_device_id,
)
from edge.security.keys import KeyStore, load_private_key, load_public_key
from edge.security.personal import (
    PhoneVault,
    TextVault,
    mask_card,
    mask_name,
    mask_phone,
    normalize_phone,
)
from edge.security.pins import hash_pin, needs_rehash, validate_pin, verify_pin
from edge.security.signing import sign_bytes, verify_bytes

__all__ = [
    "GENESIS",
    "MEMBER_CODE_PREFIX",
    "VOUCHER_PREFIX",
    "KeyStore",
    "MemberCodeClaims",
    "PhoneVault",
    "TextVault",
    "VoucherClaims",
    "VoucherKind",
    "canonical_json",
    "chain_hash",
    "hash_pin",
    "load_private_key",
    "load_public_key",
    "looks_like_member_code",
    "looks_like_voucher",
    "mask_card",
    "mask_name",
    "mask_phone",
    "mint_member_code",
    "needs_rehash",
    "normalize_phone",
    "sign_bytes",
    "sign_voucher",
    "unverified_voucher_claims",
    "validate_pin",
    "verify_bytes",
    "verify_chain",
    "verify_member_code",
    "verify_pin",
    "verify_voucher",
    "voucher_device_id",
]
