"""``python -m edge.sync.broker OUT_DIR PORT role:cn[:store]... [--hq-address HOST:PORT]``.

Writes a development broker directory. With ``--hq-address`` it is a store broker that
bridges to HQ's broker at that address (give it the store's ``bridge:bridge-<store>:<store>``
identity and the store's kiosks and lanes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge.sync.broker import Identity, render_broker


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge.sync.broker", description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("identities", nargs="+", metavar="role:cn[:store]")
    parser.add_argument("--hq-address", default=None, help="HQ's broker, host:port")
    args = parser.parse_args(argv)
    try:
        identities = [Identity.parse(spec) for spec in args.identities]
        conf = render_broker(args.out_dir, args.port, identities, hq_address=args.hq_address)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"broker configuration: {conf}\nrun: mosquitto -c {conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
