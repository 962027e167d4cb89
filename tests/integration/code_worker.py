"""A process that identifies members by signed member codes, for the replay guard's tests.

    python -m tests.integration.code_worker hold DATA_DIR CODE
        identifies CODE, prints ``identified <card>`` (or ``refused <code>``), then waits on
        standard input with the data directory still open, until it is killed;
    python -m tests.integration.code_worker race DATA_DIR CODES_FILE GO_FILE
        opens the data directory, prints ``ready``, waits for GO_FILE to exist, then identifies
        every code in CODES_FILE (one a line) and prints one JSON list: ``"ok"`` or the refusal
        code for each.

Each process opens the data directory itself (``AppContext.open``), as the touchscreen and a
console command do.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.app import AppContext
from edge.config import KioskConfig
from edge.domain.errors import Refusal
from edge.services.members import identify


def _try(app: AppContext, code: str) -> str:
    try:
        identify(app, code)
    except Refusal as refusal:
        return refusal.code
    return "ok"


def hold(data_dir: Path, code: str) -> None:
    app = AppContext.open(data_dir, config=KioskConfig())
    outcome = _try(app, code)
    print("identified" if outcome == "ok" else f"refused {outcome}", flush=True)
    sys.stdin.read()  # the test kills the process while it waits here


def race(data_dir: Path, codes_file: Path, go_file: Path) -> None:
    app = AppContext.open(data_dir, config=KioskConfig())
    try:
        codes = codes_file.read_text(encoding="ascii").split()
        print("ready", flush=True)
        while not go_file.exists():
            time.sleep(0.001)
        print(json.dumps([_try(app, code) for code in codes]), flush=True)
    finally:
        app.close()


def main(argv: list[str]) -> int:
    if argv[0] == "hold":
        hold(Path(argv[1]), argv[2])
    elif argv[0] == "race":
        race(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    else:
        raise SystemExit(f"unknown mode {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
