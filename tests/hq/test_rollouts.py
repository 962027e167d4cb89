"""Staged rollouts on HQ's real database (both engines): bundles kept by their SHA-256 and
refused unless HQ signed them, rings of kiosks, and :func:`hq.rollouts.step` driven with a
fake ``send`` while the kiosks report their versions as their telemetry would."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from edge.domain.errors import InvalidInput, NotFound, Refusal
from edge.protocol import (
    COMMAND_SIGNING_DOMAIN,
    Command,
    CommandResult,
    DeviceHealth,
    DeviceStatus,
    Telemetry,
)
from edge.security.bundle import build_bundle
from edge.security.signing import verify_bytes
from hq.audit import Actor
from hq.bundles import BundleInfo, add_bundle, bundle_file, bundle_url, list_bundles
from hq.fleet import apply_status, apply_telemetry
from hq.models import Alert, AuditRecord, EnrolledDevice, UpdateBundle
from hq.rollouts import (
    Ring,
    RolloutPolicy,
    StepReport,
    UpdateSigner,
    cancel_rollout,
    fleet_bucket,
    halt_rollout,
    in_percent,
    parse_ring,
    record_result,
    resume_rollout,
    ring_devices,
    rollout_status,
    start_rollout,
    step,
    widen_rollout,
)
from tests.hq.database import migrated_engine

UPDATE_KEY = Ed25519PrivateKey.generate()
COMMAND_KEY = Ed25519PrivateKey.generate()
BASE_URL = "https://hq.example.net/console"
SIGNER = UpdateSigner(COMMAND_KEY, BASE_URL)
T0 = datetime(2026, 12, 8, 2, 0, tzinfo=UTC)
ALICE = Actor("alice", "cli")


# -- what the tests share -------------------------------------------------------------------


def tiny_wheel(directory: Path, version: str) -> Path:
    """A well-formed wheel, enough for bundles that are checked but never installed."""
    path = directory / f"member_center_kiosk-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("edge_probe.py", f"version = {version!r}\n")
    return path


def make_bundle(
    directory: Path, version: str, signer: Ed25519PrivateKey = UPDATE_KEY, name: str = ""
) -> Path:
    work = directory / f"wheel-{version}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    out = directory / (name or f"member-kiosk-{version}.tar")
    build_bundle([tiny_wheel(work, version)], version, signer, out)
    return out


def keep_bundle(engine: Engine, store: Path, bundle: Path, actor: Actor = ALICE) -> BundleInfo:
    with Session(engine) as s, s.begin():
        return add_bundle(s, store, bundle, actor, T0, UPDATE_KEY.public_key())


def report(
    engine: Engine,
    device_id: str,
    version: str,
    at: datetime,
    store_id: str = "S001",
    faults: list[str] | None = None,
    printer: str = "ok",
) -> None:
    """The kiosk's telemetry reaching HQ (:func:`hq.fleet.apply_telemetry`)."""
    sample = Telemetry(
        device_id=device_id,
        store_id=store_id,
        at=at,
        version=version,
        uptime_s=10.0,
        outbox_depth=0,
        devices={"printer": DeviceHealth(state=printer, code="" if printer == "ok" else "jam")},
        faults=faults or [],
    )
    with Session(engine) as s, s.begin():
        apply_telemetry(s, sample, at)


def status(
    engine: Engine, device_id: str, state: str, at: datetime, role: str = "kiosk", store="S001"
) -> None:
    message = DeviceStatus(
        device_id=device_id, store_id=store, role=role, state=state, at=at, version="1.0.0"
    )
    with Session(engine) as s, s.begin():
        apply_status(s, message, at)


@dataclass
class FakeSend:
    """The broker's side of ``send``: keeps each command; fails while ``down``."""

    commands: list[Command] = field(default_factory=list)
    down: bool = False
    delay_s: float = 0.0

    def __call__(self, command: Command) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        time.sleep(self.delay_s)
        self.commands.append(command)

    def to(self, device_id: str) -> Command:
        (found,) = [c for c in self.commands if c.device_id == device_id]
        return found

    def devices(self) -> list[str]:
        return [c.device_id for c in self.commands]


def run_step(
    engine: Engine, now: datetime, send: FakeSend, signer: UpdateSigner | None = SIGNER
) -> StepReport:
    with Session(engine) as s, s.begin():
        return step(s, now, send, signer)


def answer(engine: Engine, command: Command, status: str, at: datetime, **detail: object) -> bool:
    """The device's answer to ``command`` reaching HQ (:func:`hq.rollouts.record_result`)."""
    result = CommandResult(
        transaction=command.transaction,
        device_id=command.device_id,
        status=status,
        detail=detail,
        at=at,
    )
    with Session(engine) as s, s.begin():
        return record_result(s, result, at)


def states(engine: Engine, rollout_id: int) -> dict[str, str]:
    with Session(engine) as s:
        return {d.device_id: d.state for d in rollout_status(s, rollout_id).devices}


def open_alerts(engine: Engine) -> set[str]:
    with Session(engine) as s:
        return set(
            s.scalars(
                select(Alert.subject).where(
                    Alert.kind == "update_failed", Alert.cleared_at.is_(None)
                )
            )
        )


def audit(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as s:
        return [
            (r.actor, r.action, r.subject)
            for r in s.scalars(select(AuditRecord).order_by(AuditRecord.id))
        ]


def start(engine: Engine, sha256: str, ring: str, **policy: int) -> int:
    with Session(engine) as s, s.begin():
        view = start_rollout(s, sha256, parse_ring(ring), ALICE, T0, RolloutPolicy(**policy))
    return view.id


def kiosks(engine: Engine, count: int, version: str = "1.0.0", stores: int = 2) -> list[str]:
    ids = [f"K{i:03d}" for i in range(1, count + 1)]
    for i, device_id in enumerate(ids):
        report(engine, device_id, version, T0, store_id=f"S{i % stores + 1:03d}")
    return ids


# -- rings --------------------------------------------------------------------------------------


def test_percent_rings_are_a_stable_share_of_the_fleet_and_a_larger_one_holds_a_smaller():
    fleet = [f"K{i:05d}" for i in range(10_000)]
    ten = {d for d in fleet if in_percent(d, 10)}
    assert 900 <= len(ten) <= 1100  # a tenth, give or take
    assert {d for d in fleet if in_percent(d, 10)} == ten  # the same kiosks every time
    quarter = {d for d in fleet if in_percent(d, 25)}
    assert ten < quarter and 2300 <= len(quarter) <= 2700
    assert {d for d in fleet if in_percent(d, 100)} == set(fleet)
    assert all(0 <= fleet_bucket(d) < 10_000 for d in fleet[:100])


@pytest.mark.parametrize(
    "text", ["", "everyone", "percent:0", "percent:101", "percent:ten", "store:", "device:a b"]
)
def test_a_ring_that_is_not_one_is_refused_in_one_line(text):
    with pytest.raises(InvalidInput) as refused:
        parse_ring(text)
    assert refused.value.code == "bad_ring" and "\n" not in refused.value.message


def test_ring_devices_are_kiosks_only_by_store_device_or_share(engine):
    ids = kiosks(engine, 40, stores=4)
    status(engine, "L1", "online", T0, role="lane")
    status(engine, "hq-1", "online", T0, role="hq", store="hq")
    with Session(engine) as s, s.begin():
        s.add(
            EnrolledDevice(
                device_id="K040",
                store_id="S004",
                serial="SN-40",
                state="revoked",
                card_range_start=1,
                card_range_end=2,
                certificate_serial="01",
                certificate_expires=T0 + timedelta(days=365),
                enrolled_at=T0,
                updated_at=T0,
                successor="",
            )
        )
    with Session(engine) as s:
        everyone = [d for d, _ in ring_devices(s, Ring("all"))]
        assert everyone == sorted(set(ids) - {"K040"})  # no lane, no HQ worker, none revoked
        assert ring_devices(s, parse_ring("store:S002")) == [
            (d, "S002") for d in ids[1::4] if d != "K040"
        ]
        assert ring_devices(s, parse_ring("device:K007")) == [("K007", "S003")]
        assert ring_devices(s, parse_ring("device:L1")) == []
        share = [d for d, _ in ring_devices(s, parse_ring("percent:30"))]
        assert share == [d for d in everyone if in_percent(d, 30)]
        assert set(share) <= {d for d, _ in ring_devices(s, parse_ring("percent:60"))}


# -- bundles kept at HQ ---------------------------------------------------------------------


def test_a_signed_bundle_is_kept_by_its_sha256_and_served_only_as_recorded(engine, tmp_path):
    store = tmp_path / "bundles"
    bundle = make_bundle(tmp_path, "1.1.0")
    kept = keep_bundle(engine, store, bundle)
    assert (kept.version, kept.size, kept.file_name, kept.uploaded_by) == (
        "1.1.0",
        bundle.stat().st_size,
        bundle.name,
        "alice",
    )
    path = store / f"{kept.sha256}.bundle"
    assert path.read_bytes() == bundle.read_bytes()
    # the same bundle again, as bytes this time: nothing new, nothing audited twice
    with Session(engine) as s, s.begin():
        again = add_bundle(
            s, store, bundle.read_bytes(), ALICE, T0, UPDATE_KEY.public_key(), name="x.tar"
        )
    assert again == kept
    with Session(engine) as s:
        assert list_bundles(s) == [kept]
        assert bundle_file(s, store, kept.sha256) == path
        for wrong in ("../../etc/passwd", kept.sha256.upper(), "0" * 64, kept.sha256[:12], ""):
            assert bundle_file(s, store, wrong) is None
    assert audit(engine) == [("alice", "bundle.upload", f"bundle:{kept.sha256}")]
    assert bundle_url(BASE_URL + "/", kept.sha256) == f"{BASE_URL}/bundles/{kept.sha256}.bundle"
    assert sorted(p.name for p in store.iterdir()) == [".incoming", path.name]
    assert list((store / ".incoming").iterdir()) == []


def _tampered(tmp_path: Path) -> Path:
    """A bundle HQ signed, one of whose wheels was swapped afterwards."""
    good = make_bundle(tmp_path, "1.2.0", name="good.tar")
    out = tmp_path / "tampered.tar"
    with tarfile.open(good) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()
            if member.name.endswith(".whl"):
                data = data + b"\0"
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out


def _unsigned(tmp_path: Path) -> Path:
    """A tar with a manifest but no signature."""
    good = make_bundle(tmp_path, "1.2.0", name="signed.tar")
    out = tmp_path / "unsigned.tar"
    with tarfile.open(good) as source, tarfile.open(out, "w") as target:
        for member in source.getmembers():
            if member.name != "manifest.sig":
                target.addfile(member, source.extractfile(member))
    return out


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("not-a-tar", "bundle_invalid", "not an update bundle"),
        ("unsigned", "bundle_invalid", "no manifest.sig"),
        ("another-key", "bundle_signature", "does not verify with HQ's update key"),
        ("tampered", "bundle_invalid", "does not match its signed hash"),
        ("same-version", "version_taken", "version 1.1.0 is bundle"),
    ],
)
def test_anything_but_a_bundle_hq_signed_is_refused_and_nothing_kept(
    engine, tmp_path, case, code, says
):
    store = tmp_path / "bundles"
    first = keep_bundle(engine, store, make_bundle(tmp_path, "1.1.0"))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"no tar at all")
    source = {
        "not-a-tar": lambda: junk,
        "unsigned": lambda: _unsigned(tmp_path),
        "another-key": lambda: make_bundle(
            tmp_path, "1.2.0", Ed25519PrivateKey.generate(), "other.tar"
        ),
        "tampered": lambda: _tampered(tmp_path),
        "same-version": lambda: make_bundle(tmp_path, "1.1.0", name="rebuilt.tar"),
    }[case]()
    with pytest.raises(InvalidInput) as refused, Session(engine) as s, s.begin():
        add_bundle(s, store, source, ALICE, T0, UPDATE_KEY.public_key())
    assert refused.value.code == code
    assert says in refused.value.message and "\n" not in refused.value.message
    assert source.name in refused.value.message  # names the file the person chose
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(UpdateBundle)) == 1
    assert sorted(p.name for p in store.iterdir()) == [".incoming", f"{first.sha256}.bundle"]
    assert list((store / ".incoming").iterdir()) == []
    assert len(audit(engine)) == 1


# -- the step ----------------------------------------------------------------------------------


def test_step_sends_a_few_at_a_time_and_a_kiosk_back_on_the_version_is_installed(engine, tmp_path):
    store = tmp_path / "bundles"
    kept = keep_bundle(engine, store, make_bundle(tmp_path, "1.1.0"))
    ids = kiosks(engine, 5)
    # an attempt at 1.1.0 that rolled back a day before this rollout is not this one's
    stale = f"update:rolled_back:1.1.0:{T0 - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}"
    report(engine, "K001", "1.0.0", T0, faults=[stale])
    rollout = start(engine, kept.sha256, "all", in_flight=2)
    send = FakeSend()

    first = run_step(engine, T0, send)
    assert first.sent == [(rollout, "K001"), (rollout, "K002")]
    command = send.to("K001")
    assert command.command == "update" and command.device_id == "K001"
    assert command.args == {
        "url": f"{BASE_URL}/bundles/{kept.sha256}.bundle",
        "sha256": kept.sha256,
        "size": kept.size,
        "version": "1.1.0",
    }
    assert verify_bytes(
        COMMAND_KEY.public_key(),
        COMMAND_SIGNING_DOMAIN,
        command.signed_bytes(),
        base64.b64decode(command.signature),
    )
    assert command.expires_at - command.issued_at == timedelta(seconds=3600)  # its timeout
    # two in flight: nothing more until one of them has its verdict
    assert run_step(engine, T0 + timedelta(seconds=5), send).sent == []
    assert answer(engine, command, "done", T0 + timedelta(seconds=30), queued=True)
    assert not answer(engine, command, "done", T0 + timedelta(seconds=31), replayed=True)
    assert run_step(engine, T0 + timedelta(seconds=35), send).sent == []

    # the agent restarted on the new version says so in its telemetry: installed, next one
    report(engine, "K001", "1.1.0", T0 + timedelta(minutes=5), faults=[stale])
    moved = run_step(engine, T0 + timedelta(minutes=5), send)
    assert (moved.installed, moved.sent) == ([(rollout, "K001")], [(rollout, "K003")])
    steps = []
    for n, device_id in enumerate(ids[1:], start=6):
        report(engine, device_id, "1.1.0", T0 + timedelta(minutes=n))
        steps.append(run_step(engine, T0 + timedelta(minutes=n), send))
    assert [r.finished for r in steps] == [[], [], [], [rollout]]
    assert run_step(engine, T0 + timedelta(minutes=20), send) == StepReport()
    assert send.devices() == ids  # each kiosk once, in order
    assert states(engine, rollout) == dict.fromkeys(ids, "installed")
    with Session(engine) as s:
        view = rollout_status(s, rollout)
    assert view.state == "finished" and view.counts["installed"] == 5
    assert [d.from_version for d in view.devices] == ["1.0.0"] * 5
    assert open_alerts(engine) == set()
    assert audit(engine)[-1] == ("alice", "rollout.start", f"rollout:{rollout}")


def test_each_way_an_update_fails_or_needs_no_command_gets_its_verdict(engine, tmp_path):
    kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
    kiosks(engine, 6)
    report(engine, "K007", "1.1.0", T0)  # there already
    report(engine, "K008", "1.2.0", T0)  # newer
    status(engine, "K009", "offline", T0 - timedelta(days=3))
    rollout = start(
        engine, kept.sha256, "all", in_flight=10, max_failure_pct=100, timeout_s=600,
        offline_limit_s=3600,
    )  # fmt: skip
    send = FakeSend()
    first = run_step(engine, T0, send)
    assert send.devices() == ["K001", "K002", "K003", "K004", "K005", "K006"]
    assert sorted(first.skipped) == [(rollout, "K007"), (rollout, "K008")]
    at = T0 + timedelta(minutes=1)

    # K001 refuses the bundle, K002 cannot download it: failed as soon as the answer is in
    answer(engine, send.to("K001"), "refused", at, error="bundle_signature", reason="bad sig")
    answer(engine, send.to("K002"), "failed", at, error="download_failed", message="HTTP 404")
    # K003 says it runs that version already: nothing to do
    answer(engine, send.to("K003"), "refused", at, error="already_current", reason="running")
    assert states(engine, rollout)["K001"] == "failed"  # judged where the answer arrived
    # K004 queued it, and its installer rolled it back after its health check
    answer(engine, send.to("K004"), "done", at, queued=True)
    fault = f"update:rolled_back:1.1.0:{at + timedelta(minutes=2):%Y-%m-%dT%H:%M:%SZ}"
    report(engine, "K004", "1.0.0", at + timedelta(minutes=4), faults=[fault])
    # K005 comes back on 1.1.0 with its printer failed; K006 never comes back
    report(engine, "K005", "1.1.0", at + timedelta(minutes=4), printer="failed")
    run_step(engine, at + timedelta(minutes=5), send)
    now = states(engine, rollout)
    assert [now[d] for d in ("K001", "K002", "K003", "K004")] == [
        "failed",
        "failed",
        "skipped",
        "failed",
    ]
    assert now["K005"] == now["K006"] == "sent"  # still within their timeout
    assert now["K009"] == "pending"  # offline, not past the limit counted from the start

    later = T0 + timedelta(minutes=11)
    run_step(engine, later, send)
    run_step(engine, T0 + timedelta(hours=1, minutes=1), send)
    with Session(engine) as s:
        view = rollout_status(s, rollout)
    reasons = {d.device_id: (d.state, d.reason) for d in view.devices}
    assert reasons["K001"] == ("failed", "the device answered refused (bundle_signature): bad sig")
    assert reasons["K002"][1] == "the device answered failed (download_failed): HTTP 404"
    assert "rolled it back" in reasons["K004"][1]
    assert reasons["K005"] == (
        "failed",
        "the device runs 1.1.0 but is not healthy (failed: printer) after 10 min",
    )
    assert reasons["K006"] == ("failed", "the device did not come back on 1.1.0 within 10 min")
    assert reasons["K007"] == ("skipped", "runs 1.1.0 already")
    assert reasons["K008"] == ("skipped", "runs 1.2.0 already")
    assert reasons["K009"][0] == "skipped" and reasons["K009"][1].startswith("offline since")
    assert view.state == "finished"
    assert view.counts == {"pending": 0, "sent": 0, "installed": 0, "failed": 5, "skipped": 4}
    assert open_alerts(engine) == {"K001", "K002", "K004", "K005", "K006"}
    assert len(send.commands) == 6


def test_a_kiosk_that_comes_back_healthy_in_time_is_installed_and_its_old_alert_cleared(
    engine, tmp_path
):
    kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
    kiosks(engine, 1)
    first = start(engine, kept.sha256, "all", timeout_s=600)
    send = FakeSend()
    run_step(engine, T0, send)
    run_step(engine, T0 + timedelta(minutes=11), send)  # silent past its timeout
    assert open_alerts(engine) == {"K001"}
    with Session(engine) as s, s.begin():
        assert rollout_status(s, first).state == "finished"
    second = start(engine, kept.sha256, "all", timeout_s=600)
    later = T0 + timedelta(hours=1)
    run_step(engine, later, send)
    report(engine, "K001", "1.1.0", later + timedelta(minutes=1), printer="failed")
    run_step(engine, later + timedelta(minutes=2), send)
    assert states(engine, second) == {"K001": "sent"}  # not healthy yet
    report(engine, "K001", "1.1.0", later + timedelta(minutes=3))
    done = run_step(engine, later + timedelta(minutes=3), send)
    assert done.installed == [(second, "K001")] and done.finished == [second]
    assert open_alerts(engine) == set()


def test_a_broker_that_is_down_or_no_signer_sends_nothing_and_the_kiosk_stays_pending(
    engine, tmp_path
):
    kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
    kiosks(engine, 2)
    with pytest.raises(Refusal) as empty, Session(engine) as s, s.begin():
        start_rollout(s, kept.sha256, parse_ring("store:S404"), ALICE, T0)
    assert empty.value.code == "empty_ring"
    rollout = start(engine, kept.sha256, "all")
    unsigned = run_step(engine, T0, FakeSend(), signer=None)
    assert unsigned.sent == [] and "no signer" in unsigned.unsent
    send = FakeSend(down=True)
    down = run_step(engine, T0, send)
    assert down.sent == [] and "broker unreachable" in down.unsent
    assert states(engine, rollout) == {"K001": "pending", "K002": "pending"}
    send.down = False
    assert len(run_step(engine, T0, send).sent) == 2


# -- the threshold, and what a person does ------------------------------------------------


def test_the_rollout_halts_itself_when_failures_pass_the_threshold(engine, tmp_path):
    kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
    ids = kiosks(engine, 16)
    rollout = start(engine, kept.sha256, "all", in_flight=10, max_failure_pct=20, min_attempts=5)
    send = FakeSend()
    run_step(engine, T0, send)
    assert len(send.commands) == 10
    at = T0 + timedelta(minutes=1)
    for device_id in ids[:2]:  # 2 of 10: 20 %, not more than 20 %
        answer(engine, send.to(device_id), "failed", at, error="download_failed", message="x")
    with Session(engine) as s:
        assert rollout_status(s, rollout).state == "running"
    answer(engine, send.to(ids[2]), "refused", at, error="bundle_hash", reason="y")  # 30 %
    with Session(engine) as s:
        view = rollout_status(s, rollout)
    assert view.state == "halted"
    assert view.halted_reason == "3 of 10 kiosks sent the update failed (30 %, more than 20 %)"
    assert open_alerts(engine) == {"K001", "K002", "K003", f"rollout:{rollout}"}
    assert audit(engine)[-1] == ("hq", "rollout.halt", f"rollout:{rollout}")
    # halted: the kiosks updating are still judged, no new command goes out
    report(engine, ids[3], "1.1.0", at)
    halted = run_step(engine, at + timedelta(minutes=1), send)
    assert halted.installed == [(rollout, ids[3])] and halted.sent == []
    with pytest.raises(Refusal) as refused, Session(engine) as s, s.begin():
        widen_rollout(s, rollout, Ring("all"), ALICE, at)
    assert refused.value.code == "rollout_halted"

    # resumed: the alert is cleared and the failures are counted from now on
    with Session(engine) as s, s.begin():
        resume_rollout(s, rollout, ALICE, at + timedelta(minutes=2))
    assert open_alerts(engine) == {"K001", "K002", "K003"}
    resumed = run_step(engine, at + timedelta(minutes=2), send)
    assert [d for _, d in resumed.sent] == ids[10:14]  # 10 in flight again
    answer(engine, send.to(ids[10]), "failed", at + timedelta(minutes=3), error="disk_full")
    with Session(engine) as s:
        assert rollout_status(s, rollout).state == "running"  # 1 of 4: fewer than 5 attempts

    with Session(engine) as s, s.begin():
        halt_rollout(s, rollout, "  the printer  driver\nlooks wrong ", ALICE, at)
    with Session(engine) as s, s.begin():
        view = cancel_rollout(s, rollout, ALICE, at + timedelta(minutes=4))
    assert view.state == "cancelled" and view.halted_reason == (
        "halted by alice: the printer driver looks wrong"
    )
    cancelled = {d.device_id: d for d in view.devices}
    assert [cancelled[d].state for d in ids[14:]] == ["skipped"] * 2
    assert cancelled[ids[14]].reason == "the rollout was cancelled by alice"
    assert cancelled[ids[12]].state == "sent"  # still watched
    assert f"rollout:{rollout}" not in open_alerts(engine)
    assert [a for a in audit(engine) if a[0] == "alice"][-4:] == [
        ("alice", "rollout.start", f"rollout:{rollout}"),
        ("alice", "rollout.resume", f"rollout:{rollout}"),
        ("alice", "rollout.halt", f"rollout:{rollout}"),
        ("alice", "rollout.cancel", f"rollout:{rollout}"),
    ]


def test_widening_adds_the_next_ring_and_one_rollout_runs_at_a_time(engine, tmp_path):
    store = tmp_path / "bundles"
    kept = keep_bundle(engine, store, make_bundle(tmp_path, "1.1.0"))
    other = keep_bundle(engine, store, make_bundle(tmp_path, "1.2.0"))
    ids = kiosks(engine, 60, stores=3)
    rollout = start(engine, kept.sha256[:10], "percent:10", in_flight=100)
    with Session(engine) as s:
        first = {d.device_id for d in rollout_status(s, rollout).devices}
    assert first == {d for d in ids if in_percent(d, 10)}
    send = FakeSend()
    run_step(engine, T0, send)
    for device_id in first:
        report(engine, device_id, "1.1.0", T0 + timedelta(minutes=1))
    assert run_step(engine, T0 + timedelta(minutes=1), send).finished == [rollout]

    with pytest.raises(Refusal) as nobody, Session(engine) as s, s.begin():
        widen_rollout(s, rollout, parse_ring("percent:5"), ALICE, T0)
    assert nobody.value.code == "empty_ring"  # a smaller ring adds nobody
    # another rollout started meanwhile: the finished one does not run again beside it
    between = start(engine, other.sha256, "device:K001")
    with pytest.raises(Refusal) as busy, Session(engine) as s, s.begin():
        widen_rollout(s, rollout, parse_ring("percent:50"), ALICE, T0)
    assert busy.value.code == "rollout_active"
    with Session(engine) as s, s.begin():
        cancel_rollout(s, between, ALICE, T0)
    with Session(engine) as s, s.begin():
        widened = widen_rollout(s, rollout, parse_ring("percent:50"), ALICE, T0)
    assert widened.state == "running" and widened.ring == "percent:50"
    now_held = {d.device_id: d for d in widened.devices}
    assert set(now_held) == {d for d in ids if in_percent(d, 50)} and first < set(now_held)
    assert all(now_held[d].state == "installed" for d in first)  # kept, not sent again
    run_step(engine, T0 + timedelta(minutes=2), send)
    assert sorted(send.devices()) == sorted(now_held)

    with pytest.raises(Refusal) as second, Session(engine) as s, s.begin():
        start_rollout(s, other.sha256, Ring("all"), ALICE, T0)
    assert second.value.code == "rollout_active" and f"rollout {rollout}" in str(second.value)
    with pytest.raises(NotFound), Session(engine) as s, s.begin():
        start_rollout(s, "f" * 12, Ring("all"), ALICE, T0)
    with pytest.raises(InvalidInput) as policy, Session(engine) as s, s.begin():
        start_rollout(s, other.sha256, Ring("all"), ALICE, T0, RolloutPolicy(in_flight=0))
    assert policy.value.code == "bad_policy"


def test_a_result_for_no_rollout_changes_nothing(engine):
    kiosks(engine, 1)
    result = CommandResult(transaction="t-1", device_id="K001", status="done", at=T0)
    with Session(engine) as s, s.begin():
        assert record_result(s, result, T0) is False


# -- several HQ workers at once -----------------------------------------------------------------


def test_two_workers_stepping_at_once_send_each_kiosk_its_command_once(postgres_url, tmp_path):
    engine = migrated_engine(postgres_url)
    try:
        kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
        ids = kiosks(engine, 24)
        start(engine, kept.sha256, "all", in_flight=8)
        send = FakeSend(delay_s=0.02)  # a slow broker keeps the first step's lock held
        lock = threading.Lock()
        reports: list[StepReport] = []

        def worker(barrier: threading.Barrier, now: datetime) -> None:
            with Session(engine) as s, s.begin():
                barrier.wait(10)
                done = step(s, now, send, SIGNER)
            with lock:
                reports.append(done)

        for round_ in range(3):
            barrier = threading.Barrier(2)
            now = T0 + timedelta(minutes=round_)
            workers = [threading.Thread(target=worker, args=(barrier, now)) for _ in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            # the kiosks sent this round come back on the new version
            for command in send.commands:
                report(engine, command.device_id, "1.1.0", now + timedelta(seconds=30))
        assert sorted(send.devices()) == ids  # 8 a round, none twice
        assert sum(len(r.sent) for r in reports) == 24
        assert sorted(len(r.sent) for r in reports) == [0, 0, 0, 8, 8, 8]  # one waited
    finally:
        engine.dispose()


def test_the_step_report_and_views_are_plain_data(engine, tmp_path):
    kept = keep_bundle(engine, tmp_path / "bundles", make_bundle(tmp_path, "1.1.0"))
    kiosks(engine, 1)
    rollout = start(engine, kept.sha256, "device:K001")
    run_step(engine, T0, FakeSend())
    with Session(engine) as s:
        view = rollout_status(s, rollout)
    from edge.console import plain

    shown = json.loads(json.dumps(plain(view)))
    assert shown["devices"][0]["device_id"] == "K001" and shown["policy"]["in_flight"] == 10
