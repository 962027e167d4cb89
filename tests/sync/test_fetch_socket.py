"""The agent's local socket (member fetches, voucher and coupon questions): open to the
kiosk's user and group only, made without touching the process's umask, which every thread
and every child process shares."""

from __future__ import annotations

import os
import stat
import threading
from typing import Any

from edge.sync.member_fetch import FetchServer


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _start(server: FetchServer, together: threading.Barrier) -> None:
    together.wait()
    server.start()


def test_sockets_made_at_once_leave_the_umask_alone_and_are_the_groups(make_app):
    apps = [make_app(name=f"kiosk{i}") for i in range(4)]
    before = _umask()
    for _ in range(10):
        servers = [FetchServer(app, fetcher=Any) for app in apps]  # type: ignore[arg-type]
        start = threading.Barrier(len(servers))

        threads = [threading.Thread(target=_start, args=(s, start)) for s in servers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        try:
            assert _umask() == before
            for server in servers:
                assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
        finally:
            for server in servers:
                server.close()
