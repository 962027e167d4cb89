"""The privacy terms a member reads in full and consents to at registration (PIPL).

The texts live beside this module (``privacy_terms.<language>.txt``) so that the legal
department can revise them without touching code; bump ``privacy.consent_version`` with them.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def privacy_terms(language: str) -> str:
    name = "en" if language.startswith("en") else "zh_CN"
    return (
        resources.files("edge.station")
        .joinpath(f"privacy_terms.{name}.txt")
        .read_text(encoding="utf-8")
        .strip()
    )
