"""A throwaway PostgreSQL server for tests and benchmarks (pytest-postgresql's executor).

The server runs through ``scripts/pg_ctl``, which drops to an unprivileged OS user when we are root
(PostgreSQL refuses to run as root). Its directory is created by us (``server_parent``) and
handed to that user; nothing else has its permissions changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import port_for
import psycopg
from psycopg import sql
from pytest_postgresql.executors import PostgreSQLExecutor

from whk import migrate

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


@dataclass
class PgServer:
    base: Path
    port: int
    executor: PostgreSQLExecutor
    host: str = "127.0.0.1"
    user: str = "postgres"
    databases: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base

    @property
    def bindir(self) -> Path:
        out = subprocess.run([SCRIPTS / "pg-run", "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run pg_ctl against this server's data directory (e.g. ``restart -m immediate``)."""
        return subprocess.run(
            [str(SCRIPTS / "pg_ctl"), *args, "-D", str(self.datadir), "-w", "-l", str(self.base / "pg.log")],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.dsn(), autocommit=True)

    def create_database(self, name: str | None = None, *, template: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = query + sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with self.admin() as conn:
            if template and conn.info.server_version >= 150000:
                # FILE_COPY copies the files (plus two checkpoints, cheap without fsync) instead of
                # writing every page of the template to the WAL as well: half the CPU of a clone, and
                # the WAL of a session that clones a database per test stays small.
                query = query + sql.SQL(" STRATEGY FILE_COPY")
            conn.execute(query)
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def stop(self) -> None:
        try:
            self.executor.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _os_user() -> str:
    out = subprocess.run([SCRIPTS / "pg-run", "--os-user"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _serves(server: PgServer, timeout: float = 30) -> bool:
    """True once OUR server accepts connections on its port (not another one that grabbed the port)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2) as conn:
                row = conn.execute("SHOW data_directory").fetchone()
            return row is not None and Path(str(row[0])).resolve() == server.datadir.resolve()
        except psycopg.OperationalError:
            time.sleep(0.2)  # "the database system is starting up" under load
    return False


# Production durability. pytest-postgresql's executor always passes ``-F`` (fsync off) and our defaults
# turn off synchronous_commit and full_page_writes: fine for tests, but then a "commit" never waits for
# the disk, so benchmarks of commit throughput would measure no durable commit at all (and hide costs
# held across the WAL flush, such as NOTIFY's commit-time lock). Later ``-c`` options override ``-F``.
DURABLE_OPTIONS = "-c fsync=on -c full_page_writes=on -c synchronous_commit=on"


# Where a test session's server keeps its files. Creating and dropping databases is mostly file
# creation and unlinking (a migrated template is ~500 files); on the ext4 disk of the 2-core build VM
# one clone of the template cost 0.3-0.45 s of CPU, on the RAM-backed /dev/shm 0.015-0.03 s. A session
# clones one database per test, so the test server lives in RAM when there is room (CI containers may
# give /dev/shm only 64 MB). WHK_TEST_PG_PARENT names another parent directory.
RAM_DIR = Path("/dev/shm")
RAM_DIR_MIN_FREE = 2 * 1024**3


def server_parent(*, in_ram: bool) -> str | None:
    """The directory a throwaway server's directory is made in (``None``: the system temp dir)."""
    override = os.environ.get("WHK_TEST_PG_PARENT")
    if override:
        return override
    if not in_ram:
        return None
    try:
        stat = os.statvfs(RAM_DIR)
    except OSError:
        return None
    if stat.f_bavail * stat.f_frsize < RAM_DIR_MIN_FREE or not os.access(RAM_DIR, os.W_OK | os.X_OK):
        return None
    return str(RAM_DIR)


def start_server(
    options: str = "", *, attempts: int = 5, durable: bool = False, in_ram: bool = False
) -> PgServer:
    """Start a fresh server on a free TCP port of 127.0.0.1 (and a Unix socket in its directory).

    Several test sessions may run at once on one machine: a port found free can be taken before our
    server binds it, so the server is verified to be ours (its data directory) and started again on
    another port if not. ``durable=True`` runs it with production durability (``DURABLE_OPTIONS``):
    for benchmarks of commits; the default (no fsync) is what tests want. ``in_ram=True`` puts its
    files on /dev/shm when that has room (``server_parent``): for the test session's server, which
    creates and drops a database per test; benchmarks keep theirs on disk, as production would.
    """
    if durable:
        options = f"{DURABLE_OPTIONS} {options}"
    parent = server_parent(in_ram=in_ram and not durable)
    for _ in range(attempts):
        base = Path(tempfile.mkdtemp(prefix="whk-pg-", dir=parent))
        if os.geteuid() == 0:
            shutil.chown(base, user=_os_user())
        port = port_for.select_random()
        executor = PostgreSQLExecutor(
            executable=str(SCRIPTS / "pg_ctl"),
            host="127.0.0.1",
            port=port,
            datadir=str(base / "data"),
            unixsocketdir=str(base),
            logfile=str(base / "pg.log"),
            startparams="-w",
            dbname="postgres",
            postgres_options=(
                " -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=256MB "
                "-c synchronous_commit=off -c full_page_writes=off " + options
            ),
        )
        server = PgServer(base=base, port=port, executor=executor)
        try:
            executor.start()
        except Exception:
            server.stop()
            continue
        if _serves(server):
            return server
        server.stop()
    raise RuntimeError(f"could not start a throwaway PostgreSQL in {attempts} attempts")


def migrate_database(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate.migrate(conn)
