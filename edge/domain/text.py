"""Text crossing the appliance's edge: the digits people type, and outside text shown to people.

Two rules, each kept in this one place:

* **Digits.** Every number a person types (the console's number options, the touchscreen's
  keypads, phone and card numbers, staff PINs, birthdays) takes the ASCII digits 0-9 and the
  full-width digits ０-９ a Chinese input method produces, which count as 0-9. Any other numeral
  (Arabic-Indic ٣, Devanagari ३, superscript ³, circled ③, Chinese 三) is refused with one
  line, never read as a number: ``int()`` would quietly take some of them and not others.
* **Escaping.** Text from outside (arguments, scanned codes, what devices report) shown on a
  terminal or written to a log for people goes through :func:`escape_controls`, so a printed
  QR code cannot move the cursor, retitle the window, reorder a line or start a new one.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from edge.domain.errors import InvalidInput

FULLWIDTH_DIGITS = "０１２３４５６７８９"
_FOLD = str.maketrans(FULLWIDTH_DIGITS, "0123456789")
DIGITS_RULE = "takes the digits 0-9 or full-width ０-９, no other numerals"

# Unicode categories shown as they are: everything printable, and spaces of every width.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def fold_digits(
    text: str, what: str = "a number", *, code: str = "bad_digits", **details: Any
) -> str:
    """``text`` with full-width digits turned into ASCII ones; any other numeral refused.

    Only digits change: what else ``text`` holds (separators, letters) is the caller's to judge.
    The refusal does not echo ``text`` (it may be a phone number or a PIN).

    Raises:
        InvalidInput: ``code`` (with ``details``), saying ``what`` takes 0-9 or ０-９.
    """
    folded = text.translate(_FOLD)
    if not folded.isascii() and any(ch.isnumeric() and not ch.isascii() for ch in folded):
        raise InvalidInput(f"{what} {DIGITS_RULE}", code=code, **details)
    return folded


def typed_digit(key: str) -> str | None:
    """A single typed key as an ASCII digit (``"３"`` is ``"3"``), or None if it is not one."""
    try:
        digit = fold_digits(key)
    except InvalidInput:
        return None
    return digit if len(digit) == 1 and "0" <= digit <= "9" else None


def escape_controls(text: str) -> str:
    """``text`` on one line with nothing a terminal acts on: control characters become escapes.

    C0 and C1 controls, DEL, line and paragraph separators, bidi and other format characters
    (U+202E, U+200B, ...), surrogates, private-use and unassigned code points are written as
    Python writes them in a string literal (``\\n``, ``\\x1b``, ``\\u202e``); letters, CJK,
    punctuation and spaces of every width stay as they are. Backslashes are left alone, so text
    that already shows escapes (a ``repr``) is not escaped twice.
    """
    if text.isprintable():
        return text
    return "".join(
        _escape(ch) if unicodedata.category(ch) in _ESCAPED_CATEGORIES else ch for ch in text
    )


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class EscapingFormatter(logging.Formatter):
    """A log formatter whose message is one line with control characters escaped.

    Log messages carry outside text (a device's fault reason, a topic, a scanned code); this
    keeps each record one line of a log a person reads. A traceback keeps its line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        text = super().formatException(ei)
        return "\n".join(escape_controls(line) for line in text.split("\n"))


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
