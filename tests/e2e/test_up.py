"""`whk up` (what `make up` runs): private PostgreSQL, migrations, API and dispatcher, each as its own
role; a child that dies is restarted while PostgreSQL and the API stay up; Ctrl-C stops all."""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import port_for
import psutil
import psycopg
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WHK = str(Path(sys.executable).with_name("whk"))
READY = "Ctrl-C stops everything."


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


def _wait(cond: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


class Up:
    """A running `whk up`: its output, line by line as it comes, and its database."""

    def __init__(self, data_dir: Path, port: int, **env: str) -> None:
        self.data_dir = data_dir
        self.base = f"http://127.0.0.1:{port}"
        self.health = f"{self.base}/api/whk/monitoring/health"
        full = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
        full.update(
            {
                "WHK_DATA_DIR": str(data_dir),
                "WHK_API_PORT": str(port),
                "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8",
                "WHK_SHUTDOWN_GRACE": "3",
                **env,
            }
        )
        self.proc = subprocess.Popen(
            [WHK, "up"],
            env=full,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, wanted: str, timeout: float = 120) -> str:
        """Block until a line containing ``wanted`` is printed; return it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no line with {wanted!r} within {timeout} s:\n{self.output}"
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"whk up exited before printing {wanted!r}:\n{self.output}"
            if wanted in line:
                return line

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        dsn = f"postgresql://postgres@/whk?host={quote(str(self.data_dir), safe='/')}"
        with psycopg.connect(dsn, autocommit=True) as conn:
            cur = conn.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def postmaster_pid(self) -> int:
        return int((self.data_dir / "pgdata" / "postmaster.pid").read_text().splitlines()[0])

    def dispatcher_pids(self) -> set[int]:
        """Dispatchers with a fresh heartbeat row."""
        rows = self.sql(
            "SELECT pid FROM whk.dispatchers "
            "WHERE heartbeat_at > now() - interval '5 seconds' AND NOT stopping"
        )
        return {r[0] for r in rows}

    def health_json(self) -> dict[str, Any]:
        r = httpx.get(self.health, timeout=2)
        body: dict[str, Any] = r.json()
        return body

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=60)
        self._reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return rc


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class HealthWatch:
    """Polls health in the background and remembers every time it did not answer 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.polls = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Generous: a loaded CI machine may be slow; refused connections and 5xx are what must not happen.
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    status = client.get(self.url).status_code
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self.polls += 1
                self._stop.wait(0.2)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _run_once(data_dir: Path, port: int) -> tuple[Up, str]:
    """Start `whk up`; the moment it prints the ready line, health must answer. Return it and its key."""
    up = Up(data_dir, port)
    try:
        up.wait_line(READY)
        # Printed only once health answers: it answers right now.
        assert httpx.get(up.health, timeout=2).status_code == 200
        text = up.output
        assert text.index("Health:  " + up.health) < text.index(READY)
        key = re.search(r"Admin API key \(development, shown once[^)]*\): (\S+)", text)
        assert key, text
        return up, key.group(1)
    except BaseException:
        up.stop()
        raise


def _stop_clean(up: Up, sig: signal.Signals = signal.SIGINT) -> str:
    """Ctrl-C (or SIGTERM) stops every child and PostgreSQL, and `whk up` exits 0."""
    rc = up.stop(sig)
    assert rc == 0, up.output
    _wait(lambda: not _ours(up.data_dir, up.proc.pid), "every child and postgres gone", timeout=15)
    return up.output


def test_up_serves_health_and_ctrl_c_leaves_nothing_behind(data_dir: Path):
    port = port_for.select_random()
    up, first_key = _run_once(data_dir, port)
    try:
        # Each process is logged in as its own role, none as the superuser.
        users = {u for (u,) in up.sql("SELECT usename FROM pg_stat_activity WHERE datname = 'whk'")}
        assert {"whk_app", "whk_dispatcher"} <= users
        assert (
            httpx.get(
                f"{up.base}/api/whk/webhooks", headers={"Authorization": f"Bearer {first_key}"}
            ).status_code
            == 200
        )
    finally:
        out = _stop_clean(up)
    assert "postgres: initialised" in out
    assert "demo ERP: schema erp" in out
    assert "postgres stopped" in out

    # A second `whk up` reuses the data directory and rotates the development key: one valid at a time.
    up, second_key = _run_once(data_dir, port)
    try:
        assert "postgres: reusing" in up.output
        assert "shown once; 1 earlier revoked)" in up.output
        assert second_key != first_key
        webhooks = f"{up.base}/api/whk/webhooks"
        assert httpx.get(webhooks, headers={"Authorization": f"Bearer {second_key}"}).status_code == 200
        assert httpx.get(webhooks, headers={"Authorization": f"Bearer {first_key}"}).status_code == 401
        valid = up.sql(
            "SELECT count(*) FROM whk.api_keys WHERE name = 'make-up development key' AND revoked_at IS NULL"
        )
        assert valid == [(1,)]
    finally:
        _stop_clean(up)


def test_kill_9_of_the_dispatcher_restarts_it_while_api_and_postgres_stay_up(data_dir: Path):
    up, _key = _run_once(data_dir, port_for.select_random())
    watch: HealthWatch | None = None
    try:
        (victim,) = _wait(up.dispatcher_pids, "the dispatcher's heartbeat")
        postmaster = up.postmaster_pid()
        watch = HealthWatch(up.health)
        _wait(lambda: watch.polls >= 3, "health polled")
        os.kill(victim, signal.SIGKILL)
        up.wait_line("`whk dispatcher` killed by signal 9 (SIGKILL); restarting in", timeout=30)
        up.wait_line("restarted `whk dispatcher`", timeout=30)
        (back,) = _wait(lambda: up.dispatcher_pids() - {victim}, "a new dispatcher heartbeat", timeout=30)
        assert back != victim
        polls_after = watch.polls + 3
        _wait(lambda: watch.polls >= polls_after, "health polled after the restart")
        watch.close()
        assert watch.failures == [], watch.failures  # the API never stopped answering
        assert up.postmaster_pid() == postmaster  # PostgreSQL never restarted
        assert psutil.pid_exists(postmaster)
        (row,) = up.sql(
            "SELECT state, restarts, last_exit FROM whk.supervised_processes WHERE name = 'dispatcher'"
        )
        assert row == ("running", 1, "killed by signal 9 (SIGKILL)")
        assert "its error is printed above" not in up.output
        # The API is supervised the same way: killed, it is back and answering.
        ((api_pid,),) = up.sql("SELECT pid FROM whk.supervised_processes WHERE name = 'api'")
        os.kill(api_pid, signal.SIGKILL)
        up.wait_line("`whk api` killed by signal 9 (SIGKILL); restarting in", timeout=30)
        _wait(lambda: _answers(up.health), "health answering from the restarted API", timeout=60)
        assert up.postmaster_pid() == postmaster
    finally:
        if watch is not None:
            watch.close()
        out = _stop_clean(up, signal.SIGTERM)
    assert "postgres stopped" in out


def test_a_dispatcher_that_keeps_crashing_is_reported_failing_and_nothing_else_stops(data_dir: Path):
    up, _key = _run_once(data_dir, port_for.select_random())
    try:
        (victim,) = _wait(up.dispatcher_pids, "the dispatcher's heartbeat")
        postmaster = up.postmaster_pid()
        # Every restart now fails at start-up: its role may no longer log in.
        up.sql("ALTER ROLE whk_dispatcher NOLOGIN")
        os.kill(victim, signal.SIGKILL)
        up.wait_line("`whk dispatcher` exited with code 1; FAILING: 5 crashes within 60 s", timeout=120)

        def failing() -> dict[str, Any] | None:
            body = up.health_json()
            rows = [p for p in body.get("supervised", []) if p["name"] == "dispatcher"]
            return body if rows and rows[0]["state"] == "failing" else None

        body = _wait(failing, "health reports the dispatcher failing", timeout=30)
        assert body["status"] == "degraded"
        assert any("`whk dispatcher` under `whk up`" in p and "is failing" in p for p in body["problems"])
        api = [p for p in body["supervised"] if p["name"] == "api"]
        assert api and api[0]["state"] == "running"
        assert up.proc.poll() is None
        assert up.postmaster_pid() == postmaster
        # Fixed, it comes back by itself at the next slow retry.
        up.sql("ALTER ROLE whk_dispatcher LOGIN")
        _wait(up.dispatcher_pids, "the dispatcher back after the fix", timeout=60)
    finally:
        _stop_clean(up)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data directory to another OS user")
def test_data_dir_the_server_user_cannot_reach_is_named_with_the_fix():
    parent = Path(tempfile.mkdtemp(prefix="whk-up-0700-"))  # mode 0700, owned by root
    try:
        proc = subprocess.run(
            [WHK, "up"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("WHK_")},
                "WHK_DATA_DIR": str(parent / "data"),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        user = subprocess.run(
            [str(Path(__file__).resolve().parents[2] / "scripts" / "pg-run"), "--os-user"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert (
            f"PostgreSQL runs as the OS user {user!r}, which cannot enter {parent} (mode 0700, owner root)"
            in proc.stderr
        )
        assert f"chmod o+x {parent}" in proc.stderr
        assert "initdb failed" not in proc.stderr
    finally:
        shutil.rmtree(parent, ignore_errors=True)
