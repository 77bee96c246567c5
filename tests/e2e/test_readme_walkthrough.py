"""The README walk-through, run as written: extracted from README.md, run with bash against a real
`whk up` (its own data directory and port), twice, with a second `whk up` on the same data in between.

Only the three variables of the README's `walkthrough:variables` block are set by the test (`KEY` from
`whk up`'s admin key line, `API` from its port, `DB` from its data directory); the `walkthrough:commands`
block runs unchanged (under `set -euo pipefail`, so a failing command fails the test). After each run,
the mock endpoint the run created must hold the signed `order.created` envelope of the run's order,
verified with the `standardwebhooks` package and the signing secret the walk-through got back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import port_for
import pytest
from standardwebhooks.webhooks import Webhook

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
WHK = str(Path(sys.executable).with_name("whk"))
VARIABLES = "walkthrough:variables"
COMMANDS = "walkthrough:commands"
# The admin key line of `whk up`, read loosely: any line naming an admin key, the key itself `whk_…`.
_KEY_LINE = re.compile(r"admin[^\n]*key[^\n]*?\b(whk_[A-Za-z0-9_-]{16,})", re.IGNORECASE)
# The psql line of `whk up`: the URL `DB` stands for.
_PSQL_LINE = re.compile(r"psql\b[^\n]*?'(postgresql://[^'\n]+)'")
# What the test reads back from the walk-through's shell after its commands ran.
_REPORT = '\necho\nprintf "WALKTHROUGH %s %s\\n" "$RUN" "$SECRET"\n'


def fenced_block_after(text: str, marker: str) -> str:
    """The first ```sh fenced block after the HTML comment that names ``marker``."""
    at = text.index(f"<!-- {marker}")
    match = re.compile(r"```sh\n(.*?)\n```", re.DOTALL).search(text, at)
    assert match is not None, f"no ```sh block after the {marker} marker"
    return match.group(1)


def test_the_walkthrough_uses_only_the_variables_the_test_sets():
    """The substitution is honest: the variables block sets exactly KEY, API and DB, and the commands
    hard-code none of the values those variables stand for."""
    text = README.read_text(encoding="utf-8")
    assigned = re.findall(r"^([A-Z_]+)=", fenced_block_after(text, VARIABLES), re.MULTILINE)
    assert assigned == ["KEY", "API", "DB"]
    commands = fenced_block_after(text, COMMANDS)
    for literal in ("8080", "/var/lib/whk", "whk_", "127.0.0.1", 'consumer_id\\": 1'):
        assert literal not in commands, literal
    for name in ("$KEY", "$API", "$DB"):
        assert name in commands, name


def test_setup_is_two_commands():
    """README's set-up section keeps exactly two set-up commands: `make up` and `make test`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Set-up") :]
    block = re.search(r"```sh\n(.*?)\n```", section, re.DOTALL)
    assert block is not None
    commands = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make up", "make test"]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Directly under the system temp dir: the server's OS user must be able to reach it.
    path = Path(tempfile.mkdtemp(prefix="whk-readme-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            "WHK_DATA_DIR": str(data_dir),
            "WHK_API_PORT": str(port),
            # What `make up` exports outside production: the mock endpoint is on loopback.
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128",
            "WHK_SHUTDOWN_GRACE": "3",
        }
    )
    return env


class Up:
    """A `whk up` process whose output is collected line by line into a file (read while it runs)."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.log = data_dir.parent / f"{data_dir.name}-up-{time.monotonic_ns()}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            [WHK, "up"],
            env=_env(data_dir, port),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self, health: str, timeout: float = 120) -> None:
        """Health answers 200 (the ready lines may print before or after: both are waited for)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"whk up exited early:\n{self.output()}"
            try:
                if httpx.get(health, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{health} did not answer 200 within {timeout} s:\n{self.output()}")

    def wait_line(self, pattern: re.Pattern[str], timeout: float = 60) -> re.Match[str]:
        """The last match of ``pattern`` in the output, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = list(pattern.finditer(self.output()))
            if found:
                return found[-1]
            assert self.proc.poll() is None, f"whk up exited early:\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern.pattern!r} in:\n{self.output()}")

    def stop(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=90)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self._out.close()
            self.log.unlink(missing_ok=True)


def _path_with_psql() -> str:
    """PATH, with the PostgreSQL binaries `whk up` uses appended when no psql is on it."""
    path = os.environ.get("PATH", "")
    if shutil.which("psql") is None:
        bindir = subprocess.run(
            [str(ROOT / "scripts" / "pg-run"), "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        path = f"{path}:{bindir}"
    return path


def run_walkthrough(commands: str, *, key: str, api: str, db: str) -> tuple[str, str, str]:
    """Run the commands block with bash; returns its last line of output, the run's RUN and SECRET."""
    env = {**os.environ, "PATH": _path_with_psql(), "KEY": key, "API": api, "DB": db}
    env = {k: v for k, v in env.items() if not k.startswith("WHK_")}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands + _REPORT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, f"the walk-through failed:\n{proc.stdout}\n{proc.stderr}"
    report = re.search(r"^WALKTHROUGH (\S+) (\S+)$", proc.stdout, re.MULTILINE)
    assert report is not None, proc.stdout
    last_output = proc.stdout[: report.start()].strip().splitlines()[-1]
    return last_output, report.group(1), report.group(2)


def _received(api: str, key: str, mock: str, timeout: float = 60) -> list[dict[str, Any]]:
    """What the mock received, once it holds something (deadline, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{api}/dev/mock/{mock}/requests", headers={"Authorization": f"Bearer {key}"}, timeout=5
        )
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()
        if items:
            return items
        time.sleep(0.3)
    raise AssertionError(f"mock {mock} received nothing within {timeout} s")


def _check_delivery(last_output: str, api: str, key: str, run: str, secret: str) -> None:
    # The walk-through's own last command printed the mock's list (maybe still empty): valid JSON.
    assert isinstance(json.loads(last_output), list), last_output
    items = _received(api, key, f"orders-{run}")
    envelopes = []
    for item in items:
        Webhook(secret).verify(item["body"], item["headers"])  # raises on a bad signature
        envelopes.append(json.loads(item["body"]))
    orders = [e for e in envelopes if e["type"] == "order.created"]
    assert orders, envelopes
    assert float(orders[0]["data"]["new"]["total"]) == 120.5, orders[0]


def test_readme_walkthrough_runs_as_written_twice_on_the_same_data(data_dir: Path):
    text = README.read_text(encoding="utf-8")
    commands = fenced_block_after(text, COMMANDS)
    port = port_for.select_random()
    api = f"http://127.0.0.1:{port}/api/whk"
    health = f"{api}/monitoring/health"

    key: str | None = None
    runs: list[str] = []
    for _ in range(2):  # a second `whk up` on the same data, as a second `make up` would
        up = Up(data_dir, port)
        try:
            up.wait_ready(health)
            db = up.wait_line(_PSQL_LINE).group(1)  # printed with the ready lines
            assert str(data_dir) in db, db
            found = _KEY_LINE.findall(up.output())
            key = found[-1] if found else key  # a `whk up` that reuses its key may not print it again
            assert key is not None, f"no admin key line in the output of whk up:\n{up.output()}"
            for _ in range(2):  # twice in a row on the same data
                out, run, secret = run_walkthrough(commands, key=key, api=api, db=db)
                assert run not in runs
                runs.append(run)
                _check_delivery(out, api, key, run, secret)
        finally:
            up.stop()
