"""``kiosk run`` (the touchscreen) and ``kiosk demo`` (a scripted tour with screenshots).

Both start the Kivy app in a process of its own (``python -m kiosk``): the appliance core
never imports Kivy. ``kiosk run`` becomes that process (exec, same PID): systemd accepts
``READY=1`` and watchdog pings only from the unit's main process (``NotifyAccess=main``), and
sets ``WATCHDOG_PID`` to it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from edge.cli.common import state
from edge.station.displays import parse_size

DEMO_DIR = Path("var/demo")


def has_screen(environ: dict[str, str] | None = None) -> bool:
    """An X or Wayland display, or a KMS/DRM device for Kivy's SDL2 window on the appliance."""
    env = os.environ if environ is None else environ
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return True
    return any(Path("/dev/dri").glob("card*")) and not env.get("SSH_CONNECTION")


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if value:
        try:
            parse_size(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


def _child_env(data_dir: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if data_dir is not None:
        env["KIOSK_DATA_DIR"] = str(data_dir)
    return env


def register(group: click.Group) -> None:
    @group.command("run")
    @click.option("--sim", is_flag=True, help="Simulated hardware (for a development machine).")
    @click.option("--windowed", is_flag=True, help="A window instead of full screen.")
    @click.option("--size", default="", callback=_size, help="Window size, e.g. 1080x1920.")
    def run_cmd(sim: bool, windowed: bool, size: str) -> None:
        """Start the member center on the touchscreen."""
        root = state()
        if not has_screen():
            out = (root.data_dir or Path("var")) / "demo"
            click.echo(
                "There is no screen here (no DISPLAY and no display device), so the demo tour "
                f"plays on a virtual display instead; its screenshots go to {out.resolve()}"
            )
            command = [sys.executable, "-m", "kiosk.demo", "--out", str(out)]
        else:
            command = [sys.executable, "-m", "kiosk"]
            if sim:
                command += ["--sim", "--seed"]
            if windowed or sim:
                command.append("--windowed")
            if size:
                command += ["--size", size]
        sys.stdout.flush()
        os.execve(sys.executable, command, _child_env(root.data_dir))

    @group.command("demo")
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEMO_DIR,
        show_default=True,
        help="Folder for screen-NN-*.png and receipt-NN-*.png.",
    )
    @click.option(
        "--size", default="", callback=_size, help="Window size, e.g. 1080x1920 (portrait)."
    )
    def demo_cmd(out: Path, size: str) -> None:
        """Play a scripted tour of every journey on the simulators, with screenshots."""
        command = [sys.executable, "-m", "kiosk.demo", "--out", str(out)]
        if size:
            command += ["--size", size]
        raise SystemExit(subprocess.call(command))
