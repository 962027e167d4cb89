"""The optimized bytecode the touchscreen reads: written once, then imported, never compiled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edge.lifecycle.bytecode import OPTIMIZE, compile_tree, main, path_directories

TAG = sys.implementation.cache_tag


def _tree(root: Path) -> Path:
    pkg = root / "shop"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""A docstring the optimized code leaves out."""\n')
    (pkg / "prices.py").write_text("def total(a: int, b: int) -> int:\n    return a + b\n")
    (pkg / "tests/test_prices.py").write_text("def test(): pass\n")
    return pkg


def test_path_directories_keeps_each_directory_once_and_leaves_nested_ones_out(tmp_path):
    outer, inner, other = tmp_path / "a", tmp_path / "a/lib/site", tmp_path / "b"
    for d in (inner, other):
        d.mkdir(parents=True)
    entries = ["", str(inner), str(outer), str(tmp_path / "missing"), str(other), str(outer)]
    assert path_directories(entries) == [outer.resolve(), other.resolve()]
    assert path_directories([str(tmp_path / "lib.zip")]) == []


def test_a_tree_is_compiled_at_both_levels_tests_left_out(tmp_path):
    pkg = _tree(tmp_path)
    (pkg / "broken.py").write_text("def (:\n")
    assert not compile_tree(tmp_path)  # the broken file is reported...
    cache = pkg / "__pycache__"
    # ...and everything else is compiled
    assert (cache / f"__init__.{TAG}.opt-{OPTIMIZE}.pyc").exists()
    assert (cache / f"prices.{TAG}.opt-{OPTIMIZE}.pyc").exists()
    assert (cache / f"prices.{TAG}.pyc").exists()  # and at the plain level (pip leaves it)
    assert not (cache / f"broken.{TAG}.opt-{OPTIMIZE}.pyc").exists()
    assert not (pkg / "tests/__pycache__").exists()
    (pkg / "broken.py").unlink()
    assert compile_tree(tmp_path)


def test_an_optimized_process_imports_the_compiled_modules_without_compiling(
    tmp_path, capsys, monkeypatch
):
    pkg = _tree(tmp_path)
    # only the directory given: this interpreter's own path is not the test's to compile
    monkeypatch.setattr(sys, "path", [sys.path[0]])
    assert main([str(tmp_path)]) == 0
    assert "bytecode (levels 0 and 2), directories compiled: 1" in capsys.readouterr().out
    env = dict(os.environ, PYTHONOPTIMIZE=str(OPTIMIZE), PYTHONPATH=str(tmp_path))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as the app's read-only install root
    run = subprocess.run(
        [sys.executable, "-v", "-c", "import shop, shop.prices; print(shop.__doc__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "None"  # no docstring in memory
    pyc = pkg / "__pycache__" / f"prices.{TAG}.opt-{OPTIMIZE}.pyc"
    assert f"code object from '{pyc}'" in run.stderr
