"""Configuration models of the hardware, one per device kind; unknown keys are refused.

The appliance's config file embeds :class:`HardwareConfig` under ``[hardware]``; this module
stays inside ``drivers`` so the hardware library can be configured without the rest.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScannerConfig(_Strict):
    """Where codes come from: a camera, a serial scan engine, or the simulator."""

    backend: Literal["sim", "sim-serial", "picamera2", "opencv", "serial"] = Field(
        "sim",
        title="Scanner backend",
        description=(
            "sim plays images on a simulated camera; sim-serial is a simulated scan engine "
            "(codes presented as text); picamera2/opencv use a camera; serial a scan engine"
        ),
    )
    source: str = Field(
        "",
        title="Source",
        description="camera index, device path, GStreamer pipeline or serial port",
    )
    images: list[str] = Field(
        default_factory=list, title="Simulated images", description="images the simulator plays"
    )
    timeout_s: float = Field(2.0, gt=0, title="I/O timeout in seconds")
    baudrate: int = Field(9600, gt=0, title="Baud rate", description="serial scan engines only")
    width: int = Field(640, gt=0, title="Frame width", description="camera capture width")
    height: int = Field(480, gt=0, title="Frame height", description="camera capture height")
    debounce_s: float = Field(
        1.5,
        gt=0,
        title="Debounce in seconds",
        description="a code must be out of view this long before it is reported again",
    )


class PrinterConfig(_Strict):
    """The ESC/POS receipt printer."""

    backend: Literal["sim", "usb", "serial", "network", "file"] = Field(
        "sim", title="Printer backend", description="sim keeps the bytes and renders previews"
    )
    target: str = Field(
        "", title="Target", description="usb vid:pid, serial port, host[:port] or file path"
    )
    paper_mm: Literal[58, 80] = Field(80, title="Paper width in millimetres")
    encoding: Literal["gb18030", "gbk", "big5", "raster"] = Field(
        "gb18030",
        title="Chinese text encoding",
        description="what the printer's font understands; raster prints text as an image",
    )
    kanji_mode: bool = Field(
        True,
        title="Kanji mode",
        description="send FS & (double-byte mode) after initialising the printer",
    )
    sim_output: str = Field(
        "",
        title="Simulator output directory",
        description="where the simulated printer writes each receipt's bytes and PNG preview",
    )
    timeout_s: float = Field(5.0, gt=0, title="I/O timeout in seconds")


class DispenserConfig(_Strict):
    """The card dispenser on a serial line."""

    backend: Literal["sim", "serial"] = Field(
        "sim", title="Dispenser backend", description="sim is a virtual unit with 50 cards"
    )
    port: str = Field("", title="Serial port", description="a stable name: /dev/serial/by-id/...")
    baudrate: int = Field(9600, gt=0, title="Baud rate")
    timeout_s: float = Field(3.0, gt=0, title="I/O timeout in seconds")


class GpioConfig(_Strict):
    """Buttons, lights, buzzer and switches on GPIO pins (BCM numbering)."""

    backend: Literal["sim", "gpiozero"] = Field(
        "sim", title="GPIO backend", description="sim drives mock pins from the keyboard"
    )
    help_button: int | None = Field(None, title="Help button pin")
    light_ready: int | None = Field(None, title="Ready light pin")
    light_busy: int | None = Field(None, title="Busy light pin")
    light_fault: int | None = Field(None, title="Fault light pin")
    buzzer: int | None = Field(None, title="Buzzer pin")
    paper_low_sensor: int | None = Field(None, title="Paper-low sensor pin")
    door_switch: int | None = Field(None, title="Cabinet door switch pin")


class HardwareConfig(_Strict):
    """Every peripheral of the appliance; all simulated by default."""

    scanner: ScannerConfig = Field(default_factory=ScannerConfig, title="Code scanner")
    printer: PrinterConfig = Field(default_factory=PrinterConfig, title="Receipt printer")
    dispenser: DispenserConfig = Field(default_factory=DispenserConfig, title="Card dispenser")
    gpio: GpioConfig = Field(default_factory=GpioConfig, title="GPIO panel")
