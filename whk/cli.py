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


def _set_parent_death_signal() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the worker outlives a killed dispatcher until stopped


def cmd_dispatcher(settings: Settings, _args: argparse.Namespace) -> int:
    """The delivery engine, plus the operations worker as a child process (WHK_DISPATCHER_RUN_JOBS).

    The jobs run in their own process so that alerting does not depend on the delivery engine's health:
    an engine whose event loop is stuck or saturated still has a worker evaluating "no live dispatcher".
    """
    worker: subprocess.Popen[bytes] | None = None
    if settings.ops.dispatcher_run_jobs:
        with connect(settings) as conn:
            check_schema_version(conn)  # refuse before starting anything
        whk_bin = str(Path(sys.executable).with_name("whk"))
        worker = subprocess.Popen([whk_bin, "worker"], preexec_fn=_set_parent_death_signal)
    try:
        return _service("dispatcher.app")(settings)
    finally:
        if worker is not None:
            if worker.poll() is None:
                worker.terminate()
            try:
                worker.wait(timeout=settings.dispatcher.shutdown_grace + 5)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    return _service("ops.worker")(settings)


def cmd_jobs(settings: Settings, args: argparse.Namespace) -> int:
    """Queued, running and failed jobs, the schedules and their last runs."""
    with connect(settings) as conn:
        check_schema_version(conn)
        counts = conn.execute(
            "SELECT entrypoint, status::text, count(*) FROM whk.pgqueuer "
            "WHERE status IN ('queued', 'picked', 'failed') GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        _echo("jobs (queued / running / failed):")
        if not counts:
            _echo("  none")
        for entrypoint, status, n in counts:
            label = "running" if status == "picked" else status
            _echo(f"  {entrypoint:<20} {label:<8} {n}")
        rows = conn.execute(
            "SELECT id, entrypoint, status::text, attempts, execute_after, updated FROM whk.pgqueuer "
            "WHERE status IN ('queued', 'picked', 'failed') ORDER BY id DESC LIMIT %s",
            [args.limit],
        ).fetchall()
        for job_id, entrypoint, status, attempts, after, updated in rows:
            label = "running" if status == "picked" else status
            _echo(
                f"  #{job_id:<8} {entrypoint:<20} {label:<8} attempts {attempts}  "
                f"next {after:%Y-%m-%d %H:%M:%S}  updated {updated:%H:%M:%S}"
            )
        _echo("schedules:")
        for entrypoint, expression, status, next_run, last_run in conn.execute(
            "SELECT entrypoint, expression, status::text, next_run, last_run FROM whk.pgqueuer_schedules "
            "ORDER BY entrypoint"
        ).fetchall():
            last = f"{last_run:%Y-%m-%d %H:%M:%S}" if last_run else "never"
            _echo(f"  {entrypoint:<20} {expression!r:<18} {status:<8} next {next_run:%H:%M:%S}  last {last}")
        for job, started, ok, detail in conn.execute(
            "SELECT DISTINCT ON (job) job, started_at, ok, detail FROM whk.ops_job_runs "
            "ORDER BY job, started_at DESC"
        ).fetchall():
            outcome = "ok" if ok else ("running" if ok is None else "failed")
            _echo(f"  last run {job:<20} {started:%Y-%m-%d %H:%M:%S}  {outcome}  {detail}")
    return 0


def cmd_alerts(settings: Settings, _args: argparse.Namespace) -> int:
    """Alert rules and their states."""
    with connect(settings) as conn:
        check_schema_version(conn)
        rows = conn.execute(
            "SELECT id, name, coalesce('consumer ' || consumer_id, 'global'), enabled, state, "
            "condition ->> 'metric', last_value, trigger_count, silenced_until > now(), acknowledged_at "
            "FROM whk.whk_06_alertas ORDER BY id"
        ).fetchall()
    _echo(f"{'id':>5}  {'state':<9} {'scope':<13} {'metric':<22} {'value':>10}  fired  name")
    for alert_id, name, scope, enabled, state, metric, value, fired, silenced, acked in rows:
        shown = state if enabled else "disabled"
        flags = (" [silenced]" if silenced else "") + (" [acknowledged]" if acked else "")
        val = "-" if value is None else f"{value:.4g}"
        _echo(
            f"{alert_id:>5}  {shown:<9} {scope:<13} {metric or '?':<22} {val:>10}  {fired:>5}  {name}{flags}"
        )
    return 0


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
            _demo_alert_channel(settings, conn, demo=server is not None)
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


def _demo_alert_channel(settings: Settings, conn: Any, *, demo: bool) -> None:
    """On the embedded default, the built-in alert rules notify the dev mock endpoint (a signed webhook to
    /api/whk/dev/mock/alerts), so a newcomer sees an alert fire and where it went. Added once."""
    if not demo or settings.core.environment != "development":
        return
    row = conn.execute(
        "SELECT count(*) FROM whk.whk_06_alertas WHERE builtin IS NOT NULL AND channels <> '[]'::jsonb"
    ).fetchone()
    if row is not None and row[0] > 0:
        return
    from whk.alertchannels import create_channel
    from whk.secretbox import SecretBox
    from whk.signing import generate_secret

    url = f"http://{settings.api.host}:{settings.api.port}/api/whk/dev/mock/alerts"
    box = SecretBox.from_settings(settings)
    channel_id = create_channel(
        conn, box, consumer_id=None, kind="webhook", target=url, secret=generate_secret()
    )
    conn.execute(
        "UPDATE whk.whk_06_alertas "
        "SET channels = jsonb_build_array(jsonb_build_object('channel_id', %s::bigint)) "
        "WHERE builtin IS NOT NULL AND channels = '[]'::jsonb",
        [channel_id],
    )
    _echo(f"Alerts:  built-in rules notify {url} (see GET /api/whk/dev/mock/alerts, docs/operations.md)")


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
    sub.add_parser(
        "dispatcher", help="run a delivery dispatcher (and the operations worker, WHK_DISPATCHER_RUN_JOBS)"
    ).set_defaults(func=cmd_dispatcher)
    sub.add_parser(
        "worker", help="run only the operations jobs (alert evaluation, notifications, partitions)"
    ).set_defaults(func=cmd_worker)
    jobs = sub.add_parser("jobs", help="list queued, running and failed jobs and the schedules")
    jobs.add_argument("--limit", type=int, default=20, help="how many jobs to list one by one")
    jobs.set_defaults(func=cmd_jobs)
    sub.add_parser("alerts", help="list alert rules and their states").set_defaults(func=cmd_alerts)
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
