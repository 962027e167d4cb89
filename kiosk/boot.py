"""Kivy's settings, applied before Kivy opens its window (they are read only once).

Touch input comes from exactly one provider: two providers for one touchscreen (the SDL
window's synthesised mouse events plus ``hidinput``, say) deliver every touch twice.
"""

from __future__ import annotations

import os
from pathlib import Path


def input_providers(provider: str, device: str) -> dict[str, str]:
    """The ``[input]`` section: one entry, for the configured provider."""
    if provider == "mouse":
        # SDL turns touches into mouse events; no red multitouch-emulation dots
        return {"mouse": "mouse,disable_multitouch"}
    if provider == "probesysfs":
        return {"touch": "probesysfs,provider=hidinput,select_all=0"}
    if not device:
        raise ValueError(f"the {provider} provider needs ui.touch_device (e.g. /dev/input/event0)")
    return {"touch": f"{provider},{device}"}


def configure_kivy(
    *,
    kivy_home: Path,
    provider: str,
    device: str = "",
    fullscreen: bool,
    size: tuple[int, int],
) -> None:
    """Sets Kivy's environment and config; call before anything imports ``kivy.core``."""
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ["KIVY_NO_CONSOLELOG"] = "1"
    os.environ["KIVY_NO_CONFIG"] = "1"
    os.environ["KIVY_NO_FILELOG"] = "1"
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    kivy_home.mkdir(parents=True, exist_ok=True)
    os.environ["KIVY_HOME"] = str(kivy_home)
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "keyboard_mode", "system")
    Config.set("kivy", "log_enable", "0")
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "borderless", "1" if fullscreen else "0")
    Config.set("graphics", "resizable", "0" if fullscreen else "1")
    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "multisamples", "0")
    Config.set("graphics", "show_cursor", "1" if provider == "mouse" else "0")
    for name in list(Config.options("input")):
        Config.remove_option("input", name)
    for name, value in input_providers(provider, device).items():
        Config.set("input", name, value)
