"""The application context: configuration, database, keys and clock, opened once per process."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import text

import edge.storage.sync_models  # noqa: F401  (complete metadata for the migrations)
from edge.config import KioskConfig, MemberDay, TierConfig, default_data_dir, load_config
from edge.domain.clock import Clock, system_clock
from edge.domain.errors import ConfigError
from edge.domain.ids import IdFactory
from edge.domain.offline import OfflineLimit
from edge.domain.points import MemberDayRule
from edge.domain.tiers import Tier
from edge.protocol import PointsPolicy, Rules
from edge.security.keys import KeyStore, load_public_key
from edge.security.personal import PhoneVault
from edge.storage import migrate
from edge.storage.db import Database, make_engine, sqlite_url
from edge.storage.nonces import NONCE_FILE, UsedNonces

log = logging.getLogger(__name__)


@dataclass
class AppContext:
    """Everything a service needs; passed in explicitly, never a global."""

    config: KioskConfig
    config_path: Path
    data_dir: Path
    db: Database
    keys: KeyStore
    clock: Clock = system_clock
    ids: IdFactory = field(default_factory=IdFactory)
    used_codes: UsedNonces = field(init=False, repr=False)
    """Nonces of the member codes already used (their own file beside the ledger)."""
    rules_version: int = field(default=0, init=False)
    """The version of HQ's rules in force in this process (0: the device's own)."""
    rules_scheduled: Rules | None = field(default=None, init=False, repr=False)
    """HQ's rules stored here and waiting for their ``effective_from``."""

    def __post_init__(self) -> None:
        self.used_codes = UsedNonces(
            self.data_dir / NONCE_FILE, self.config.database.busy_timeout_ms
        )

    @classmethod
    def open(
        cls,
        data_dir: Path | None = None,
        config_path: Path | None = None,
        *,
        config: KioskConfig | None = None,
        clock: Clock | None = None,
        upgrade_schema: bool = True,
    ) -> AppContext:
        """Opens the data directory (created if missing) and brings the schema up to date."""
        data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
        if config is None:
            config, config_path = load_config(config_path, data_dir)
        elif config_path is None:
            config_path = data_dir / "config.toml"
        url = config.database.url or sqlite_url(data_dir / "kiosk.db")
        db = Database(make_engine(url, config.database.busy_timeout_ms))
        keys_dir = Path(config.security.keys_dir) if config.security.keys_dir else data_dir / "keys"
        credentials = os.environ.get("CREDENTIALS_DIRECTORY")
        keys = KeyStore(keys_dir, Path(credentials) if credentials else None)
        app = cls(config, config_path, data_dir, db, keys, clock or system_clock)
        if upgrade_schema and migrate.current_revision(db.engine) != migrate.head_revision():
            migrate.upgrade(db.engine, vault=lambda: app.vault)
        return app

    @cached_property
    def vault(self) -> PhoneVault:
        return PhoneVault(self.keys.data_key, self.keys.lookup_key)

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.config.device.timezone)

    # The rules HQ may replace (points, offline, member days, tiers) are read from ``config``
    # on every use, never cached here: :meth:`put_rules_in_force` swaps the whole
    # configuration, and nothing derived from the one before can outlive it.

    @property
    def ladder(self) -> list[Tier]:
        return [
            Tier(t.code, t.name_zh, t.name_en, t.threshold, t.multiplier_pct, t.member_price_pct)
            for t in self.config.tiers.levels
        ]

    @property
    def member_days(self) -> list[MemberDayRule]:
        return [
            MemberDayRule(d.day_of_month, d.weekday, d.multiplier_pct)
            for d in self.config.points.member_days
        ]

    @property
    def offline_limit(self) -> OfflineLimit:
        o = self.config.offline
        return OfflineLimit(
            o.max_points_per_redemption,
            o.max_points_per_member,
            o.max_points_per_device,
            timedelta(hours=o.max_offline_hours),
        )

    def put_rules_in_force(self, rules: Rules) -> None:
        """Puts HQ's rules in force in this process, in one assignment of a new configuration:
        points and offline caps always, the member days and the tier ladder when the rules
        carry them (else the device's own stay)."""
        config = self.config
        points = config.points.model_copy(
            update=rules.points.model_dump(include=set(PointsPolicy.model_fields))
        )
        if rules.member_days is not None:
            days = [MemberDay.model_validate(d.model_dump()) for d in rules.member_days]
            points = points.model_copy(update={"member_days": days})
        offline = config.offline.model_copy(update=rules.offline.model_dump(exclude={"v"}))
        tiers = config.tiers
        if rules.tiers is not None:
            levels = [TierConfig.model_validate(t.model_dump()) for t in rules.tiers]
            tiers = tiers.model_copy(update={"levels": levels})
        self.config = config.model_copy(
            update={"points": points, "offline": offline, "tiers": tiers}
        )
        self.rules_version = rules.version
        if self.rules_scheduled is not None and self.rules_scheduled.version <= rules.version:
            self.rules_scheduled = None

    def schedule_rules(self, rules: Rules) -> None:
        """Puts ``rules`` in force when they take effect: at once if they already have, else
        at the first transaction from their ``effective_from`` (:meth:`rules_due`)."""
        if rules.in_force_at(self.clock()):
            self.put_rules_in_force(rules)
        else:
            self.rules_scheduled = rules

    def rules_due(self, now: datetime) -> None:
        """Puts the scheduled rules in force once ``now`` reaches their effective time; every
        transaction calls it first, so a lane purchase from that moment earns by them."""
        scheduled = self.rules_scheduled
        if scheduled is not None and scheduled.in_force_at(now):
            self.put_rules_in_force(scheduled)

    @property
    def store_id(self) -> str:
        return self.config.device.store_id

    @property
    def device_id(self) -> str:
        return self.config.device.device_id

    def command_public_key(self) -> Ed25519PublicKey | None:
        """HQ's command key from the configured PEM (relative to the data directory): it
        signs HQ's commands, rules, staff lists, campaigns and coupons. None without one."""
        path = Path(self.config.sync.command_public_key)
        if not path.is_absolute():
            path = self.data_dir / path
        try:
            return load_public_key(path)
        except ConfigError as exc:
            log.warning("no HQ command key: %s", exc.message)
            return None

    def check_database(self) -> tuple[bool, str]:
        """Whether the ledger database answers and its schema is current (for ``kiosk doctor``)."""
        try:
            with self.db.read() as session:
                session.execute(text("SELECT 1"))
                if self.db.engine.dialect.name == "sqlite":
                    result = session.execute(text("PRAGMA quick_check")).scalar()
                    if result != "ok":
                        return False, f"integrity check failed: {result}"
            current = migrate.current_revision(self.db.engine)
        except Exception as exc:  # any driver error means "not usable"
            return False, f"database unusable: {exc}"
        head = migrate.head_revision()
        if current != head:
            return False, f"schema at {current}, expected {head} (run: kiosk db upgrade)"
        return True, f"schema {current}, {self.db.engine.url.database}"

    def close(self) -> None:
        self.used_codes.close()
        self.db.close()
