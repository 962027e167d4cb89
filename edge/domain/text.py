"""Outside text shown to people: one escaping rule for terminals and logs.

Text from outside (arguments, scanned codes, what devices report) shown on a terminal or
written to a log for people goes through :func:`escape_controls`, so a printed QR code cannot
move the cursor, retitle the window, reorder a line or start a new one.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

# Unicode categories shown as they are: everything printable, and spaces of every width.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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
