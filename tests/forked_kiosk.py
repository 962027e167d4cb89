"""``kiosk`` commands as processes of their own, forked from one that imported the product once.

A console command started as ``kiosk ...`` spends a second or more importing before it does
anything; a test that starts dozens at once, to race them on one database, spends most of its
time there. :class:`KioskForks` starts one server (``python -m tests.forked_kiosk``) that
imports :mod:`edge.cli.main` and the services the console commands use, then forks a child per
command. Each child is a process of its own (its own database connections, locks and exit
code): it runs ``main(ARGS)`` with its standard input empty and its output in files, and exits
with the command's code. Tests about a command's start-up (its imports, the installed script)
still start ``kiosk`` itself.

The server speaks in lines: ``{"id": N, "args": [...], "out": PATH, "err": PATH}`` in, and
``done N CODE`` out once that child has exited (``CODE`` negative: killed by that signal).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from tests.cli_runner import Ran

ROOT = Path(__file__).resolve().parents[1]


def _child(args: list[str], out: str, err: str, inherited: list[int]) -> None:
    """In the forked child: run the command with its output in ``out`` and ``err``; never
    returns (``inherited``: the server's descriptors, closed first)."""
    code = 70
    try:
        for fd in inherited:
            os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(target, fd)
            os.close(target)
        # as a pipe is, with PYTHONIOENCODING=utf-8; standard error with backslashreplace
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(
            io.FileIO(1, "w", closefd=False), encoding="utf-8", write_through=True
        )
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            write_through=True,
        )
        from edge.cli.main import main

        code = main(args)
    except SystemExit as exc:  # as ``sys.exit(main())`` would end the process
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the command's own errors are one line; this is not one
        with contextlib.suppress(Exception):
            os.write(2, f"forked kiosk: {type(exc).__name__}: {exc}\n".encode())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """The fork server: one child per command line on standard input."""
    # what every console command imports at start, and what ``backup restore`` imports
    import edge.cli.main
    import edge.lifecycle.restore
    import edge.provisioning.history  # noqa: F401
    from edge.app import AppContext
    from edge.config import KioskConfig

    # what opening a data directory imports (the schema check: Alembic, Mako); the engine
    # and its connections are gone again before the first fork
    with tempfile.TemporaryDirectory(prefix="mck-forks-warm-") as warm:
        AppContext.open(Path(warm), config=KioskConfig()).close()

    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "commands")
    running: dict[int, tuple[int, int]] = {}  # pidfd -> (id, pid)
    pending = b""  # read from standard input, not a whole line yet
    reading = True
    while reading or running:
        for key, _ in selector.select():
            if key.data == "commands":
                chunk = os.read(0, 65536)  # not sys.stdin: its buffer would hide lines
                if not chunk:
                    selector.unregister(0)
                    reading = False
                    continue
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    command = json.loads(line)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        inherited = [selector.fileno(), *running]
                        _child(command["args"], command["out"], command["err"], inherited)
                    pidfd = os.pidfd_open(pid)
                    running[pidfd] = (command["id"], pid)
                    selector.register(pidfd, selectors.EVENT_READ, "child")
            else:
                pidfd = key.fd
                ident, pid = running.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                print(f"done {ident} {os.waitstatus_to_exitcode(status)}", flush=True)


class Forked:
    """One forked command: :meth:`wait` gives what it did, as :func:`subprocess.run` would."""

    def __init__(self, forks: KioskForks, ident: int, out: Path, err: Path) -> None:
        self._forks, self.ident, self._out, self._err = forks, ident, out, err

    def wait(self, timeout: float = 300.0) -> Ran:
        code = self._forks.code(self.ident, timeout)
        return Ran(
            code,
            self._out.read_text(encoding="utf-8"),
            self._err.read_text(encoding="utf-8", errors="backslashreplace"),
        )


class KioskForks:
    """The fork server, as a context manager: :meth:`start` forks one ``kiosk ARGS``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mck-forks-"))
        # a session of its own: closing (or a test that gave up) ends it with its children
        self._server = subprocess.Popen(
            [sys.executable, "-m", "tests.forked_kiosk"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ if env is None else env),
            start_new_session=True,
        )
        self._codes: dict[int, int] = {}
        self._ended = False  # the server's output ended
        self._changed = threading.Condition()
        self._next = 0
        self._sending = threading.Lock()
        assert self._server.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self._server.stdout,))
        self._reader.daemon = True
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                words = line.split()
                if len(words) != 3 or words[0] != "done":
                    continue  # not the server's answer (something a module printed)
                with self._changed:
                    self._codes[int(words[1])] = int(words[2])
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def start(self, *args: str) -> Forked:
        with self._sending:
            ident = self._next
            self._next += 1
            out, err = self._dir / f"{ident}.out", self._dir / f"{ident}.err"
            line = json.dumps({"id": ident, "args": list(args), "out": str(out), "err": str(err)})
            assert self._server.stdin is not None
            self._server.stdin.write(line + "\n")
            self._server.stdin.flush()
        return Forked(self, ident, out, err)

    def run(self, *args: str, timeout: float = 300.0) -> Ran:
        return self.start(*args).wait(timeout)

    def code(self, ident: int, timeout: float) -> int:
        with self._changed:
            done = self._changed.wait_for(lambda: ident in self._codes or self._ended, timeout)
            assert done, f"forked command {ident} still running after {timeout} s"
            assert ident in self._codes, f"the fork server ended ({self._server.poll()})"
            return self._codes[ident]

    def close(self) -> None:
        if self._server.stdin is not None:
            with contextlib.suppress(OSError):
                self._server.stdin.close()
        try:
            self._server.wait(timeout=300)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the server and what it forked
                os.killpg(self._server.pid, signal.SIGKILL)
            self._server.wait()
            self._reader.join(10)
            for path in self._dir.iterdir():
                path.unlink()
            self._dir.rmdir()

    def __enter__(self) -> KioskForks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    serve()
