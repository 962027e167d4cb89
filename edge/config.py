"""The appliance's one configuration file (TOML), validated; unknown keys are refused by name.

Where the file is: ``--config`` or ``KIOSK_CONFIG``, else ``config.toml`` in the data directory.
Where the data directory is: ``--data-dir`` or ``KIOSK_DATA_DIR``, else ``./var`` in a source
checkout and ``/var/lib/member-kiosk`` when installed. A missing file means all defaults.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.config import HardwareConfig
from edge.domain.errors import ConfigError, describe_invalid
from edge.domain.tiers import DEFAULT_BASIS, DEFAULT_LADDER, DEFAULT_PERIOD_MONTHS
from edge.protocol import (
    MemberDayPolicy,
    OfflinePolicy,
    PointsPolicy,
    TierPolicy,
    check_ladder,
)

INSTALLED_DATA_DIR = Path("/var/lib/member-kiosk")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(_Section):
    """Who this appliance is and which card numbers it may issue."""

    store_id: str = Field("S001", min_length=1, max_length=32, title="Store id")
    device_id: str = Field("K001", min_length=1, max_length=32, title="Device id")
    timezone: str = Field(
        "Asia/Shanghai", title="Store timezone", description="days, member days and reports"
    )
    card_range_start: int = Field(
        1, ge=0, title="First card serial", description="start of the range this device owns"
    )
    card_range_end: int = Field(
        99_999, ge=0, title="Last card serial", description="end of the range (inclusive)"
    )

    @model_validator(mode="after")
    def _range_is_ordered(self) -> Self:
        if self.card_range_end < self.card_range_start:
            raise ValueError("card_range_end must not be below card_range_start")
        if self.card_range_end >= 10**10:
            raise ValueError("card serials have at most 10 digits")
        return self


class MemberDay(MemberDayPolicy, _Section):
    """A day on which accruals are multiplied (e.g. the 8th of every month, or Wednesdays):
    the fields of :class:`~edge.protocol.MemberDayPolicy`, which HQ's rules carry too."""


POINTS_DEFAULTS: dict[str, int] = {
    "points_per_yuan": 1,
    "expiry_months": 12,
    "pending_days": 0,
    "checkin_points": 5,
    "birthday_bonus_points": 100,
    "referral_bonus_points": 50,
    "expired_voucher_refund": False,
}
"""The appliance's own points rules, for whatever the ``[points]`` section leaves out."""


class PointsConfig(PointsPolicy, _Section):
    """How points are earned, held and expire: the fields and bounds HQ's rules have too
    (:class:`~edge.protocol.PointsPolicy`), which replace them, and the member days, which
    HQ's rules replace when they carry some."""

    member_days: list[MemberDay] = Field(default_factory=list, title="Member days")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return {**POINTS_DEFAULTS, **data} if isinstance(data, dict) else data


class TierConfig(TierPolicy, _Section):
    """One membership tier: the fields of :class:`~edge.protocol.TierPolicy`, which HQ's rules
    carry too (and then replace the ladder)."""


def _default_tiers() -> list[TierConfig]:
    return [
        TierConfig(
            code=t.code,
            name_zh=t.name_zh,
            name_en=t.name_en,
            threshold=t.threshold,
            multiplier_pct=t.multiplier_pct,
        )
        for t in DEFAULT_LADDER
    ]


class TiersConfig(_Section):
    """Tier ladder: upgrade at once, downgrade only at the end of the member's tier period."""

    basis: Literal["spend", "points"] = Field(DEFAULT_BASIS, title="What thresholds measure")
    period_months: int = Field(DEFAULT_PERIOD_MONTHS, ge=1, le=36, title="Rolling period in months")
    levels: list[TierConfig] = Field(default_factory=_default_tiers, title="Tiers, lowest first")

    @model_validator(mode="after")
    def _ladder(self) -> Self:
        check_ladder(list(self.levels))
        return self


OFFLINE_DEFAULTS: dict[str, int] = {
    "offline_after_s": 300,
    "max_points_per_redemption": 2_000,
    "max_points_per_member": 5_000,
    "max_points_per_device": 50_000,
    "max_offline_hours": 24,
    "max_hq_coupons": 20,
}
"""The appliance's own offline caps, for whatever the ``[offline]`` section leaves out."""


class OfflineConfig(OfflinePolicy, _Section):
    """Caps that bound double-spend risk while HQ is unreachable: the fields and bounds HQ's
    rules have too (:class:`~edge.protocol.OfflinePolicy`), which replace them."""

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        return {**OFFLINE_DEFAULTS, **data} if isinstance(data, dict) else data


class GiftsConfig(_Section):
    """Gift vouchers: how long one can be collected at the desk."""

    voucher_valid_days: int = Field(
        30,
        ge=1,
        le=365,
        title="Voucher validity (days)",
        description="printed on the voucher; kept with each redemption",
    )


class SecurityConfig(_Section):
    """Keys, codes and staff lockout."""

    keys_dir: str = Field("", title="Key directory", description="default: <data dir>/keys")
    member_code_public_key: str = Field(
        "", title="HQ's member-code public key (PEM path)", description="default: dev key"
    )
    member_code_signing_key: str = Field(
        "", title="Member-code signing key (PEM path)", description="HQ's; dev: generated"
    )
    contact_public_key: str = Field(
        "",
        title="HQ's contact public key (PEM path)",
        description="seals the phone numbers of members who agree to messages; default: the "
        "one the enrolment bundle installed (keys/hq-contact.pub)",
    )
    member_code_ttl_s: int = Field(60, ge=10, le=600, title="Member code lifetime")
    member_code_skew_s: int = Field(90, ge=0, le=600, title="Clock skew tolerated")
    pin_max_attempts: int = Field(5, ge=1, le=20, title="Wrong PINs before lockout")
    pin_lockout_minutes: int = Field(30, ge=1, le=1440, title="Lockout length")


class PrivacyConfig(_Section):
    """The privacy terms a member consents to at registration."""

    consent_version: str = Field("2026-01", min_length=1, title="Version of the terms in force")
    message_terms_version: str = Field(
        "2026-12",
        min_length=1,
        max_length=32,
        title="Version of the terms for messages (SMS reminders) in force",
        description="recorded with a member's separate consent to messages",
    )


class DeskConfig(_Section):
    """The member desk's corrections."""

    adjust_approval_above: int = Field(
        500,
        ge=0,
        le=1_000_000,
        title="Adjustments that need a supervisor",
        description="points; a larger credit or debit needs a second staff member's approval",
    )


DEFAULT_COMMANDS = (
    "ping",
    "sync_now",
    "verify_ledger",
    "expire_points",
    "block_card",
    "update",
)


class SyncConfig(_Section):
    """Connection to the store broker and HQ. Disabled: a standalone member center.

    Relative TLS and key paths are taken from the data directory, so a provisioned device
    keeps everything it needs in one place (``tls/ca.crt``, ``tls/device.crt`` ...).
    """

    enabled: bool = Field(False, title="Sync with HQ")
    broker_host: str = Field("127.0.0.1", title="Broker host")
    broker_port: int = Field(1883, ge=1, le=65535, title="Broker port")
    tls: bool = Field(True, title="TLS with a client certificate", description="off: dev only")
    ca_file: str = Field("tls/ca.crt", title="CA certificate (PEM) the broker's is checked with")
    cert_file: str = Field("tls/device.crt", title="This device's certificate (CN = device id)")
    key_file: str = Field("tls/device.key", title="This device's private key (PEM)")
    topic_prefix: str = Field(
        "mck/v1", pattern=r"^[a-z0-9_-]+(/[a-z0-9_-]+)*$", title="Topic prefix"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, title="MQTT keepalive")
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        title="Session expiry",
        description="how long the broker keeps this device's queue while it is away",
    )
    reconnect_min_s: float = Field(0.5, gt=0, le=60, title="First reconnect delay")
    reconnect_max_s: float = Field(30.0, gt=0, le=3600, title="Longest reconnect delay")
    batch_max_events: int = Field(500, ge=1, le=1000, title="Events per published batch")
    inflight_batches: int = Field(16, ge=1, le=64, title="Batches awaiting HQ's ack at once")
    ack_timeout_s: float = Field(10.0, gt=0, le=600, title="Resend a batch unacked this long")
    retry_max_s: float = Field(60.0, gt=0, le=3600, title="Longest resend backoff")
    telemetry_interval_s: float = Field(30.0, ge=1, le=3600, title="Telemetry period")
    replica_poll_s: float = Field(
        60.0, ge=1, le=3600, title="Ask HQ for missed replica events this often when idle"
    )
    fetch_timeout_s: float = Field(
        2.0,
        gt=0,
        le=30,
        title="Wait this long for HQ when a member of another store is met",
        description="then the kiosk answers as offline",
    )
    hold_months: int = Field(
        12,
        ge=1,
        le=120,
        title="Trust what is held of a member of another store this many months after last "
        "seeing them here",
        description="then fetch them from HQ again when met; never more than HQ's hold_months",
    )
    command_public_key: str = Field(
        "keys/hq-command.pub", title="HQ's command public key (PEM)", description="Ed25519"
    )
    permitted_commands: tuple[str, ...] = Field(
        DEFAULT_COMMANDS, title="Commands HQ may run here", description="others are refused"
    )
    update_max_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=1024 * 1024,
        title="Largest update bundle",
        description="HQ's update command offering more is refused",
    )
    update_download_timeout_s: float = Field(
        900.0, gt=0, le=24 * 3600, title="Longest update download"
    )
    lane_purchases: bool = Field(
        True, title="Accrue lane purchases", description="one kiosk per store does"
    )

    @model_validator(mode="after")
    def _delays(self) -> Self:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must not be below reconnect_min_s")
        return self


class DatabaseConfig(_Section):
    """Where the ledger lives."""

    url: str = Field("", title="SQLAlchemy URL", description="default: SQLite in the data dir")
    busy_timeout_ms: int = Field(30_000, ge=100, title="Wait for a write lock this long")


class KioskUiConfig(_Section):
    """The touchscreen: idle timeouts, language, screen and the one touch input provider."""

    idle_warn_s: float = Field(
        30.0, gt=0, le=600, title="Idle warning", description="seconds without a touch"
    )
    idle_clear_s: float = Field(
        45.0, gt=0, le=900, title="Idle clear", description="identified screens clear after it"
    )
    language: Literal["zh_CN", "en"] = Field("zh_CN", title="Default language")
    fullscreen: bool = Field(True, title="Full screen", description="off for a desktop window")
    width: int = Field(1280, ge=480, le=3840, title="Window width when not full screen")
    height: int = Field(800, ge=480, le=3840, title="Window height when not full screen")
    rotation: Literal[0, 90, 180, 270] = Field(
        0,
        title="Screen rotation",
        description="degrees: a landscape monitor mounted on its side shows portrait with 90",
    )
    panel_width_mm: float = Field(
        0,
        ge=0,
        le=3000,
        title="Visible width of the panel in mm, as mounted",
        description="0: known from the resolution (docs/hardware.md), else 96 dpi",
    )
    panel_height_mm: float = Field(0, ge=0, le=3000, title="Visible height of the panel in mm")
    touch_provider: Literal["mouse", "mtdev", "hidinput", "probesysfs"] = Field(
        "hidinput",
        title="Touch input provider",
        description="exactly one provider per device: two double every touch",
    )
    touch_device: str = Field(
        "",
        title="Touch device",
        description="event device for mtdev/hidinput, e.g. /dev/input/event0",
    )
    touch_rotation: Literal[0, 90, 180, 270] = Field(
        0,
        title="Touch rotation",
        description="degrees, as the touch panel is mounted (mtdev and hidinput)",
    )
    touch_invert_x: bool = Field(False, title="Touch panel's x axis reversed")
    touch_invert_y: bool = Field(False, title="Touch panel's y axis reversed")
    large_text: bool = Field(False, title="Start in large-text, high-contrast mode")
    technician_gesture_s: float = Field(
        3.0, gt=0, le=30, title="Technician gesture", description="hold the logo this long"
    )

    @model_validator(mode="after")
    def _clear_after_warning(self) -> Self:
        if self.idle_clear_s <= self.idle_warn_s:
            raise ValueError("idle_clear_s must be later than idle_warn_s")
        if (self.panel_width_mm > 0) != (self.panel_height_mm > 0):
            raise ValueError("give both panel_width_mm and panel_height_mm, or neither")
        return self


class KioskConfig(_Section):
    """The whole configuration file."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)
    points: PointsConfig = Field(default_factory=lambda: PointsConfig.model_validate({}))
    tiers: TiersConfig = Field(default_factory=TiersConfig)
    offline: OfflineConfig = Field(default_factory=lambda: OfflineConfig.model_validate({}))
    gifts: GiftsConfig = Field(default_factory=GiftsConfig, title="Gift vouchers")
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    desk: DeskConfig = Field(default_factory=DeskConfig, title="Member desk")
    sync: SyncConfig = Field(default_factory=SyncConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    ui: KioskUiConfig = Field(default_factory=KioskUiConfig, title="Touchscreen")


def default_data_dir(environ: dict[str, str] | None = None) -> Path:
    """``KIOSK_DATA_DIR``, else ``./var`` in a source checkout, else the installed location."""
    env = os.environ if environ is None else environ
    if env.get("KIOSK_DATA_DIR"):
        return Path(env["KIOSK_DATA_DIR"])
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / ".git").exists():
        return Path.cwd() / "var"
    return INSTALLED_DATA_DIR


def parse_config(text: str, source: str = "<config>") -> KioskConfig:
    """Parse and validate TOML text; raises :class:`ConfigError` naming the bad key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return KioskConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_invalid(exc.errors())}") from None


def load_config(path: Path | None, data_dir: Path) -> tuple[KioskConfig, Path]:
    """Load the config file (explicit path, ``KIOSK_CONFIG`` or the data dir's config.toml)."""
    explicit = path or (
        Path(os.environ["KIOSK_CONFIG"]) if os.environ.get("KIOSK_CONFIG") else None
    )
    chosen = explicit or data_dir / "config.toml"
    if not chosen.exists():
        if explicit is not None:
            raise ConfigError(f"config file not found: {chosen}")
        return KioskConfig(), chosen
    try:
        text = chosen.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {chosen}: {exc}") from None
    return parse_config(text, str(chosen)), chosen
