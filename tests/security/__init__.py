"""Tests of the security library: keys, personal data, PINs, signed codes, the audit chain."""
