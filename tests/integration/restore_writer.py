"""A console writer caught by a restore, for the restore race test.

    python -m tests.integration.restore_writer DATA_DIR CARD REF

Prints ``ready`` once imported, waits until a restore of DATA_DIR is under way (its unpacked
backup, ``.restore-*.db``, is in the data directory), opens the ledger as every console
command does (``AppContext.open``) and prints ``opened``; then waits for a line on standard
input and accrues a purchase with receipt id REF, printing the answer as JSON. So the test
decides when the accrual is made: after the restore has finished, into whatever file the
writer opened. Exits 3 if no restore came within two minutes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from edge.app import AppContext
from edge.services import points


def main(argv: list[str]) -> int:
    data, card, ref = Path(argv[0]), argv[1], argv[2]
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while not any(data.glob(".restore-*.db")):
        if time.monotonic() > deadline:
            print("no restore", flush=True)
            return 3
        time.sleep(0.001)
    app = AppContext.open(data)
    try:
        print("opened", flush=True)
        sys.stdin.readline()
        done = points.accrue_purchase(app, card, 10_000, ref, actor="console")
        print(json.dumps({"receipt_id": done.receipt_id, "balance": done.balance}), flush=True)
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
