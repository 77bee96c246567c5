"""The `whk` command line: run the service, its parts, and the DBA's migration tools.

Operational errors (unreachable database, wrong schema version, bad setting, broken migration) print one
line with a hint and exit non-zero; `--debug` (or WHK_DEBUG=true) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from whk import __version__, catalog, migrate
from whk.db import check_schema_version, connect
from whk.errors import MigrationError, WhkError
from whk.mockcli import add_mock_parser
from whk.settings import Settings, configuration_markdown, load_settings
from whk.sqlfiles import sql_root

EXIT_ERROR = 1
EXIT_USAGE = 2


def _echo(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- db
def cmd_db_migrate(settings: Settings, args: argparse.Namespace) -> int:
    files = migrate.discover()
    with connect(settings) as conn:
        applied = migrate.migrate(conn, files, target=args.target, echo=_echo)
        st = migrate.status(conn, files)
    _echo(f"schema at version {st.database_version} ({len(applied)} applied now)")
    return 0


def cmd_db_status(settings: Settings, _args: argparse.Namespace) -> int:
    with connect(settings) as conn:
        st = migrate.status(conn)
    for a in st.applied:
        checksum = a.checksum[:12] if a.checksum else "(psql: recorded on next migrate)"
        _echo(
            f"applied  {a.version:04d}_{a.name:<28} {a.applied_at:%Y-%m-%d %H:%M:%S%z}"
            f"  {a.applied_by}  {checksum}"
        )
    for p in st.pending:
        _echo(f"pending  {p.label}")
    _echo(f"database version {st.database_version}, code version {st.code_version}")
    return 0


def cmd_db_plan(settings: Settings, _args: argparse.Namespace) -> int:
    with connect(settings) as conn:
        st = migrate.status(conn)
    if not st.pending:
        _echo("-- nothing pending")
        return 0
    for p in st.pending:
        _echo(f"-- ===== {p.path.name} (sha256 {p.checksum})")
        _echo(p.text.rstrip())
    return 0


def cmd_db_verify(settings: Settings, _args: argparse.Namespace) -> int:
    """Compare the live catalog with a scratch database built from this code's migrations."""
    import psycopg

    from whk.db import require_dsn

    dsn = require_dsn(settings)
    scratch = f"whk_verify_{os.getpid()}"
    with connect(settings) as conn:
        check_schema_version(conn)
        live = catalog.snapshot(conn)
        try:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        except psycopg.Error as exc:
            raise MigrationError(
                f"verify needs a scratch database: {exc.diag.message_primary}",
                hint="run it as a role with CREATEDB",
            ) from exc
    try:
        scratch_dsn = psycopg.conninfo.make_conninfo(dsn, dbname=scratch)
        with psycopg.connect(scratch_dsn, autocommit=True) as sconn:
            migrate.migrate(sconn)
            expected = catalog.snapshot(sconn)
    finally:
        with connect(settings) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    delta = catalog.diff(expected, live, labels=("expected (migrations)", "live database"))
    if delta:
        _echo(delta)
        raise MigrationError(
            "the live schema differs from what the migrations create", hint="the diff above names each object"
        )
    _echo(f"live schema matches the migrations ({len(live)} objects)")
    return 0


# --------------------------------------------------------------------------- services
def _service(module: str) -> Callable[[Settings], int]:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise WhkError(f"{module} is not available in this build", hint="reinstall WHK") from exc
    main: Callable[[Settings], int] = mod.main
    return main


def cmd_dispatcher(settings: Settings, _args: argparse.Namespace) -> int:
    return _service("dispatcher.app")(settings)


def cmd_api(settings: Settings, _args: argparse.Namespace) -> int:
    return _service("api.main")(settings)


def cmd_config(_settings: Settings, _args: argparse.Namespace) -> int:
    _echo(configuration_markdown())
    return 0


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    from whk.pgserver import PrivateServer

    server: PrivateServer | None = None
    env = dict(os.environ)
    if not settings.core.database_url:
        server = PrivateServer(settings.core.data_dir)
        created = server.prepare()
        _echo(f"postgres: {'initialised' if created else 'reusing'} {server.pgdata}")
        server.start()
        dsn = server.ensure_database()
        settings = settings.with_database_url(dsn)
        env["WHK_DATABASE_URL"] = dsn
    if settings.core.allow_private_cidrs:
        nets = ",".join(str(n) for n in settings.core.allow_private_cidrs)
        _echo(f"WARNING: SSRF guard exempts {nets} (WHK_ALLOW_PRIVATE_CIDRS) - development only")
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    old_int = signal.signal(signal.SIGINT, _stop)
    old_term = signal.signal(signal.SIGTERM, _stop)
    try:
        with connect(settings) as conn:
            migrate.migrate(conn, echo=_echo)
            if server is not None:
                # The embedded default is a playground: the (idempotent) demo ERP gives it tables.
                conn.execute((sql_root() / "demo" / "erp.sql").read_bytes())
                _echo("demo ERP: schema erp (users, orders, products) captured; see docs/capture.md")
            _bootstrap_banner(settings, conn, developer_key=server is not None)
        whk_bin = str(Path(sys.executable).with_name("whk"))
        for part in ("api", "dispatcher"):
            children[part] = subprocess.Popen([whk_bin, part], env=env)
        base = f"http://{settings.api.host}:{settings.api.port}"
        _echo(f"API:     {base}/api/whk/  (docs {base}/schema/swagger, OpenAPI {base}/schema/openapi.json)")
        _echo(f"Health:  {base}/api/whk/monitoring/health")
        if server is not None:
            _echo(f"psql:    psql '{settings.core.database_url}'")
        _echo("Ctrl-C stops everything.")
        while not stopping:
            for part, child in children.items():
                if child.poll() is not None:
                    raise WhkError(
                        f"`whk {part}` exited with code {child.returncode}", hint="its error is printed above"
                    )
            time.sleep(0.2)
        _echo("stopping…")
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=settings.dispatcher.shutdown_grace + 5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if server is not None:
            server.stop()
            _echo("postgres stopped")
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _bootstrap_banner(settings: Settings, conn: Any, *, developer_key: bool) -> None:
    """On the embedded default, print a development admin key so a newcomer can call the API at once."""
    if not developer_key:
        return
    try:
        keys = importlib.import_module("api.keys")
    except ModuleNotFoundError:
        return
    key = keys.create_api_key(conn, admin=True, consumer_id=None, name="make-up development key", scopes=None)
    _echo(f"Admin API key (development, shown once): {key}")
    _echo(
        f"  curl -H 'Authorization: Bearer {key}' http://{settings.api.host}:{settings.api.port}/api/whk/webhooks"
    )


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    keys = importlib.import_module("api.keys")
    with connect(settings) as conn:
        check_schema_version(conn)
        key = keys.create_api_key(
            conn, admin=args.admin, consumer_id=args.consumer, name=args.name, scopes=None
        )
    _echo(key)
    print("store it now: it is shown only once", file=sys.stderr)
    return 0


def cmd_secrets_rotate(settings: Settings, _args: argparse.Namespace) -> int:
    secrets_mod = importlib.import_module("api.keys")
    rotate: Callable[[Settings], int] = secrets_mod.rotate_command
    return rotate(settings)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whk", description="WHK: PostgreSQL-native webhooks for ERP systems.")
    p.add_argument("--version", action="version", version=f"whk {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "up",
        help="run everything: private PostgreSQL (if WHK_DATABASE_URL is unset), migrations, API, dispatcher",
    ).set_defaults(func=cmd_up)
    sub.add_parser("api", help="run the management API").set_defaults(func=cmd_api)
    sub.add_parser("dispatcher", help="run a delivery dispatcher").set_defaults(func=cmd_dispatcher)
    sub.add_parser("config", help="print every WHK_* setting with its default").set_defaults(func=cmd_config)

    db = sub.add_parser("db", help="schema migrations (forward-only)")
    dbsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    mig = dbsub.add_parser("migrate", help="apply pending migrations (serialised by an advisory lock)")
    mig.add_argument("--target", type=int, default=None, help="stop after this version")
    mig.set_defaults(func=cmd_db_migrate)
    dbsub.add_parser("status", help="list applied and pending migrations").set_defaults(func=cmd_db_status)
    dbsub.add_parser("plan", help="print the pending SQL without applying it").set_defaults(func=cmd_db_plan)
    dbsub.add_parser("verify", help="compare the live catalog with what the migrations create").set_defaults(
        func=cmd_db_verify
    )

    ak = sub.add_parser("apikey", help="API keys")
    aksub = ak.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = aksub.add_parser("create", help="issue a key (printed once)")
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--admin", action="store_true", help="a key that sees every tenant")
    who.add_argument("--consumer", type=int, help="a key of this consumer id")
    create.add_argument("--name", default="cli", help="a label for the key")
    create.set_defaults(func=cmd_apikey_create)

    sec = sub.add_parser("secrets", help="encryption of stored secrets")
    secsub = sec.add_subparsers(dest="secrets_command", required=True, metavar="ACTION")
    secsub.add_parser("rotate", help="re-encrypt every stored secret with the newest key").set_defaults(
        func=cmd_secrets_rotate
    )
    add_mock_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug) or os.environ.get("WHK_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    try:
        settings = load_settings()
        func: Callable[[Settings, argparse.Namespace], int] = args.func
        return func(settings, args)
    except WhkError as exc:
        if debug:
            raise
        print(f"whk: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
