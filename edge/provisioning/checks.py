"""Before a device is declared in service: network, broker login with its certificate, and
every peripheral; the report is for the technician, in Chinese and English.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.config import KioskConfig


@dataclass(frozen=True)
class CheckLine:
    name_zh: str
    name_en: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class ProvisionReport:
    lines: list[CheckLine]

    @property
    def in_service(self) -> bool:
        return all(line.ok for line in self.lines)

    def render(self) -> str:
        out = []
        for line in self.lines:
            mark = "通过 OK  " if line.ok else "失败 FAIL"
            out.append(f"{mark}  {line.name_zh} {line.name_en}: {line.detail}")
        out.append(
            "结果：设备可以投入使用 / Result: device in service"
            if self.in_service
            else "结果：请先排除上述故障 / Result: fix the failures above first"
        )
        return "\n".join(out)


def _path(data_dir: Path, name: str) -> str:
    path = Path(name)
    return str(path if path.is_absolute() else data_dir / path)


def check_connectivity(config: KioskConfig, timeout: float = 5.0) -> CheckLine:
    host, port = config.sync.broker_host, config.sync.broker_port
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return CheckLine("网络", "network", False, f"{host}:{port} unreachable ({exc})")
    ms = (time.monotonic() - start) * 1000
    return CheckLine("网络", "network", True, f"{host}:{port} reachable in {ms:.0f} ms")


def check_broker_login(config: KioskConfig, data_dir: Path, timeout: float = 10.0) -> CheckLine:
    """Log in to the broker with the device's certificate and wait for its answer."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    sync = config.sync
    result: dict[str, str] = {}
    done = threading.Event()

    def on_connect(
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object = None,
    ) -> None:
        result["reason"] = str(reason)
        result["ok"] = "1" if not getattr(reason, "is_failure", False) else ""
        done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{config.device.device_id}-provision-check",
        protocol=mqtt.MQTTv5,
    )
    client.on_connect = on_connect
    try:
        if sync.tls:
            client.tls_set(
                ca_certs=_path(data_dir, sync.ca_file),
                certfile=_path(data_dir, sync.cert_file),
                keyfile=_path(data_dir, sync.key_file),
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.connect(sync.broker_host, sync.broker_port, keepalive=30)
    except (OSError, ssl.SSLError, ValueError) as exc:
        return CheckLine("服务器登录", "broker login", False, f"refused: {exc}")
    client.loop_start()
    try:
        answered = done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered:
        return CheckLine("服务器登录", "broker login", False, f"no answer in {timeout:g} s")
    if not result.get("ok"):
        return CheckLine("服务器登录", "broker login", False, f"refused: {result['reason']}")
    return CheckLine(
        "服务器登录", "broker login", True, f"logged in as {config.device.device_id} (TLS)"
    )


def check_peripherals(config: KioskConfig, database: tuple[bool, str]) -> list[CheckLine]:
    """``kiosk doctor``'s checks as report lines."""
    from drivers.health import HealthState
    from drivers.selftest import check_hardware

    names = {
        "scanner": "扫码器",
        "printer": "打印机",
        "dispenser": "发卡机",
        "gpio": "按键指示灯",
    }
    lines = []
    for r in check_hardware(config.hardware):
        detail = r.health.reason or r.detail or r.health.state.value
        ok = r.health.state != HealthState.FAILED
        lines.append(CheckLine(names.get(r.device, r.device), r.device, ok, detail))
    lines.append(CheckLine("数据库", "database", database[0], database[1]))
    return lines
