"""Optimized bytecode for every module the appliance's Python can import.

The touchscreen app runs with ``PYTHONOPTIMIZE=2`` (``member-kiosk.service``): docstrings and
``assert`` statements are left out of its compiled modules, about 5 MB less resident memory
(SQLAlchemy's docstrings alone are megabytes). Python then looks for ``*.opt-2.pyc`` files,
which pip does not write, and the app cannot write them itself (the install root and ``/usr``
are read-only to it): without them every start would compile every module from source again,
slower and with about 3 MB more left behind. So the installer, ``kiosk update`` and apt's
hook after every package change (``/etc/apt/apt.conf.d/80member-kiosk-bytecode``) run::

    /opt/member-kiosk/versions/<version>/bin/python -m edge.lifecycle.bytecode

which compiles, at that level and at the plain level the agent and the commands read, every
directory on that interpreter's path: the standard library, the system's packages (picamera2,
lgpio) and the version's own virtual environment. The installer has pip leave compiling to this
step (``--no-compile``): pip compiles on one core, this on all of them, reading each file once
for both levels. Files already compiled are skipped, so a second run takes seconds. Files
that do not compile (a package's Python 2 example, say) are counted, not fatal: Python
compiles them when imported, as it would without this step.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import cast

# the level ``PYTHONOPTIMIZE`` in member-kiosk.service asks for: no asserts, no docstrings
OPTIMIZE = 2
# and the plain level of every other process (the agent, the commands, HQ's services)
LEVELS = (0, OPTIMIZE)
# test suites and desktop tools the appliance never imports: compiling them is wasted time
SKIP = re.compile(r"[/\\](test|tests|idle_test|idlelib|turtledemo|lib2to3|tkinter)[/\\]")


def path_directories(entries: Iterable[str]) -> list[Path]:
    """The distinct directories among ``entries`` (a ``sys.path``), nested ones left out.

    A directory inside another one on the path (a source checkout holding its own virtual
    environment, say) is compiled with its parent, not twice.
    """
    dirs: list[Path] = []
    for entry in entries:
        if not entry or not os.path.isdir(entry):
            continue  # the current directory's '' and zip files
        path = Path(entry).resolve()
        if path not in dirs:
            dirs.append(path)
    return [d for d in dirs if not any(o != d and o in d.parents for o in dirs)]


def _fresh(source: str, size: int, mtime: int, level: int) -> bool:
    """Whether ``source``'s bytecode at ``level`` is there and made from this very file (the
    header check Python itself makes on import)."""
    cached = importlib.util.cache_from_source(source, optimization=level or "")
    try:
        with open(cached, "rb") as f:
            header = f.read(16)
    except OSError:
        return False
    return (
        len(header) == 16
        and header[:4] == importlib.util.MAGIC_NUMBER
        and int.from_bytes(header[4:8], "little") == 0  # checked by timestamp
        and int.from_bytes(header[8:12], "little") == mtime & 0xFFFFFFFF
        and int.from_bytes(header[12:16], "little") == size & 0xFFFFFFFF
    )


def stale_sources(directory: Path) -> list[str]:
    """The modules under ``directory`` (``SKIP`` left out, linked folders not followed) whose
    bytecode is missing or older than the source at either level."""
    stale: list[str] = []
    for top, folders, files in os.walk(directory):
        folders[:] = [
            d
            for d in folders
            if d != "__pycache__"
            and not os.path.islink(os.path.join(top, d))
            and not SKIP.search(os.path.join(top, d) + os.sep)
        ]
        for name in files:
            if not name.endswith(".py"):
                continue
            source = os.path.join(top, name)
            try:
                st = os.stat(source)
            except OSError:
                continue
            if not all(_fresh(source, st.st_size, int(st.st_mtime), lv) for lv in LEVELS):
                stale.append(source)
    return stale


def _compile(source: str) -> bool:
    # a list of levels since Python 3.9 (each file read once); typeshed says int
    return bool(
        compileall.compile_file(source, quiet=2, optimize=cast(int, list(LEVELS)), legacy=False)
    )


def compile_tree(directory: Path) -> bool:
    """Compiles every module under ``directory`` at both levels (on every core); False if any
    file failed.

    The files already compiled are found here, in one process, by their bytecode's header:
    only the others go to the worker processes. Handing every file of the path to the
    workers to find it fresh cost seconds on every update even when nothing was left to do.
    """
    stale = stale_sources(directory)
    if len(stale) < 50:
        return all([_compile(source) for source in stale])
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return all(pool.map(_compile, stale, chunksize=16))


def main(argv: list[str] | None = None) -> int:
    """Compiles the interpreter's path and the directories given; prints what it did."""
    args = sys.argv[1:] if argv is None else argv
    # sys.path[0] is the directory ``python -m`` was started in, not one the app imports from
    dirs = path_directories([*sys.path[1:], *args])
    failed = [d for d in dirs if not compile_tree(d)]
    print(
        f"bytecode (levels {' and '.join(map(str, LEVELS))}), directories compiled: {len(dirs)}",
        flush=True,
    )
    for d in failed:
        print(f"  some files in {d} did not compile; Python compiles them when imported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
