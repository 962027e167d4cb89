"""`kiosk hq import`: a chain's members from its earlier system, as HQ's operators run it."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edge.domain.cards import card_number
from edge.security.keys import load_secret
from edge.security.personal import PhoneVault
from hq import personal
from hq.importer import CHUNK
from hq.ledger import balances, ledger_sums
from hq.models import CentralCard, CentralLot, CentralMember, MemberImport
from hq.service import make_hq_engine
from tests.cli_runner import Ran, run_kiosk
from tests.hq.database import migrated_engine, sqlite_hq_url
from tests.waiting import wait_for

KIOSK = [sys.executable, "-m", "edge.cli.main"]
HEADER = "卡号,手机号,姓名,生日,开卡门店,会员等级,积分明细,注册日期\n"
ROWS = [
    "2900000000018,13800138000,王女士,1950-03-09,S001,金卡会员,500@2027-06-30;200@2020-01-01,2019-05-01",
    "2900000000025,138001,李,1960-01-01,S001,普通会员,,",  # phone
    "2900000000032,13900139000,赵,,S009,,,",  # store
    "2900000000018,13700137000,,,S001,,,",  # the card again
    "2900000000049,13800138000,,,S001,,,",  # the phone again
    "2900000000056,13600136000,,1960-13-45,S002,,,",  # date
    "2900000000063,13500135000,,,S002,platinum,,",  # tier
    "2900000000070,１３４００１３４０００,,,S002,silver,120@2027-01-31,",  # full-width digits
]


def hq(db: str, *args: str) -> Ran:
    return run_kiosk("hq", "--db", db, *args)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    for command in ("lookup-key", "data-key"):
        made = hq("sqlite://", command, "--out", str(directory))
        assert made.returncode == 0, made.stderr
    return directory


def vault(keys: Path) -> PhoneVault:
    return PhoneVault(load_secret(keys / "hq-data.key"), load_secret(keys / "hq-lookup.key"))


def test_a_chain_export_comes_in_row_by_row_and_says_why_rows_were_refused(tmp_path, keys):
    db = sqlite_hq_url(tmp_path / "hq.db")
    export = tmp_path / "members.csv"
    export.write_bytes(("\ufeff" + HEADER + "\n".join(ROWS) + "\n").encode("utf-8"))
    report = tmp_path / "refused.csv"
    args = ("import", str(export), "--keys", str(keys), "--store", "S001", "--store", "S002")
    done = hq(db, *args, "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"imported {export}; members in: 2, rows refused: 6, points as opening lots: 620, "
        "points already expired and left out: 200"
    )
    with report.open(encoding="utf-8") as f:
        refused = {int(r["line"]): r["reason"] for r in csv.DictReader(f)}
    assert refused == {
        3: "the phone number is not a mobile number (11 digits from 1)",
        4: "unknown store 'S009'",
        5: "duplicate card: also on line 2",
        6: "the phone is also on line 2",
        7: "the birthday '1960-13-45' is not a date (YYYY-MM-DD)",
        8: "unknown tier 'platinum'",
    }
    engine = make_hq_engine(db)
    with Session(engine) as s:
        v = vault(keys)
        wang = s.scalar(
            select(CentralMember).where(CentralMember.phone_hash == v.lookup_hash("13800138000"))
        )
        assert wang is not None and personal.name_of(v, wang) == "王女士"
        assert (wang.store_id, wang.tier, wang.balance, wang.phone_masked) == (
            "S001", "gold", 500, "138****8000"
        )  # fmt: skip
        assert str(personal.birthday_of(v, wang)) == "1950-03-09" and wang.birth_month == 3
        assert wang.created_at.year == 2019
        assert wang.phone_hash == v.lookup_hash("13800138000")  # as the kiosks hash it
        assert wang.phone_enc is not None and v.decrypt(wang.phone_enc) == "13800138000"
        lots = s.execute(select(CentralLot.points, CentralLot.expires_at)).all()
        assert sorted((p, e.date().isoformat()) for p, e in lots) == [
            (120, "2027-01-31"),
            (500, "2027-06-30"),
        ]
        assert balances(s) == ledger_sums(s)
        assert s.get(CentralCard, "2900000000070") is not None
    engine.dispose()
    again = hq(db, *args)
    assert again.returncode == 0, again.stderr
    assert "was imported already" in again.stdout and "nothing changed" in again.stdout


def test_a_gb18030_export_reads_the_same(tmp_path, keys):
    db = sqlite_hq_url(tmp_path / "hq.db")
    export = tmp_path / "members.csv"
    export.write_bytes((HEADER + ROWS[0] + "\n").encode("gb18030"))
    done = hq(db, "import", str(export), "--keys", str(keys), "--store", "S001", "--json")
    assert done.returncode == 0, done.stderr
    assert '"imported": 1' in done.stdout


def test_a_file_it_cannot_use_is_refused_in_one_line_and_changes_nothing(tmp_path, keys):
    db = sqlite_hq_url(tmp_path / "hq.db")
    export = tmp_path / "members.csv"
    export.write_text("phone,name\n13800138000,Li\n", encoding="utf-8")
    done = hq(db, "import", str(export), "--keys", str(keys))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {export} has no column for card_no: card_no, card, card number, 卡号, 会员卡号; "
        "home_store: home_store, store, store_id, 门店, 开卡门店, 所属门店"
    ]
    missing = hq(db, "import", str(tmp_path / "nowhere.csv"), "--keys", str(keys))
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    no_keys = hq(db, "import", str(export), "--keys", str(tmp_path))
    assert no_keys.returncode == 1 and "kiosk hq data-key" in no_keys.stderr
    engine = make_hq_engine(db)
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(MemberImport)) == 0
        assert s.scalar(select(func.count()).select_from(CentralMember)) == 0
    engine.dispose()


def test_an_interrupted_import_resumes_and_ends_as_one_run_would(tmp_path, keys, postgres_url):
    migrated_engine(postgres_url).dispose()
    export = tmp_path / "members.csv"
    rows = 8 * CHUNK
    with export.open("w", encoding="utf-8") as f:
        f.write("card_no,phone,home_store,points,points_expire\n")
        for n in range(rows):
            phone = f"139{n:08d}" if n % 97 else "12345"  # every 97th refused
            f.write(f"{card_number(5_000_000 + n)},{phone},S001,{n % 500},2030-12-31\n")
    args = [*KIOSK, "hq", "--db", postgres_url, "import", str(export), "--keys", str(keys),
            "--store", "S001"]  # fmt: skip
    engine = make_hq_engine(postgres_url)

    def lines_done() -> int:
        with Session(engine) as s:
            return int(s.scalar(select(MemberImport.lines_done)) or 0)

    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: lines_done() > 1 or first.poll() is not None, 120, "a chunk committed")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    stopped_at = lines_done()
    assert 1 < stopped_at < rows + 1, "the import was not interrupted half-way"
    second = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resumed {export} after line {stopped_at}" in second.stdout
    refused = len([n for n in range(rows) if n % 97 == 0])
    with Session(engine) as s:
        record = s.scalar(select(MemberImport))
        assert record is not None and record.finished_at is not None
        assert (record.imported, record.refused) == (rows - refused, refused)
        assert s.scalar(select(func.count()).select_from(CentralCard)) == rows - refused
        # Each balance is its opening lots' entries (members with no points have none).
        assert {m: b for m, b in balances(s).items() if b} == ledger_sums(s)
        assert record.points == sum(n % 500 for n in range(rows) if n % 97)
    engine.dispose()


def test_imported_members_reach_their_home_stores_kiosks_with_their_lots(tmp_path, keys):
    """Each home store's feed carries its imported members; a kiosk there builds them with
    their balances and lots (expiry dates kept), its ledger sound, its card lookups served."""
    from edge.services.members import show_member
    from edge.services.verify import verify_ledger
    from edge.storage.models import PointsLot
    from tests.hq.test_feeds import follow, kiosk

    db = sqlite_hq_url(tmp_path / "hq.db")
    export = tmp_path / "members.csv"
    export.write_bytes(("\ufeff" + HEADER + "\n".join(ROWS) + "\n").encode("utf-8"))
    args = ("import", str(export), "--keys", str(keys), "--store", "S001", "--store", "S002")
    done = hq(db, *args)
    assert done.returncode == 0, done.stderr
    engine = make_hq_engine(db)
    s001 = kiosk(tmp_path, "K001", "S001", 1)
    s002 = kiosk(tmp_path, "K002", "S002", 50_000)
    try:
        hq_key = vault(keys)  # the key the import sealed with is the one HQ serves with
        assert follow(engine, s001, hq_key) == 1 and follow(engine, s002, hq_key) == 1
        wang = show_member(s001, card_no="2900000000018")
        assert (wang.balance, wang.tier, wang.name_masked) == (500, "gold", "王女士")
        with s001.db.read() as s:
            lots = [(p.remaining, p.expires_at.date().isoformat()) for p in s.scalars(
                select(PointsLot))]  # fmt: skip
        assert lots == [(500, "2027-06-30")]
        assert show_member(s002, card_no="2900000000070").balance == 120
        with pytest.raises(Exception) as other_store:
            show_member(s002, card_no="2900000000018")
        assert getattr(other_store.value, "code", "") == "unknown_card"
        for app in (s001, s002):
            report = verify_ledger(app)
            assert report.ok, report.problems
    finally:
        s001.close()
        s002.close()
        engine.dispose()


def test_a_card_the_kiosks_cannot_read_is_refused_with_the_reason(tmp_path, keys):
    db = sqlite_hq_url(tmp_path / "hq.db")
    export = tmp_path / "members.csv"
    export.write_text(HEADER + "2900000000019,,,,S001,,,\n" + ROWS[0] + "\n", encoding="utf-8")
    report = tmp_path / "refused.csv"
    done = hq(db, "import", str(export), "--keys", str(keys), "--store", "S001",
              "--report", str(report))  # fmt: skip
    assert done.returncode == 0, done.stderr
    with report.open(encoding="utf-8") as f:
        refused = {int(r["line"]): r["reason"] for r in csv.DictReader(f)}
    assert refused == {
        2: "card 2900000000019 is not a card number the kiosks read (13 digits from 29, with "
        "its check digit)"
    }
