"""The test helpers live once, in tests/support, and the fast lane is what the Makefile and README say."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Helpers that used to be copied into several test files and benchmarks.
SHARED = {"encode", "free_port", "png_chunk", "raw_png", "png_bomb", "make_tiny_model", "FakePredictor",
          "solid_image_bytes", "ServerProcess"}


def helpers_defined(path: Path) -> set[str]:
    """Top-level functions and classes of a file, leading underscores dropped; pytest fixtures
    are left out (a fixture may wrap a helper under its name, it does not copy it)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and any("fixture" in ast.unparse(d) for d in node.decorator_list):
            continue
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name.lstrip("_"))
    return names


def test_shared_helpers_are_defined_once_in_tests_support():
    owners: dict[str, list[str]] = {name: [] for name in SHARED}
    for path in [*(ROOT / "tests").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        for name in helpers_defined(path) & SHARED:
            owners[name].append(path.relative_to(ROOT).as_posix())
    for name, paths in owners.items():
        assert len(paths) == 1 and paths[0].startswith("tests/support/"), (name, paths)
    # conftest holds fixtures; helpers are imported from support, never from conftest.
    importing_conftest = [p.name for p in (ROOT / "tests").rglob("*.py")
                          if p != Path(__file__).resolve() and "from conftest import" in p.read_text()]
    assert not importing_conftest


def test_make_test_fast_leaves_out_slow_and_browser_tests_and_make_test_runs_all():
    # Run as a fresh make would be (CI runs this file inside `make test`, whose MAKEFLAGS and
    # MAKELEVEL would make the inner make print its directory).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "test-fast"], cwd=ROOT, capture_output=True, text=True,
                         env=env)
    assert dry.returncode == 0, dry.stderr
    assert re.search(r'pytest -m "not slow and not browser"\s*$', dry.stdout.strip())
    full = subprocess.run(["make", "--no-print-directory", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          env=env).stdout
    assert re.search(r"python -m pytest\s*$", full, re.M)  # everything, no marker filter
    assert "ruff check" in full and "lint-imports" in full and "check_base_install.sh" in full
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    readme = (ROOT / "README.md").read_text()
    assert "make test-fast" in readme and '-m "not slow and not browser"' in readme


@pytest.mark.parametrize("marker", ["slow", "browser"])
def test_the_fast_lane_markers_are_declared(marker):
    assert f'"{marker}:' in (ROOT / "pyproject.toml").read_text()
