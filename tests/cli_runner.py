"""Runs the ``kiosk`` command in the test's own process, as a fresh command would run.

Starting ``python -m edge.cli.main`` imports most of the product (one to three seconds a
command); a test about a command's behaviour (its exit code, its one-line error, its output)
runs it here instead: :func:`run_kiosk` calls :func:`edge.cli.main.main` with its own
standard input, output and error, and the environment the command would have had, then puts
back everything it changed; it runs in an empty context (no context variable set), as a new
process starts. Tests about processes (signals, exits, a service that keeps running, the
installed console script) still start one.
"""

from __future__ import annotations

import contextvars
import io
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from edge.cli.main import main


class Ran(NamedTuple):
    """A finished command: its exit code and what it wrote (as ``subprocess.run`` gives)."""

    returncode: int
    stdout: str
    stderr: str


class RanBytes(NamedTuple):
    """A finished command with its output as the bytes it wrote."""

    returncode: int
    stdout: bytes
    stderr: bytes


def _stream(data: bytes = b"", errors: str = "strict") -> io.TextIOWrapper:
    """A standard stream that is not a terminal: UTF-8 text over bytes, as a pipe is when
    ``PYTHONIOENCODING=utf-8``; standard error, like Python's, with ``backslashreplace``."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors=errors, write_through=True)


def _written(stream: io.TextIOWrapper) -> bytes:
    stream.flush()
    raw = stream.buffer
    assert isinstance(raw, io.BytesIO)
    return raw.getvalue()


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextmanager
def _directory(cwd: Path | None) -> Iterator[None]:
    before = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


def run_kiosk_bytes(
    *args: str,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> RanBytes:
    """Runs ``kiosk ARGS...`` in this process: ``stdin`` as its standard input (not a
    terminal), ``env`` as its whole environment (default: this process's, less the variables
    whose names start with one of ``drop_env``), in ``cwd``; what it wrote, as bytes."""
    base = dict(os.environ) if env is None else dict(env)
    environment = {k: v for k, v in base.items() if not k.startswith(drop_env)}
    out, err = _stream(), _stream(errors="backslashreplace")
    streams = sys.stdin, sys.stdout, sys.stderr
    with _environment(environment), _directory(cwd):
        sys.stdin, sys.stdout, sys.stderr = _stream(stdin), out, err
        try:
            code = contextvars.Context().run(main, list(args))  # no context variable set
        finally:
            sys.stdin, sys.stdout, sys.stderr = streams
    return RanBytes(code, _written(out), _written(err))


def run_kiosk(
    *args: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> Ran:
    """:func:`run_kiosk_bytes` with text in and out (UTF-8)."""
    ran = run_kiosk_bytes(*args, stdin=stdin.encode(), env=env, drop_env=drop_env, cwd=cwd)
    return Ran(ran.returncode, ran.stdout.decode(), ran.stderr.decode())
