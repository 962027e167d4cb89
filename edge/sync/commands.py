"""Signed commands from HQ: verified, permitted, unexpired, run once per transaction id.

A command that runs on the agent's worker thread (``update``) is taken in one transaction
that stores it whole and signed (:class:`~edge.storage.command_models.RunningCommand`)
before its message is acknowledged; it stays there until its recorded result is handed to
the link. One that a crash, a power cut or a stop left there is found when the agent starts
(:meth:`CommandRunner.interrupted`): run again from the start if it is still good, answered
``expired`` or ``failed`` (``error`` ``interrupted``) if not, or answered from its record if
the result was recorded but not published.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from edge import __version__
from edge.app import AppContext
from edge.domain.errors import ConfigError, DiskFull, KioskError, Refusal
from edge.files import file_sha256
from edge.lifecycle.update import (
    DOWNLOADS,
    INBOX,
    UPDATE_KEY_FILE,
    UPDATES_DIR,
    BundleOffer,
    UpdateFailed,
    receive_update,
)
from edge.protocol import COMMAND_SIGNING_DOMAIN, Command, CommandResult, ProtocolError, decode
from edge.security.keys import load_public_key
from edge.security.signing import verify_bytes
from edge.services.cards import block_card
from edge.services.points import expire_points
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from edge.storage.command_models import RunningCommand
from edge.storage.space import out_of_space
from edge.storage.sync_models import InboundMessage

log = logging.getLogger(__name__)

# A command that was started this many times without a result is answered, not started again
# (something in it brings the agent down each time).
MAX_STARTS = 3


@dataclass(frozen=True)
class Taken:
    """A command taken to run on the worker thread, and where its result goes."""

    command: Command
    reply_topic: str
    correlation: bytes | None


def command_public_key(app: AppContext) -> Ed25519PublicKey | None:
    """HQ's command key from the configured PEM (relative to the data directory)."""
    return app.command_public_key()


class CommandRunner:
    """Checks and runs HQ's commands; ``actions`` are the commands this build knows."""

    def __init__(
        self,
        app: AppContext,
        public_key: Ed25519PublicKey | None,
        on_sync_now: Callable[[], None] = lambda: None,
    ) -> None:
        self.app = app
        self.public_key = public_key
        self.actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": lambda args: {"pong": True},
            "sync_now": self._sync_now,
            "verify_ledger": self._verify,
            "expire_points": self._expire,
            "block_card": self._block_card,
            "update": self._update,
        }
        self.background = frozenset({"update"})
        # how a background command a stop interrupted runs again (from the start)
        self.resume: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "update": self._resume_update,
        }
        self.stopping = threading.Event()
        self._on_sync_now = on_sync_now

    def handle(self, command: Command, now: datetime) -> CommandResult:
        """Checks, runs and records ``command`` on the caller's thread."""
        refused = self.screen(command, now)
        if refused is not None:
            return refused
        status, detail = self.execute(command)
        return self.record(command, status, detail, now)

    def runs_in_background(self, command: Command) -> bool:
        """Whether ``command`` waits on the network (``update``): the agent runs
        :meth:`execute` for it on a worker thread and :meth:`record` when it is done."""
        return command.command in self.background

    def screen(self, command: Command, now: datetime) -> CommandResult | None:
        """The answer without running ``command``: a refusal, or the recorded result of a
        transaction already run; ``None`` when it is to be run (or is running)."""
        refused = self._check(command, now)
        if refused is not None:
            return refused
        with self.app.db.read() as session:
            seen = session.get(InboundMessage, _record_key(command))
            if seen is not None:
                stored = json.loads(seen.result)
                return self._result(
                    command, now, stored["status"], **stored["detail"], replayed=True
                )
        return None

    def _check(self, command: Command, now: datetime) -> CommandResult | None:
        """A refusal of ``command`` by its signature, device, expiry or permission."""
        if self.public_key is None or not verify_bytes(
            self.public_key,
            COMMAND_SIGNING_DOMAIN,
            command.signed_bytes(),
            command.signature_bytes(),
        ):
            log.warning("command %s refused: bad signature", command.transaction)
            return self._result(command, now, "bad_signature")
        if command.device_id != self.app.device_id:
            return self._result(command, now, "refused", reason="addressed to another device")
        if command.expires_at <= now:
            return self._result(command, now, "expired", expired_at=command.expires_at.isoformat())
        permitted = self.app.config.sync.permitted_commands
        if command.command not in permitted or command.command not in self.actions:
            return self._result(
                command, now, "refused", reason=f"command {command.command} not permitted here"
            )
        return None

    def take(self, command: Command, reply_topic: str, correlation: bytes | None) -> bool:
        """Stores a screened background command as running, whole and signed, before its
        message is acknowledged; ``False`` when its transaction is running or recorded
        already (nothing stored: the one run answers)."""
        with transaction(self.app) as tx:
            if tx.session.get(InboundMessage, _record_key(command)) is not None:
                return False
            if tx.session.get(RunningCommand, command.transaction) is not None:
                return False
            tx.session.add(
                RunningCommand(
                    transaction=command.transaction,
                    command=command.command,
                    payload=command.to_bytes().decode(),
                    reply_topic=reply_topic,
                    correlation=base64.b64encode(correlation or b"").decode(),
                    starts=1,
                    accepted_at=tx.now,
                    started_at=tx.now,
                )
            )
            tx.audit("hq", f"command.{command.command}", command.transaction, status="running")
        return True

    def interrupted(self, now: datetime) -> tuple[list[Taken], list[tuple[Taken, CommandResult]]]:
        """The commands taken and not answered when the agent last stopped, for its start:
        those to run again from the start (their ``starts`` counted), and those to answer
        (recorded): with the result recorded before the stop, ``expired`` when past their
        expiry, ``failed`` (``error`` ``interrupted``) when they cannot run again (another
        command than those in :attr:`resume`, or one started ``MAX_STARTS`` times), or what
        :meth:`screen` says now (HQ's key or the permitted commands changed). What interrupted
        downloads left is removed first.

        Call it before any command is handed to the worker thread."""
        clear_downloads(self.app.data_dir)
        again: list[Taken] = []
        answered: list[tuple[Taken, CommandResult]] = []
        with self.app.db.read() as session:
            rows = session.scalars(
                select(RunningCommand).order_by(
                    RunningCommand.accepted_at, RunningCommand.transaction
                )
            ).all()
            found = [(r.transaction, r.payload, r.reply_topic, r.correlation) for r in rows]
        for transaction_id, payload, reply_topic, correlation in found:
            try:
                command = decode(Command, payload.encode())
            except ProtocolError as exc:  # not what take() wrote: nothing to run or answer
                log.error("taken command %s unreadable, dropped: %s", transaction_id, exc)
                self.answered(transaction_id)
                continue
            taken = Taken(command, reply_topic, base64.b64decode(correlation) or None)
            result = self._recorded(command, now)
            if result is None:
                outcome = self._interrupted_outcome(command, now)
                if outcome is None:
                    log.warning("command %s was interrupted: running it again", transaction_id)
                    again.append(taken)
                    continue
                log.warning("command %s was interrupted: %s", transaction_id, outcome[0])
                result = self.record(command, *outcome, now)
            answered.append((taken, result))
        return again, answered

    def _recorded(self, command: Command, now: datetime) -> CommandResult | None:
        with self.app.db.read() as session:
            seen = session.get(InboundMessage, _record_key(command))
            if seen is None:
                return None
            stored = json.loads(seen.result)
        return self._result(command, now, stored["status"], **stored["detail"])

    def _interrupted_outcome(
        self, command: Command, now: datetime
    ) -> tuple[str, dict[str, Any]] | None:
        """The answer to an interrupted command; ``None`` when it runs again (counted)."""
        refused = self._check(command, now)
        if refused is not None and refused.status == "expired":
            reason = "the agent restarted after the command expired: send a new command"
            return "expired", {**refused.detail, "reason": reason}
        if refused is not None:
            return refused.status, dict(refused.detail)
        message = "the agent stopped while the command ran: send a new command"
        if command.command not in self.resume:
            return "failed", {"error": "interrupted", "message": message}
        with transaction(self.app) as tx:
            row = tx.session.get(RunningCommand, command.transaction)
            if row is None:
                return "failed", {"error": "interrupted", "message": message}
            if row.starts >= MAX_STARTS:
                message = f"the agent stopped each of the {row.starts} times the command ran"
                return "failed", {"error": "interrupted", "message": f"{message}: send a new one"}
            row.starts += 1
            row.started_at = tx.now
            tx.audit(
                "hq", f"command.{command.command}", command.transaction,
                status="running", starts=row.starts,
            )  # fmt: skip
        return None

    def answered(self, transaction_id: str) -> None:
        """Forgets a taken command once its recorded result is handed to the link."""
        with transaction(self.app) as tx:
            row = tx.session.get(RunningCommand, transaction_id)
            if row is not None:
                tx.session.delete(row)

    def execute(self, command: Command, resumed: bool = False) -> tuple[str, dict[str, Any]]:
        """Runs a screened command: ``done``, ``refused`` (a rule said no: any
        :class:`~edge.domain.errors.Refusal`) or ``failed`` (any other :class:`KioskError`).
        ``resumed``: it runs again after a stop interrupted it (see :attr:`resume`)."""
        action = self.resume.get(command.command) if resumed else None
        try:
            return "done", (action or self.actions[command.command])(dict(command.args))
        except Refusal as exc:
            return "refused", {"error": exc.code, "reason": exc.message}
        except KioskError as exc:
            return "failed", {"error": exc.code, "message": exc.message}

    def record(
        self, command: Command, status: str, detail: dict[str, Any], now: datetime
    ) -> CommandResult:
        """Stores the outcome (a repeat of the transaction is answered from it) and audits it.
        A taken command stays taken until :meth:`answered`: a stop before its result reached
        the link means the recorded result is published at the next start."""
        key = _record_key(command)
        with transaction(self.app) as tx:
            if tx.session.get(InboundMessage, key) is None:
                tx.session.add(
                    InboundMessage(
                        message_id=key,
                        kind="command",
                        result=json.dumps({"status": status, "detail": detail}, default=str),
                        received_at=tx.now,
                    )
                )
                tx.audit("hq", f"command.{command.command}", command.transaction, status=status)
        return self._result(command, now, status, **detail)

    def _result(self, command: Command, now: datetime, status: str, **detail: Any) -> CommandResult:
        return CommandResult(
            transaction=command.transaction,
            device_id=self.app.device_id,
            status=status,
            detail=detail,
            at=now,
        )

    def _sync_now(self, args: dict[str, Any]) -> dict[str, Any]:
        self._on_sync_now()
        return {"resync": True}

    def _verify(self, args: dict[str, Any]) -> dict[str, Any]:
        report = verify_ledger(self.app)
        return {"ok": report.ok, "members": report.members, "problems": report.problems[:20]}

    def _expire(self, args: dict[str, Any]) -> dict[str, Any]:
        run = expire_points(self.app)
        return {"lots": run.lots, "points": run.points, "members": run.members}

    def _block_card(self, args: dict[str, Any]) -> dict[str, Any]:
        blocked = block_card(self.app, str(args.get("card_no", "")), actor="hq")
        if not blocked.known:
            return {"card_no": blocked.card_no, "known": False}
        return {
            "card_no": blocked.card_no,
            "known": True,
            "before": blocked.before,
            "state": blocked.state,
        }

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        """Fetch the bundle HQ offers, check it with HQ's update key and queue it for the
        installer (``member-kiosk-update.path``); see :func:`receive_update`."""
        sync = self.app.config.sync
        offer = BundleOffer.from_args(args, sync.update_max_bytes)
        try:
            update_key = load_public_key(self.app.data_dir / UPDATE_KEY_FILE)
        except ConfigError as exc:
            raise Refusal(f"no HQ update key: {exc.message}", code="no_update_key") from None
        try:
            queued = receive_update(
                offer,
                self.app.data_dir,
                update_key,
                running_version=__version__,
                timeout_s=sync.update_download_timeout_s,
                cancel=self.stopping,
            )
        except (UpdateFailed, OSError) as exc:  # the partial download is removed already
            where = self.app.data_dir / UPDATES_DIR
            if any(out_of_space(e, where) for e in _causes(exc)):
                not_done = f"the update to {offer.version} was not downloaded"
                raise DiskFull(not_done, where=str(where)) from None
            raise
        log.info("update %s queued as %s", queued.version, queued.path.name)
        return {"queued": True, "version": queued.version, "bundle": queued.path.name}

    def _resume_update(self, args: dict[str, Any]) -> dict[str, Any]:
        """An interrupted ``update`` from the start, unless the interruption came after the
        bundle was queued: it is still in the inbox (checked by its SHA-256), or the
        installer has put its version in place already."""
        offer = BundleOffer.from_args(args, self.app.config.sync.update_max_bytes)
        inbox = self.app.data_dir / UPDATES_DIR / INBOX
        if inbox.is_dir():
            for path in sorted(inbox.glob(f"*-member-kiosk-{offer.version}.tar")):
                try:
                    same = path.stat().st_size == offer.size and file_sha256(path) == offer.sha256
                except OSError:  # the installer took it meanwhile
                    continue
                if same:
                    log.info("update %s was queued before the stop: %s", offer.version, path.name)
                    return {"queued": True, "version": offer.version, "bundle": path.name}
        if offer.version == __version__:
            return {"queued": False, "version": offer.version, "installed": True}
        return self._update(args)


def clear_downloads(data_dir: Path) -> None:
    """Removes what interrupted ``update`` downloads left in ``updates/downloads/`` (only the
    agent's worker writes there: call it when no download runs)."""
    downloads = data_dir / UPDATES_DIR / DOWNLOADS
    if not downloads.is_dir():
        return
    for path in downloads.iterdir():
        log.info("removing an interrupted download: %s", path.name)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _record_key(command: Command) -> str:
    return f"command:{command.transaction}"
