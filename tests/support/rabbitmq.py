"""A throwaway RabbitMQ server for tests, started like the PostgreSQL one: private directories, free ports.

Debian's ``rabbitmq-server`` (installed by the project's set-up when missing) runs from
``/usr/lib/rabbitmq/bin/rabbitmq-server`` directly: the ``/usr/sbin`` wrapper switches to the
``rabbitmq`` user and uses ``/var/lib/rabbitmq``, and we want neither. RabbitMQ runs as root.

Everything the node writes lives under one temporary directory: Mnesia and message store, logs, the
config file (AMQP listener on 127.0.0.1 only), an empty plugins file, an empty ``rabbitmq-env.conf``
(so ``/etc/rabbitmq/rabbitmq-env.conf`` is not read) and ``HOME`` with a random Erlang cookie. The node
name is unique (``whk-<random>@localhost``); the AMQP port, the distribution port and the port mapper
(epmd) port are free ports chosen here. The port mapper is our own foreground ``epmd`` on 127.0.0.1 and
that private port: Erlang finds it running and starts no daemon, so nothing outlives ``stop()`` and a
shared epmd on 4369 is never touched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import aio_pika
import port_for

from whk.amqp_connect import amqp_connect

__all__ = ["RABBITMQ_SERVER", "RabbitServer", "rabbitmq_available", "start_rabbitmq"]

RABBITMQ_SERVER = Path(os.environ.get("WHK_RABBITMQ_SERVER", "/usr/lib/rabbitmq/bin/rabbitmq-server"))
_EPMD_CANDIDATES = ("/usr/bin/epmd", "/usr/lib/erlang/bin/epmd")


def _epmd() -> str | None:
    return shutil.which("epmd") or next((p for p in _EPMD_CANDIDATES if Path(p).exists()), None)


def rabbitmq_available() -> bool:
    return RABBITMQ_SERVER.exists() and _epmd() is not None


def _free_port() -> int:
    return int(port_for.select_random())


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def _amqp_ready(url: str) -> bool:
    """True when a full AMQP handshake (guest login, a channel) succeeds."""
    try:
        connection = await amqp_connect(url, timeout=5)
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError, ConnectionError):
        return False
    try:
        channel = await connection.channel()
        await channel.close()
        return True
    finally:
        await connection.close()


def _probe(url: str) -> bool:
    # In a thread of its own: asyncio.run must not touch the event loop pytest-asyncio keeps for the session.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _amqp_ready(url)).result()


@dataclass
class RabbitServer:
    """One private RabbitMQ node. ``url(vhost)`` for clients; ``stop()``/``start()``/``restart()`` for fault
    tests (data and ports survive a restart, so durable queues and persistent messages do too)."""

    base: Path
    port: int
    dist_port: int
    epmd_port: int
    nodename: str
    cookie: str
    _server: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _epmd: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.base / "server.out"

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(self.base / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _write_files(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.base / sub).mkdir(mode=0o700, exist_ok=True)
        cookie = self.base / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(self.cookie)
            cookie.chmod(0o400)
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            # A test machine's disk may be nearly full; the 50 MB default would block every publisher.
            "disk_free_limit.absolute = 1MB\n"
            "log.file.level = info\n"
        )

    def _start_epmd(self, deadline: float) -> None:
        epmd = _epmd()
        assert epmd is not None, "epmd (Erlang's port mapper) is not installed"
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        while not _listening(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not listen on 127.0.0.1:{self.epmd_port}")
            time.sleep(0.05)

    def start(self, timeout: float = 120.0) -> None:
        """Start the node (and its port mapper) and wait until an AMQP client can log in."""
        deadline = time.monotonic() + timeout
        self._write_files()
        if self._epmd is None or self._epmd.poll() is not None:
            self._start_epmd(deadline)
        with self.log_path.open("ab") as out:
            self._server = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                env=self.env(),
                cwd=self.base,  # erl_crash.dump, if any, lands here
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while not (_listening(self.port) and _probe(self.url())):
            if self._server.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited ({self._server.returncode}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rabbitmq-server not ready within {timeout:g} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def stop_server(self, timeout: float = 60.0) -> None:
        """Stop the node (SIGTERM: a clean shutdown; SIGKILL to its group past the deadline)."""
        proc, self._server = self._server, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # The script waits for the VM; anything left in its group (the VM's helpers) goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the node and our port mapper."""
        self.stop_server()
        epmd, self._epmd = self._epmd, None
        if epmd is not None and epmd.poll() is None:
            epmd.terminate()
            try:
                epmd.wait(10)
            except subprocess.TimeoutExpired:
                epmd.kill()
                epmd.wait(10)

    def restart(self, timeout: float = 120.0) -> None:
        """Stop and start the node on the same data and ports (the port mapper keeps running)."""
        self.stop_server()
        self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Remove the node's directory (after ``stop()``)."""
        shutil.rmtree(self.base, ignore_errors=True)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl`` against this node (a CLI VM starts each time: seconds, use sparingly)."""
        ctl = RABBITMQ_SERVER.with_name("rabbitmqctl")
        out = subprocess.run(
            [str(ctl), "-n", self.nodename, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
        return out.stdout


def start_rabbitmq(timeout: float = 120.0) -> RabbitServer:
    """A started private node; the caller calls ``stop()`` and then ``cleanup()`` (removes its directory)."""
    base = Path(tempfile.mkdtemp(prefix="whk-rabbitmq-"))
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(_free_port())
    port, dist_port, epmd_port = sorted(ports)
    server = RabbitServer(
        base=base,
        port=port,
        dist_port=dist_port,
        epmd_port=epmd_port,
        nodename=f"whk-{secrets.token_hex(4)}@localhost",
        cookie=secrets.token_hex(16).upper(),
    )
    try:
        server.start(timeout)
    except BaseException:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return server
