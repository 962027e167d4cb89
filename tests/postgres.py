"""A throwaway PostgreSQL cluster for the tests, like the Mosquitto they start themselves.

``initdb`` (Debian's ``postgresql`` package, which ``make deps`` installs) makes a cluster in
a temporary folder; the server listens on a free loopback port and a socket in that folder,
without fsync (the tests do not survive a power cut, they need speed), and is stopped and
removed afterwards. As root, the cluster belongs to the ``postgres`` user, since PostgreSQL
refuses to run as root. Each test gets its own schema (:func:`fresh_schema`).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

INSTALL_HINT = "install Debian's postgresql package (make deps)"


def _bindir() -> Path:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            f"no PostgreSQL server programs under /usr/lib/postgresql: {INSTALL_HINT}"
        )
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresCluster:
    """A running throwaway cluster: ``url`` reaches its ``postgres`` database as superuser."""

    root: Path
    port: int
    bindir: Path
    user: str | None
    durable: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr.strip()}\n{tail}")

    def start(self) -> None:
        # Fast and forgetful unless durable: a crash (an ``immediate`` stop) of a forgetful
        # cluster may lose the last commits, as a real one configured so would.
        durability = (
            ""
            if self.durable
            else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        )
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} {durability}"
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            options,
        )

    def stop(self, mode: str = "fast") -> None:
        """Stops the server (``immediate`` is a crash: no checkpoint, recovery at start)."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()


@contextmanager
def postgres_cluster(durable: bool = False) -> Iterator[PostgresCluster]:
    """Makes, starts and afterwards removes a cluster (``durable``: every commit flushed, as
    in production, so a crash loses nothing committed)."""
    bindir = _bindir()
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="mck-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    root.chmod(0o700)
    cluster = PostgresCluster(root, _free_port(), bindir, user, durable)
    try:
        cluster._run(
            "initdb",
            "-D",
            str(cluster.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A URL whose every connection works in a new, empty schema, dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    admin = create_engine(url, pool_pre_ping=True)  # it may outlive a restart
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            # Sessions still open on the schema (a killed worker's, say) end with it.
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                )
            )
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
