"""The integrator example (examples/receiver_app) runs green in WHK's CI, with the plugin coming from the
installed package's pytest11 entry point (the example never imports whk)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Each test is a pytest session in a subprocess, with its own PostgreSQL.
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "receiver_app"
# test_orders_app.py: 5 tests + 4 parametrised event types ran; the one against a running WHK is skipped
# without WHK_URL.
PASSED, SKIPPED = 9, 1


def test_the_example_suite_passes_with_the_plugin():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHK_", "PYTEST_"))}
    proc = subprocess.run(
        # -p no:asyncio: WHK's dev environment has pytest-asyncio, an integrator's need not.
        [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-q", "-rs"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    summary = proc.stdout.strip().splitlines()[-1]
    assert re.search(rf"\b{PASSED} passed, {SKIPPED} skipped\b", summary), proc.stdout[-3000:]
    assert "import whk" not in "".join(p.read_text() for p in EXAMPLE.rglob("*.py"))


def test_the_first_test_in_the_docs_passes(tmp_path: Path):
    """The block after `<!-- integrators:first-test -->` in docs/integrators.md, run as written."""
    doc = (EXAMPLE.parents[1] / "docs" / "integrators.md").read_text()
    found = re.search(r"<!-- integrators:first-test -->\n```python\n(.*?)```", doc, re.DOTALL)
    assert found is not None, "the marked block is missing from docs/integrators.md"
    (tmp_path / "test_first.py").write_text(found.group(1))
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WHK_", "PYTEST_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:asyncio", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert re.search(r"\b1 passed\b", proc.stdout.strip().splitlines()[-1]), proc.stdout[-3000:]
