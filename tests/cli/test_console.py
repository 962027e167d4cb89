"""The staff console as a person runs it: real files, real exit codes; each command run as a
fresh one in this process (tests/cli_runner.py), and the installed ``kiosk`` script as a
process of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_runner import run_kiosk

# The console script pip installed beside this Python (``kiosk`` on a device's PATH).
INSTALLED_KIOSK = Path(sys.executable).with_name("kiosk")
CARD = "2900000000018"
CARD2 = "2900000000025"


class Console:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def environment(self, env: dict[str, str] | None = None) -> dict[str, str]:
        full_env = {**os.environ, "KIOSK_DATA_DIR": str(self.data_dir), **(env or {})}
        full_env.pop("KIOSK_CONFIG", None)
        return full_env

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None):
        return run_kiosk(*args, stdin=stdin, env=self.environment(env))

    def process(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        """``kiosk ARGS...`` run as a person runs it: the installed script, a process."""
        proc = subprocess.run(
            [str(INSTALLED_KIOSK), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.environment(),
            timeout=60,
        )
        return proc.returncode, proc.stdout, proc.stderr

    def ok(self, *args: str, stdin: str = "") -> str:
        code, out, err = self(*args, stdin=stdin)
        assert code == 0, (args, out, err)
        return out

    def json(self, *args: str, stdin: str = ""):
        return json.loads(self.ok(*args, "--json", stdin=stdin))

    def fails(self, *args: str, stdin: str = "", code: int = 1) -> str:
        rc, out, err = self(*args, stdin=stdin)
        assert rc == code, (args, rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err  # one line, no traceback
        return lines[0]


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Console:
    c = Console(tmp_path_factory.mktemp("console"))
    c.ok("db", "upgrade")
    c.ok(
        "member",
        "register",
        "--phone",
        "13800138000",
        "--name",
        "王女士",
        "--birthday",
        "1950-03-09",
        "--consent",
    )
    c.ok("member", "register", "--phone", "13900139000", "--consent")
    c.ok("staff", "add", "--id", "sup", "--role", "supervisor", stdin="2580\n")
    c.ok("staff", "add", "--id", "clerk", "--role", "clerk", "--by", "sup", stdin="2580\n1357\n")
    c.ok(
        "gift",
        "add",
        "--sku",
        "TOWEL",
        "--name",
        "毛巾",
        "--points",
        "100",
        "--stock",
        "2",
        "--low-stock",
        "1",
    )
    return c


def test_version_and_help(console):
    assert "kiosk" in console.ok("--version")
    assert "member" in console.ok("--help")


def test_the_installed_command_runs_as_its_own_process(console):
    code, out, err = console.process("--version")
    assert code == 0 and out.startswith("kiosk, version "), (out, err)
    code, out, err = console.process("member", "show", "--card", CARD)
    assert code == 0 and "138****8000" in out and "13800138000" not in out, err
    code, out, err = console.process("member", "identify", "nonsense")
    assert code == 1 and out == ""
    assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("error: "), err


def test_member_show_is_masked(console):
    out = console.ok("member", "show", "--card", CARD)
    assert "138****8000" in out and "13800138000" not in out
    data = console.json("member", "show", "--phone", "13800138000")
    assert data["card_no"] == CARD and data["phone_masked"] == "138****8000"


def test_accrue_redeem_and_retry(console):
    first = console.json(
        "points", "accrue", "--card", CARD, "--amount-cents", "25000", "--ref", "RC-1"
    )
    again = console.json(
        "points", "accrue", "--card", CARD, "--amount-cents", "25000", "--ref", "RC-1"
    )
    assert (first["points"], first["duplicate"], again["duplicate"]) == (250, False, True)
    r1 = console.json("gift", "redeem", "--card", CARD, "--sku", "TOWEL", "--request-id", "X1")
    r2 = console.json("gift", "redeem", "--card", CARD, "--sku", "TOWEL", "--request-id", "X1")
    assert r1["redemption_id"] == r2["redemption_id"] and r1["balance"] == 150
    assert r1["low_stock"] is True
    listing = console.json("gift", "list")
    assert listing[0]["stock"] == 1
    assert console.json("ledger", "verify")["ok"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("member", "register", "--phone", "12345", "--consent"), "not a mobile phone number"),
        (("member", "register", "--phone", "13700137000"), "consent"),
        (("member", "register", "--phone", "13800138000", "--consent"), "already registered"),
        (("member", "show", "--card", "2900000000019"), "wrong check digit"),
        (("member", "show", "--card", "2900000000032"), "no member card"),
        (("member", "show", "--phone", "13700137000"), "no member with phone 137****7000"),
        (("points", "accrue", "--card", CARD, "--amount-cents", "-5", "--ref", "R"), "positive"),
        (
            ("gift", "redeem", "--card", CARD2, "--sku", "TOWEL", "--request-id", "Z"),
            "not enough points",
        ),
        (("gift", "redeem", "--card", CARD, "--sku", "NOPE", "--request-id", "Z"), "no gift"),
        (("points", "expire", "--now", "yesterday"), "Invalid value"),
    ],
)
def test_bad_input_is_one_clear_line(console, args, message):
    line = console.fails(*args, code=2 if "Invalid value" in message else 1)
    assert message in line


def test_missing_option_is_a_usage_error(console):
    assert "Missing option" in console.fails("points", "accrue", "--card", CARD, code=2)


def test_out_of_stock(console):
    console.ok("gift", "add", "--sku", "ONE", "--name", "限量", "--points", "1", "--stock", "0")
    assert "out of stock" in console.fails(
        "gift", "redeem", "--card", CARD, "--sku", "ONE", "--request-id", "OOS"
    )


def test_a_gift_is_handed_over_once_against_its_voucher(console):
    console.ok("gift", "add", "--sku", "MUG", "--name", "马克杯", "--points", "1", "--stock", "5")
    coupon_gift = ("--sku", "C1", "--name", "1元券", "--points", "1", "--stock", "5")
    console.ok("gift", "add", *coupon_gift, "--coupon-cents", "100")
    console.ok("points", "accrue", "--card", CARD, "--amount-cents", "1000", "--ref", "RV-1")
    mug = console.json("gift", "redeem", "--card", CARD, "--sku", "MUG", "--request-id", "V-1")
    other = console.json("gift", "redeem", "--card", CARD, "--sku", "MUG", "--request-id", "V-2")
    coupon = console.json("gift", "redeem", "--card", CARD, "--sku", "C1", "--request-id", "V-3")
    code = mug["voucher_code"]
    out = console.ok("gift", "collect", code, "--staff", "clerk", stdin="1357\n")
    assert out.startswith("hand over 1 x 马克杯 (MUG) to card *********0018: voucher ")
    assert "collected (valid until 2" in out and CARD not in out
    assert "already collected" in console.fails(
        "gift", "collect", code, "--staff", "clerk", stdin="1357\n"
    )
    done = console.json(
        "gift", "collect", other["voucher_code"], "--staff", "clerk", stdin="1357\n"
    )
    assert (done["voucher_id"], done["sku"], done["verified"]) == (
        other["redemption_id"],
        "MUG",
        True,
    )
    for bad, message in [
        (coupon["coupon_codes"][0], "this is a coupon, not a gift voucher"),
        # two characters of the signature changed (not the last: its low bits are padding)
        (code[:-4] + ("AA" if code[-4:-2] != "AA" else "BB") + code[-2:], "not genuine"),
        ("hello", "not a gift voucher code"),
    ]:
        assert message in console.fails("gift", "collect", bad, "--staff", "clerk", stdin="1357\n")
    assert "wrong PIN" in console.fails(
        "gift", "collect", other["voucher_code"], "--staff", "clerk", stdin="0000\n"
    )
    actions = [a["action"] for a in console.json("audit")]
    assert actions.count("gift.collect") == 2


def test_staff_pin_comes_from_stdin_and_wrong_pins_lock(console):
    console.ok(
        "staff", "add", "--id", "temp", "--role", "clerk", "--by", "sup", stdin="2580\n4826\n"
    )
    for _ in range(4):
        assert "wrong PIN" in console.fails("staff", "login", "--id", "temp", stdin="0000\n")
    assert "locked" in console.fails("staff", "login", "--id", "temp", stdin="0000\n")
    assert "locked" in console.fails("staff", "login", "--id", "temp", stdin="4826\n")
    assert "PIN" in console.fails(
        "gift", "restock", "--sku", "TOWEL", "--qty", "1", "--staff", "temp", stdin=""
    )


def test_weak_pins_are_refused(console):
    line = console.fails(
        "staff", "add", "--id", "weak", "--role", "clerk", "--by", "sup", stdin="2580\n1234\n"
    )
    assert "run of consecutive digits" in line
    line = console.fails(
        "staff", "add", "--id", "weak", "--role", "clerk", "--by", "sup", stdin="2580\n7777\n"
    )
    assert "repeat a single digit" in line
    # The supervisor's PIN was right both times: a wrong one is another refusal.
    line = console.fails(
        "staff", "add", "--id", "weak", "--role", "clerk", "--by", "sup", stdin="9999\n4862\n"
    )
    assert "consecutive" not in line and "repeat" not in line


def test_lost_card_then_replacement(console):
    console.ok("points", "accrue", "--card", CARD2, "--amount-cents", "50000", "--ref", "RL-1")
    console.ok("card", "lost", "--card", CARD2, "--staff", "clerk", stdin="1357\n")
    assert "reported lost" in console.fails("points", "checkin", "--card", CARD2)
    assert "not active" in console.fails(
        "card", "lost", "--card", CARD2, "--staff", "clerk", stdin="1357\n"
    )
    new = console.json("card", "replace", "--card", CARD2, "--staff", "clerk", stdin="1357\n")
    assert new["balance"] == 500
    assert console.json("member", "show", "--card", new["new_card_no"])["balance"] == 500


def test_delete_needs_a_supervisor(console):
    console.ok("member", "register", "--phone", "13600136000", "--consent")
    line = console.fails(
        "member", "delete", "--phone", "13600136000", "--staff", "clerk", stdin="1357\n"
    )
    assert "may not delete member" in line
    out = console.json(
        "member", "delete", "--phone", "13600136000", "--staff", "sup", stdin="2580\n"
    )
    assert len(out["cards_blocked"]) == 1


def test_update_contact(console):
    console.ok("member", "register", "--phone", "13500135000", "--consent")
    card = console.json("member", "show", "--phone", "13500135000")["card_no"]
    line = console.fails(
        "member",
        "update",
        "--card",
        card,
        "--phone",
        "13800138000",
        "--staff",
        "clerk",
        stdin="1357\n",
    )
    assert "belongs to another member" in line
    out = console.json(
        "member",
        "update",
        "--card",
        card,
        "--phone",
        "13511112222",
        "--staff",
        "clerk",
        stdin="1357\n",
    )
    assert out["phone_masked"] == "135****2222"
    assert "no member with phone" in console.fails("member", "show", "--phone", "13500135000")


def test_member_code_round_trip(console):
    code = console.json("member", "code", "--card", CARD)["code"]
    assert console.json("member", "identify", code)["card_no"] == CARD
    assert "already used" in console.fails("member", "identify", code)


def test_audit_lists_staff_actions(console):
    actions = [a["action"] for a in console.json("audit")]
    assert "staff.add" in actions and "member.register" in actions


def test_config_errors_name_the_bad_key(tmp_path):
    c = Console(tmp_path)
    (tmp_path / "config.toml").write_text("[points]\npoints_per_yaun = 2\n", encoding="utf-8")
    line = c.fails("status")
    assert "unknown key 'points.points_per_yaun'" in line
    (tmp_path / "config.toml").write_text("[device\n", encoding="utf-8")
    assert "not valid TOML" in c.fails("status")
    assert "config file not found" in c.fails("--config", str(tmp_path / "nope.toml"), "status")


def test_shell_runs_commands_from_stdin(console):
    code, out, err = console(
        "shell", stdin="gift list\nmember show --card 2900000000018\npoints accrue --card 1\nexit\n"
    )
    assert code == 0
    assert "Member Center Kiosk" in out and "TOWEL" in out and "138****8000" in out
    assert "Missing option" in err  # a mistake in the shell is reported, the shell goes on


def test_broker_config_renders_a_store_broker_bridged_to_hq(console, tmp_path):
    out = tmp_path / "S001"
    console.ok(
        "sync",
        "broker-config",
        str(out),
        "18883",
        "kiosk:K001:S001",
        "lane:S001-L1:S001",
        "bridge:bridge-S001:S001",
        "--hq-address",
        "127.0.0.1:28883",
    )
    bridge = (out / "conf.d/bridge-S001.conf").read_text()
    assert "address 127.0.0.1:28883" in bridge and "K001" in bridge and "S001-L1" in bridge
    assert (out / "bridge-S001.crt").exists()
    # a store broker without its bridge identity: one clear line, nothing bridged
    lonely = tmp_path / "S002"
    message = console.fails(
        "sync", "broker-config", str(lonely), "18884", "kiosk:K002:S002", "--hq-address", "h:1"
    )
    assert "bridge" in message
    assert not (lonely / "conf.d").exists() or not list((lonely / "conf.d").iterdir())
    # a bad HQ address: one clear line, and no broker left half made
    typo = tmp_path / "S003"
    message = console.fails(
        "sync",
        "broker-config",
        str(typo),
        "18885",
        "kiosk:K003:S003",
        "bridge:bridge-S003:S003",
        "--hq-address",
        "nohost",
    )
    assert "host:port" in message
    assert not typo.exists()
    # the chain's ca.crt alone (its key left at HQ): refused, the chain's certificate kept
    alone = tmp_path / "S004"
    alone.mkdir()
    chain_ca = (out / "ca.crt").read_bytes()
    (alone / "ca.crt").write_bytes(chain_ca)
    message = console.fails(
        "sync",
        "broker-config",
        str(alone),
        "18886",
        "kiosk:K004:S004",
        "bridge:bridge-S004:S004",
        "--hq-address",
        "127.0.0.1:28883",
    )
    assert "ca.crt and ca.key go together" in message
    assert (alone / "ca.crt").read_bytes() == chain_ca
    assert [p.name for p in alone.iterdir()] == ["ca.crt"]


def test_hq_settings_that_are_wrong_are_one_line_naming_the_key(console, tmp_path):
    db = f"sqlite:///{tmp_path / 'hq.db'}"
    settings = tmp_path / "hq.toml"
    settings.write_text("backups_keep = 0\n")
    code, out, err = console("hq", "--hq-config", str(settings), "--db", db, "fleet")
    assert code == 1 and out == ""
    wanted = "'backups_keep': Input should be greater than or equal to 1"
    assert err.strip() == f"error: {settings}: {wanted}"
    settings.write_text("backups_keep = [")
    code, _out, err = console("hq", "--hq-config", str(settings), "--db", db, "fleet")
    assert code == 1 and "not valid TOML" in err and "internal error" not in err
    code, _out, err = console("hq", "--backups-keep", "0", "--db", db, "fleet")
    assert code == 2 and "Invalid value for '--backups-keep': 0 is not in the range" in err
    assert not (tmp_path / "hq.db").exists()  # nothing was opened or made


def test_desk_corrections_adjust_refund_and_settle(console):
    card = console.json("member", "register", "--phone", "13700137000", "--consent")["card_no"]
    console.ok("points", "accrue", "--card", card, "--amount-cents", "30000", "--ref", "RC-D1")
    out = console.ok(
        "points", "adjust", "--card", card, "--points", "50", "--reason", "missed_points",
        "--note", "小票漏扫", "--staff", "clerk", stdin="1357\n",
    )  # fmt: skip
    assert "+50 points (missed_points) for card" in out and "balance 350" in out
    take = ("points", "adjust", "--card", card, "--points", "-900", "--reason", "correction")
    refused = console.fails(*take, "--staff", "clerk", stdin="1357\n")
    assert "needs a supervisor's approval" in refused
    taken = console.json(*take, "--staff", "clerk", "--approver", "sup", stdin="1357\n2580\n")
    assert (taken["balance"], taken["overdraft"], taken["approved_by"]) == (-550, True, "sup")
    refund = ("points", "refund", "--receipt", "RC-D1", "--refund-id", "RF-D1")
    out = console.ok(*refund, "--amount-cents", "10000")
    assert "-100 points for refund RF-D1" in out and "owes points" in out
    assert "larger than what is left" in console.fails(
        *refund[:-1], "RF-D2", "--amount-cents", "20001"
    )
    settle = ("points", "settle", "--card", card, "--how", "overdraft_written_off")
    settled = console.json(
        *settle, "--note", "店长同意", "--staff", "clerk", "--approver", "sup", stdin="1357\n2580\n"
    )
    assert (settled["points"], settled["balance"], settled["overdraft"]) == (650, 0, False)
    assert "ok" in console.ok("ledger", "verify").lower()
