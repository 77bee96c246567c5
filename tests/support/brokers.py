"""Real message brokers for tests, started by the harness like PostgreSQL: Debian's ``redis-server`` on a
free loopback port with its data in a temp dir (``scripts/setup-brokers`` installs it).

``RedisServer`` can be killed (``kill``, SIGKILL: nothing flushed on the way out) and started again on the
same port and directory; with ``durable=True`` it keeps an append-only file synced on every write
(``appendfsync always``), so whatever it acknowledged survives the kill.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import port_for
import pytest
import redis

from tests.support.wait import wait_for

__all__ = ["RedisServer", "redis_server", "redis_server_bin"]


def redis_server_bin() -> str:
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        pytest.fail("redis-server is missing: run scripts/setup-brokers (make test does)")
    return path


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1 (see the module docstring)."""

    def __init__(self, directory: Path, *, durable: bool = False) -> None:
        self.dir = directory
        self.port = port_for.select_random()
        self.durable = durable
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, stream: str, **query: int) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis://127.0.0.1:{self.port}/{stream}" + (f"?{q}" if q else "")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=2)

    def start(self) -> None:
        args = [
            redis_server_bin(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 10, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"redis-server exited ({self.proc.returncode}): {log}")
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis.exceptions.ConnectionError:
            return False

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-conversation."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def redis_server(*, durable: bool = False) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for the block, its directory removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="whk-redis-"))
    server = RedisServer(directory, durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
