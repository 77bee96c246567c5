"""The package layering of docs/architecture.md, as `make lint` checks it with import-linter.

The contract lives in pyproject.toml (`[tool.importlinter]`); these tests prove that it holds for the tree
and that it breaks on each kind of import it forbids (a seeded import in a copy of the packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.pg import REPO

PACKAGES = ("whk", "whk_cli", "api", "dispatcher")
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _copy_tree(tmp_path: Path) -> Path:
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_the_layering(tmp_path: Path):
    proc = _lint_imports(_copy_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("importer", "imported", "message"),
    [
        ("whk/errors.py", "api.errors", "whk is not allowed to import api"),
        ("whk/db.py", "dispatcher.retry", "whk is not allowed to import dispatcher"),
        ("whk/settings/__init__.py", "whk_cli.main", "whk is not allowed to import whk_cli"),
        ("api/errors.py", "dispatcher.retry", "api is not allowed to import dispatcher"),
        ("dispatcher/retry.py", "api.errors", "dispatcher is not allowed to import api"),
        ("api/deps.py", "whk_cli.main", "api is not allowed to import whk_cli"),
    ],
)
def test_a_forbidden_import_breaks_the_contract(tmp_path: Path, importer: str, imported: str, message: str):
    root = _copy_tree(tmp_path)
    target = root / importer
    # A function-level import counts as well: laziness does not make a dependency go away.
    target.write_text(target.read_text() + f"\n\ndef _seeded() -> None:\n    import {imported}  # noqa\n")
    proc = _lint_imports(root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stdout


def test_python_dash_m_whk_runs_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "whk", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: whk" in proc.stdout


def test_the_cli_loads_an_application_only_for_its_command():
    """`whk db …` and `whk dispatcher` must not pay for (or depend on) the API's web stack."""
    code = (
        "import sys, whk_cli.main; "
        "print(sorted(m for m in ('api', 'dispatcher', 'litestar', 'aiohttp') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
