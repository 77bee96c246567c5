"""The integrator example (examples/receiver_app) runs green in WHK's CI, with the plugin coming from the
installed package's pytest11 entry point (the example never imports whk)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
