"""Finds every translatable text in the app and keeps the ``.po`` catalogues in step.

``python -m kiosk.i18n.extract`` adds new msgids to both catalogues (the English one
translates each text to itself; new Chinese entries are left empty to be translated) and
reports what is untranslated. The test suite uses :func:`msgids` to check completeness.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

from edge.po import parse_po
from kiosk.i18n.catalog import LANGUAGES, source

PACKAGE = Path(__file__).resolve().parent.parent
# _("..."), N_("..."), tr("...") with a literal argument, in .kv and .py files
CALL = re.compile(
    r"""(?:(?<![\w.])_|\bN_|\btr)\(\s*((?:'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*"))\s*\)"""
)


def msgids() -> set[str]:
    found: set[str] = set()
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix not in (".kv", ".py") or "extract" in path.name:
            continue
        for match in CALL.finditer(path.read_text(encoding="utf-8")):
            text = ast.literal_eval(match.group(1))
            if text:
                found.add(text)
    return found


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def write_po(language: str, entries: dict[str, str]) -> None:
    header = (
        f'msgid ""\nmsgstr ""\n"Language: {language}\\n"\n'
        '"Content-Type: text/plain; charset=UTF-8\\n"\n'
    )
    body = "".join(
        f"\nmsgid {_quote(k)}\nmsgstr {_quote(v)}\n" for k, v in sorted(entries.items()) if k
    )
    path = source(language)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + body, encoding="utf-8")


def main() -> int:
    wanted = msgids()
    missing = 0
    for language in LANGUAGES:
        path = source(language)
        old = parse_po(path.read_text(encoding="utf-8")) if path.exists() else {}
        entries = {k: old.get(k) or (k if language == "en" else "") for k in wanted}
        write_po(language, entries)
        untranslated = sorted(k for k, v in entries.items() if not v)
        missing += len(untranslated)
        for text in untranslated:
            print(f"{language}: untranslated: {text}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
