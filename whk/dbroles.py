"""Least privilege for WHK's processes: the role each one connects as, and the start-up check.

The migrations create one NOLOGIN role per process (``sql/schema/900_process_roles.sql``): ``whk_app``
(API), ``whk_dispatcher`` (dispatcher and operations worker), ``whk_readonly`` (people and dashboards
that only look). A process connects as its role either by logging in as it (``whk up`` does this on its
private server; elsewhere see docs/dba.md) or, with a privileged DSN, by ``SET ROLE`` on every connection
(WHK_API_DB_ROLE / WHK_DISPATCHER_DB_ROLE, see ``with_role``).

``check_role`` runs once at start-up: a process whose effective role is a superuser, or the owner of
WHK's tables (or a member of it), could rewrite the audit trail or the schema. It logs a warning in
development and raises ``PrivilegedDatabaseRole`` in production, unless WHK_ALLOW_PRIVILEGED_DB_ROLE=true.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from whk.errors import PrivilegedDatabaseRole
from whk.settings import Settings

__all__ = [
    "API_ROLE",
    "DISPATCHER_ROLE",
    "PROCESS_ROLES",
    "READONLY_ROLE",
    "ROLE_SETTINGS",
    "RoleFacts",
    "acheck_role",
    "check_role",
    "privilege_problem",
    "with_audit_marker",
    "with_role",
]

API_ROLE = "whk_app"
DISPATCHER_ROLE = "whk_dispatcher"
READONLY_ROLE = "whk_readonly"
# The role each `whk` service should connect as, and the setting that makes a privileged DSN act as it
# (both named in the start-up warning). The operations worker shares the dispatcher's role and setting.
PROCESS_ROLES = {"api": API_ROLE, "dispatcher": DISPATCHER_ROLE, "worker": DISPATCHER_ROLE}
ROLE_SETTINGS = {
    "api": "WHK_API_DB_ROLE",
    "dispatcher": "WHK_DISPATCHER_DB_ROLE",
    "worker": "WHK_DISPATCHER_DB_ROLE",
}

# The effective role (after any SET ROLE), whether it is a superuser, and whether it owns (or may become
# the owner of) WHK's tables; the ledger table stands for them all.
_FACTS_SQL = """
SELECT current_user::text, r.rolsuper,
       coalesce(pg_catalog.pg_has_role(current_user, c.relowner, 'MEMBER'), false)
FROM pg_catalog.pg_roles r
LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass('whk.schema_migrations')
WHERE r.rolname = current_user
"""


@dataclass(frozen=True, slots=True)
class RoleFacts:
    """What the database says about the role a process acts as."""

    role: str
    superuser: bool
    owner: bool


def privilege_problem(facts: RoleFacts) -> str | None:
    """Why ``facts`` describe a role too privileged for a WHK process, or None."""
    if facts.superuser:
        return f"it is connected as {facts.role!r}, a superuser"
    if facts.owner:
        return f"it is connected as {facts.role!r}, the owner of WHK's tables (or a member of it)"
    return None


def with_role(settings: Settings, role: str | None) -> Settings:
    """Settings whose DSN makes every connection start as ``role`` (``SET ROLE`` through the startup
    options); unchanged when ``role`` is None."""
    if not role or not settings.core.database_url:
        return settings
    dsn = settings.core.database_url
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    options = f"{params.get('options') or ''} -c role={role}".strip()
    return settings.with_database_url(psycopg.conninfo.make_conninfo(dsn, options=options))


# Session setting a process that writes its own audit rows sets on every connection (``with_audit_marker``):
# the SQL audit trigger (whk.audit_sql_change) then leaves its changes alone, so each change is audited
# once, by the process, with its best actor (the API principal, the dispatcher). Honoured only for the
# process roles (members of whk_app or whk_dispatcher): any other role's SQL is always audited.
AUDIT_MARKER = "whk.audited_by"


def with_audit_marker(settings: Settings, process: str) -> Settings:
    """Settings whose DSN marks every connection as audited by ``process`` (``-c whk.audited_by=…``)."""
    if not settings.core.database_url:
        return settings
    dsn = settings.core.database_url
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    options = f"{params.get('options') or ''} -c {AUDIT_MARKER}={process}".strip()
    return settings.with_database_url(psycopg.conninfo.make_conninfo(dsn, options=options))


def _facts(row: Any) -> RoleFacts:
    return RoleFacts(role=str(row[0]), superuser=bool(row[1]), owner=bool(row[2]))


def _judge(facts: RoleFacts, settings: Settings, process: str, log: logging.Logger) -> None:
    problem = privilege_problem(facts)
    if problem is None:
        return
    role = PROCESS_ROLES.get(process, f"whk_{process}")
    role_setting = ROLE_SETTINGS.get(process, f"WHK_{process.upper()}_DB_ROLE")
    if settings.core.allow_privileged_db_role:
        log.warning("`whk %s`: %s (accepted: WHK_ALLOW_PRIVILEGED_DB_ROLE=true)", process, problem)
        return
    hint = (
        f"connect it as {role} (docs/dba.md), or set {role_setting}={role}; "
        "WHK_ALLOW_PRIVILEGED_DB_ROLE=true accepts the risk"
    )
    if settings.core.environment == "production":
        raise PrivilegedDatabaseRole(
            f"`whk {process}` refuses to start: {problem}, which could rewrite the audit trail", hint=hint
        )
    log.warning("`whk %s`: %s, which could rewrite the audit trail; %s", process, problem, hint)


def check_role(
    conn: psycopg.Connection[Any], settings: Settings, process: str, log: logging.Logger
) -> RoleFacts:
    """Warn (development) or raise ``PrivilegedDatabaseRole`` (production) when ``conn`` is privileged."""
    row = conn.execute(_FACTS_SQL).fetchone()
    facts = _facts(row)
    _judge(facts, settings, process, log)
    return facts


async def acheck_role(
    conn: psycopg.AsyncConnection[Any], settings: Settings, process: str, log: logging.Logger
) -> RoleFacts:
    """``check_role`` on an async connection."""
    cur = await conn.execute(_FACTS_SQL)
    facts = _facts(await cur.fetchone())
    _judge(facts, settings, process, log)
    return facts
