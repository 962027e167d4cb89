"""Signed commands from HQ: verified, permitted, unexpired, run once per transaction id."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge import __version__
from edge.app import AppContext
from edge.domain.cards import CardState, parse_card_number
from edge.domain.errors import ConfigError, KioskError, Refusal
from edge.lifecycle.update import UPDATE_KEY_FILE, BundleOffer, receive_update
from edge.protocol import COMMAND_SIGNING_DOMAIN, Command, CommandResult
from edge.security.keys import load_public_key
from edge.security.signing import verify_bytes
from edge.services.points import expire_points
from edge.services.tx import transaction
from edge.services.verify import verify_ledger
from edge.storage.models import Card
from edge.storage.sync_models import InboundMessage

log = logging.getLogger(__name__)


def command_public_key(app: AppContext) -> Ed25519PublicKey | None:
    """HQ's command key from the configured PEM (relative to the data directory)."""
    path = Path(app.config.sync.command_public_key)
    if not path.is_absolute():
        path = app.data_dir / path
    try:
        return load_public_key(path)
    except ConfigError as exc:
        log.warning("no HQ command key: %s", exc.message)
        return None


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
        transaction already run; ``None`` when it is to be run."""
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
        with self.app.db.read() as session:
            seen = session.get(InboundMessage, _record_key(command))
            if seen is not None:
                stored = json.loads(seen.result)
                return self._result(
                    command, now, stored["status"], **stored["detail"], replayed=True
                )
        return None

    def execute(self, command: Command) -> tuple[str, dict[str, Any]]:
        """Runs a screened command: ``done``, ``refused`` (a rule said no: any
        :class:`~edge.domain.errors.Refusal`) or ``failed`` (any other :class:`KioskError`)."""
        try:
            return "done", self.actions[command.command](dict(command.args))
        except Refusal as exc:
            return "refused", {"error": exc.code, "reason": exc.message}
        except KioskError as exc:
            return "failed", {"error": exc.code, "message": exc.message}

    def record(
        self, command: Command, status: str, detail: dict[str, Any], now: datetime
    ) -> CommandResult:
        """Stores the outcome (a repeat of the transaction is answered from it) and audits it."""
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
        card_no = parse_card_number(str(args.get("card_no", "")))
        with transaction(self.app) as tx:
            card = tx.session.get(Card, card_no)
            if card is None:
                return {"card_no": card_no, "known": False}
            before = card.state
            if card.state == CardState.ACTIVE:
                card.state = CardState.BLOCKED
                card.state_changed_at = tx.now
                tx.audit("hq", "card.block", card_no, before=before)
                tx.emit("card.blocklist", {"add": [card_no], "reason": "hq"})
            return {"card_no": card_no, "known": True, "before": before, "state": card.state}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        """Fetch the bundle HQ offers, check it with HQ's update key and queue it for the
        installer (``member-kiosk-update.path``); see :func:`receive_update`."""
        sync = self.app.config.sync
        offer = BundleOffer.from_args(args, sync.update_max_bytes)
        try:
            update_key = load_public_key(self.app.data_dir / UPDATE_KEY_FILE)
        except ConfigError as exc:
            raise Refusal(f"no HQ update key: {exc.message}", code="no_update_key") from None
        queued = receive_update(
            offer,
            self.app.data_dir,
            update_key,
            running_version=__version__,
            timeout_s=sync.update_download_timeout_s,
            cancel=self.stopping,
        )
        log.info("update %s queued as %s", queued.version, queued.path.name)
        return {"queued": True, "version": queued.version, "bundle": queued.path.name}


def _record_key(command: Command) -> str:
    return f"command:{command.transaction}"
