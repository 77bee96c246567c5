"""`whk up` (what `make up` runs): private PostgreSQL, migrations, API and dispatcher; Ctrl-C stops all."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import port_for
import psutil
import pytest

from tests.support.wait import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WHK = str(Path(sys.executable).with_name("whk"))


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Directly under the system temp dir: the server's OS user must be able to reach it.
    path = Path(tempfile.mkdtemp(prefix="whk-up-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _ours(data_dir: Path, pid: int) -> list[psutil.Process]:
    """Processes still alive that belong to this `whk up`: its children or a postgres on its data dir."""
    alive = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if str(data_dir) in cmd or (proc.ppid() == pid and proc.pid != pid):
                alive.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return alive


def _start(data_dir: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            "WHK_DATA_DIR": str(data_dir),
            "WHK_API_PORT": str(port),
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8",
            "WHK_SHUTDOWN_GRACE": "3",
        }
    )
    return subprocess.Popen(
        [WHK, "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_healthy(proc: subprocess.Popen[str], url: str, timeout: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        assert proc.poll() is None, f"whk up exited early:\n{proc.stdout.read() if proc.stdout else ''}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def _run_once(data_dir: Path, port: int, health: str) -> str:
    """Start `whk up`, wait for health 200, Ctrl-C it; assert a clean exit with nothing left running."""
    proc = _start(data_dir, port)
    try:
        _wait_healthy(proc, health)
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    wait_for(lambda: _ours(data_dir, proc.pid) == [], 10, "every process of this `whk up` to be gone")
    return out


def test_up_serves_health_and_ctrl_c_leaves_nothing_behind(data_dir: Path):
    port = port_for.select_random()
    health = f"http://127.0.0.1:{port}/api/whk/monitoring/health"
    out = _run_once(data_dir, port, health)
    assert "postgres: initialised" in out
    assert "demo ERP: schema erp" in out
    assert "Health:  " + health in out
    assert "postgres stopped" in out

    # A second `whk up` reuses the data directory.
    out = _run_once(data_dir, port, health)
    assert "postgres: reusing" in out
