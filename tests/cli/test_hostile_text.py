"""Hostile text at the real ``kiosk`` command: errors stay one line a terminal cannot act on,
and every typed number follows one digits rule (0-9 or full-width ０-９, nothing else)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from tests.cli_runner import run_kiosk_bytes

# The console script pip installed beside this Python (``kiosk`` on a device's PATH).
INSTALLED_KIOSK = Path(sys.executable).with_name("kiosk")
CARD = "2900000000018"
PHONE = "13800138000"
DIGITS_RULE = "takes the digits 0-9 or full-width ０-９, no other numerals"


class Kiosk:
    """Runs ``kiosk`` as a fresh command (in this process, tests/cli_runner.py); stdout
    decoded, stderr kept as the bytes printed. :meth:`process` runs the installed script."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "KIOSK_DATA_DIR": str(self.data_dir), "PYTHONIOENCODING": "utf-8"}
        env.pop("KIOSK_CONFIG", None)
        env.pop("KIOSK_DEBUG", None)
        return env

    def __call__(self, *args: str, stdin: str = "") -> tuple[int, str, bytes]:
        ran = run_kiosk_bytes(*args, stdin=stdin.encode(), env=self.environment())
        return ran.returncode, ran.stdout.decode("utf-8"), ran.stderr

    def process(self, *args: str, stdin: str = "") -> tuple[int, str, bytes]:
        """``kiosk ARGS...`` as a person runs it: the installed script, its own process."""
        proc = subprocess.run(
            [str(INSTALLED_KIOSK), *args],
            input=stdin.encode(),
            capture_output=True,
            env=self.environment(),
            timeout=60,
        )
        return proc.returncode, proc.stdout.decode("utf-8"), proc.stderr

    def ok(self, *args: str, stdin: str = "") -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str, stdin: str = "") -> object:
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def fails(self, *args: str, code: int, stdin: str = "") -> str:
        rc, out, err = self(*args, stdin=stdin)
        assert rc == code, (args, rc, out, err)
        return error_line(err)


def error_line(raw: bytes) -> str:
    """The error a person sees, checked byte by byte: exactly one line, no control character."""
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw
    body = raw[:-1]
    assert not any(b < 0x20 or b == 0x7F for b in body), raw
    text = body.decode("utf-8")
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text), text
    assert text.startswith("error: "), text
    return text


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Kiosk:
    k = Kiosk(tmp_path_factory.mktemp("hostile"))
    k.ok("db", "upgrade")
    k.ok("member", "register", "--phone", PHONE, "--consent")
    k.ok("staff", "add", "--id", "sup", "--role", "supervisor", stdin="2580\n")
    k.ok("gift", "add", "--sku", "TOWEL", "--name", "毛巾", "--points", "100", "--stock", "5")
    return k


# -- errors quote outside text escaped, on one line --------------------------------------------


def test_a_scanned_code_with_terminal_controls_is_shown_escaped(kiosk: Kiosk) -> None:
    line = kiosk.fails("member", "identify", "X\x1b]0;pwned\x07\nsecond line", code=1)
    assert "'X\\x1b]0;pwned\\x07\\nsecond line' is not a member card number" in line


def test_the_installed_command_prints_the_same_escaped_line_from_its_own_process(
    kiosk: Kiosk,
) -> None:
    rc, out, err = kiosk.process("member", "identify", "X\x1b]0;pwned\x07\u202e\nsecond")
    assert (rc, out) == (1, "")
    assert "'X\\x1b]0;pwned\\x07\\u202e\\nsecond' is not a member card number" in error_line(err)


def test_a_sku_with_a_line_break_is_shown_escaped(kiosk: Kiosk) -> None:
    assert "Missing option '--name'" in kiosk.fails("gift", "add", "--sku", "A\nB", code=2)
    line = kiosk.fails(
        "gift", "add", "--sku", "A\nB", "--name", "x", "--points", "1", "--stock", "1", code=1
    )
    assert "'A\\nB' is not a valid SKU" in line


def test_bidi_format_and_c1_controls_are_shown_escaped(kiosk: Kiosk) -> None:
    line = kiosk.fails("member", "identify", "29\u202e81\x9b2J\u200b\x7f", code=1)
    assert "29\\u202e81\\x9b2J\\u200b\\x7f" in line


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("member", "show", "--history", "\x1b[2J"), "\\x1b[2J"),
        (("no\x1bsuch",), "no\\x1bsuch"),
        (("member", "show", "--card", CARD, "extra\x1b]0;x\x07"), "extra\\x1b]0;x\\x07"),
        (("staff", "add", "--id", "x", "--role", "cl\nerk"), "cl\\nerk"),
    ],
)
def test_usage_errors_that_quote_an_argument_are_escaped(
    kiosk: Kiosk, args: tuple[str, ...], shown: str
) -> None:
    rc, _out, err = kiosk(*args, stdin="2580\n")
    assert rc in (1, 2)
    assert shown in error_line(err)


def test_the_shell_prints_its_errors_the_same_way(kiosk: Kiosk) -> None:
    rc, _out, err = kiosk("shell", stdin='member identify "X\x1b]0;pwned\x07\u202e"\nexit\n')
    assert rc == 0
    assert "'X\\x1b]0;pwned\\x07\\u202e' is not a member card number" in error_line(err)


def test_an_internal_error_is_one_escaped_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main as entry

    def broken(**_kw: object) -> None:
        raise RuntimeError("boom\x1b[31m\nsecond\u202e")

    monkeypatch.delenv("KIOSK_DEBUG", raising=False)
    monkeypatch.setattr(entry.cli, "main", broken)
    assert entry.main(["status"]) == 70
    err = capsys.readouterr().err
    line = error_line(err.encode("utf-8"))
    assert "internal error (RuntimeError: boom\\x1b[31m\\nsecond\\u202e)" in line


# -- one rule for typed digits ---------------------------------------------------------------


def test_full_width_digits_count_the_same_in_amounts_phones_and_cards(kiosk: Kiosk) -> None:
    ascii_accrual = kiosk.json(
        "points", "accrue", "--card", CARD, "--amount-cents", "10000", "--ref", "FW-A"
    )
    wide_accrual = kiosk.json(
        "points",
        "accrue",
        "--card",
        "２９０００００００００１８",
        "--amount-cents",
        "１００００",
        "--ref",
        "FW-W",
    )
    assert isinstance(ascii_accrual, dict) and isinstance(wide_accrual, dict)
    assert wide_accrual["points"] == ascii_accrual["points"] == 100
    by_phone = kiosk.json("member", "show", "--phone", "１３８００１３８０００")
    assert isinstance(by_phone, dict) and by_phone["card_no"] == CARD
    out = kiosk.ok("member", "show", "--card", CARD, "--history", "２")
    assert out.count("purchase") == 2


REFUSED = [
    (
        ("points", "accrue", "--card", CARD, "--amount-cents", "١٠٠", "--ref", "AR-1"),
        2,
        "'--amount-cents': a number",
    ),
    (
        ("points", "accrue", "--card", CARD, "--amount-cents", "१००", "--ref", "AR-2"),
        2,
        "'--amount-cents': a number",
    ),
    (
        ("points", "accrue", "--card", CARD, "--amount-cents", "1²", "--ref", "AR-3"),
        2,
        "'--amount-cents': a number",
    ),
    (
        ("points", "accrue", "--card", "٢٩٠٠٠٠٠٠٠٠٠١٨", "--amount-cents", "100", "--ref", "AR-4"),
        1,
        "a card number",
    ),
    (("member", "show", "--phone", "١٣٨٠٠١٣٨٠٠٠"), 1, "a phone number"),
    (
        ("gift", "redeem", "--card", CARD, "--sku", "TOWEL", "--qty", "١", "--request-id", "AR-5"),
        2,
        "'--qty': a number",
    ),
    (
        ("gift", "add", "--sku", "AR", "--name", "x", "--points", "١٠", "--stock", "1"),
        2,
        "'--points': a number",
    ),
    (("member", "show", "--card", CARD, "--history", "٣"), 2, "'--history': a number"),
]


def test_other_numerals_are_refused_in_one_line_and_change_nothing(kiosk: Kiosk) -> None:
    before = (kiosk.json("member", "show", "--card", CARD), kiosk.json("gift", "list"))
    for args, code, what in REFUSED:
        line = kiosk.fails(*args, code=code)
        assert f"{what} {DIGITS_RULE}" in line, (args, line)
    assert (kiosk.json("member", "show", "--card", CARD), kiosk.json("gift", "list")) == before


def test_a_pin_in_full_width_digits_signs_in_and_other_numerals_count_no_attempt(
    kiosk: Kiosk,
) -> None:
    out = kiosk.ok(
        "gift", "restock", "--sku", "TOWEL", "--qty", "２", "--staff", "sup", stdin="２５８０\n"
    )
    assert "7 in stock" in out
    audit_before = kiosk.json("audit")
    line = kiosk.fails(
        "gift", "restock", "--sku", "TOWEL", "--qty", "1", "--staff", "sup", stdin="٢٥٨٠\n", code=1
    )
    assert f"a PIN {DIGITS_RULE}" in line
    assert kiosk.json("audit") == audit_before  # no failed sign-in recorded, no stock added


def test_hq_commands_read_numbers_by_the_same_rule(kiosk: Kiosk) -> None:
    line = kiosk.fails("hq", "command", "D1", "ping", "--ttl", "١٠", code=2)
    assert f"'--ttl': a number {DIGITS_RULE}" in line
