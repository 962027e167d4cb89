"""``python -m edge.sync.broker OUT_DIR PORT role:cn[:store]...``: a dev broker directory."""

from __future__ import annotations

import sys
from pathlib import Path

from edge.sync.broker import Identity, render_broker


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        identities = [Identity.parse(spec) for spec in argv[2:]]
        conf = render_broker(Path(argv[0]), int(argv[1]), identities)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"broker configuration: {conf}\nrun: mosquitto -c {conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
