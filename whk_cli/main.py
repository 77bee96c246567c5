"""The `whk` command line: run the service, its parts, and the DBA's migration tools.

Operational errors (unreachable database, wrong schema version, bad setting, broken migration) print one
line with a hint and exit non-zero; `--debug` (or WHK_DEBUG=true) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from whk import __version__, catalog, dbroles, migrate, retention
from whk.db import check_schema_version, connect, require_dsn
from whk.errors import MigrationError, WhkError
from whk.logs import configure_logging
from whk.secretbox import rotate_command
from whk.settings import Settings, configuration_markdown, load_settings
from whk.sqlfiles import sql_root
from whk_cli.export import add_export_parser
from whk_cli.mock import add_mock_parser
from whk_cli.replay import add_replay_parser
from whk_cli.source import add_source_parser
from whk_cli.tail import add_tail_parser

if TYPE_CHECKING:
    from whk.pgserver import PrivateServer

EXIT_ERROR = 1
EXIT_USAGE = 2
DEV_KEY_NAME = "make-up development key"


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


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # pragma: no cover - unreachable, the loop returns at GB


def cmd_db_retention(settings: Settings, args: argparse.Namespace) -> int:
    """Run retention now, or (--dry-run) show what it would remove with sizes."""
    with connect(settings) as conn:
        check_schema_version(conn)
        if args.dry_run:
            rows = retention.plan(conn)
            total = 0
            for r in rows:
                rows_txt = "" if r.est_rows is None else f"~{r.est_rows} rows, "
                _echo(
                    f"{r.kind:<10} {r.item:<42} before {r.horizon:%Y-%m-%d %H:%M}  {r.action:<32}"
                    f" {rows_txt}{_size(r.bytes)}"
                )
                if r.action in ("drop partition", "batched delete"):
                    total += r.bytes or 0
            _echo(f"would free about {_size(total)} (dry run: nothing removed)")
            return 0
        report = retention.run(conn)
    for name in report.dropped:
        _echo(f"dropped  {name}")
    for name, why in report.kept.items():
        _echo(f"kept     {name}: {why}")
    for kind, n in report.deleted.items():
        _echo(f"deleted  {n} {kind} rows")
    _echo(f"freed {_size(report.freed_bytes)} of partitions")
    return 0


def cmd_db_new_migration(_settings: Settings, args: argparse.Namespace) -> int:
    from whk import migration_writer

    path = migration_writer.new_migration(
        args.name, args.why, functions=args.function or (), files=args.file or (), include_all=args.all
    )
    _echo(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- services
# Each application is imported only by the command that runs it, so `whk dispatcher` never loads the API's
# web stack and `whk db …` loads neither.
def _set_parent_death_signal() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the worker outlives a killed dispatcher until stopped


def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    # Loaded for this command only: it builds requests with the dispatcher's code.
    from whk_cli.explain import cmd_explain as explain_main

    return explain_main(settings, args)


def add_explain_parser(sub: Any) -> None:
    p = sub.add_parser(
        "explain",
        help="show the events one ERP statement would emit, who gets them and the signed requests "
        "(the statement is rolled back)",
    )
    p.add_argument("statement", help="one INSERT, UPDATE, DELETE or MERGE on ERP tables")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_explain)


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
    from dispatcher.app import main as dispatcher_main

    try:
        return dispatcher_main(settings)
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
    from ops.worker import main as worker_main

    return worker_main(settings)


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
    from api.main import main as api_main

    return api_main(settings)


def cmd_config(_settings: Settings, _args: argparse.Namespace) -> int:
    _echo(configuration_markdown())
    return 0


# The children `whk up` supervises, `whk <name>`, each restarted when it dies (whk.supervisor), and the
# database role each one logs in as on the private server (created by the migrations, docs/dba.md).
UP_CHILDREN = {
    "api": dbroles.API_ROLE,
    "dispatcher": dbroles.DISPATCHER_ROLE,
}


def cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    """Private PostgreSQL (unless WHK_DATABASE_URL is set), migrations, then the supervised children.

    A child that dies is restarted (whk.supervisor); PostgreSQL stops only when `whk up` is stopped."""
    from whk.pgserver import PrivateServer
    from whk.supervisor import ChildSpec, StatusTable, Supervisor, supervisor_name

    server: PrivateServer | None = None
    if not settings.core.database_url:
        server = PrivateServer(settings.core.data_dir)
        created = server.prepare()
        _echo(f"postgres: {'initialised' if created else 'reusing'} {server.pgdata}")
        server.start()
        settings = settings.with_database_url(server.ensure_database())
    if settings.core.allow_private_cidrs:
        nets = ",".join(str(n) for n in settings.core.allow_private_cidrs)
        _echo(f"WARNING: SSRF guard exempts {nets} (WHK_ALLOW_PRIVATE_CIDRS) - development only")
    supervisor: Supervisor | None = None
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
        if server is not None:
            server.enable_logins(UP_CHILDREN.values())
        whk_bin = str(Path(sys.executable).with_name("whk"))
        specs = [ChildSpec(part, [whk_bin, part], _child_env(settings, server, part)) for part in UP_CHILDREN]
        status = StatusTable(require_dsn(settings), supervisor_name(), connect_timeout=2.0)
        supervisor = Supervisor(specs, echo=_echo, status=status)
        supervisor.start()
        ready = False
        while not stopping:
            supervisor.tick()
            ready = ready or _announce_when_ready(settings, server)
            time.sleep(0.2)
        _echo("stopping…")
        return 0
    finally:
        if supervisor is not None:
            supervisor.stop(grace=settings.dispatcher.shutdown_grace + 5)
        if server is not None:
            server.stop()
            _echo("postgres stopped")
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _child_env(settings: Settings, server: PrivateServer | None, part: str) -> dict[str, str]:
    """The environment of `whk <part>`: on the private server it logs in as its own role."""
    env = dict(os.environ)
    env["WHK_DATABASE_URL"] = (
        server.dsn(user=UP_CHILDREN[part]) if server is not None else require_dsn(settings)
    )
    return env


def _announce_when_ready(settings: Settings, server: PrivateServer | None) -> bool:
    """Print where to reach WHK once the API's health answers; False while it does not answer yet."""
    import httpx

    base = f"http://{settings.api.host}:{settings.api.port}"
    health = f"{base}/api/whk/monitoring/health"
    # Listening on every address: ask over loopback.
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(settings.api.host, settings.api.host)  # noqa: S104
    try:
        answer = httpx.get(f"http://{probe_host}:{settings.api.port}/api/whk/monitoring/health", timeout=1.0)
    except httpx.HTTPError:
        return False
    _echo(f"API:     {base}/api/whk/  (docs {base}/schema/swagger, OpenAPI {base}/schema/openapi.json)")
    _echo(f"Health:  {health}")
    if answer.status_code != 200:
        _echo(f"         (answers {answer.status_code}: {answer.text[:300]})")
    if server is not None:
        _echo(f"psql:    psql '{settings.core.database_url}'")
    _echo("Ctrl-C stops everything.")
    return True


def _bootstrap_banner(settings: Settings, conn: Any, *, developer_key: bool) -> None:
    """On the embedded default, print a development admin key so a newcomer can call the API at once.

    One such key is valid at a time: each start revokes the previous ones and prints a new one."""
    if not developer_key:
        return
    from api import keys

    key, revoked = keys.rotate_development_key(conn, name=DEV_KEY_NAME)
    note = f"; {revoked} earlier revoked" if revoked else ""
    _echo(f"Admin API key (development, shown once{note}): {key}")
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
    _echo(f"Alerts:  built-in rules notify {url} (GET {url}/requests lists them; docs/operations.md)")


def cmd_apikey_create(settings: Settings, args: argparse.Namespace) -> int:
    from api import keys

    with connect(settings) as conn:
        check_schema_version(conn)
        key = keys.create_api_key(
            conn, admin=args.admin, consumer_id=args.consumer, name=args.name, scopes=None
        )
    _echo(key)
    print("store it now: it is shown only once", file=sys.stderr)
    return 0


def cmd_secrets_rotate(settings: Settings, _args: argparse.Namespace) -> int:
    return rotate_command(settings)


def cmd_webhooks_provision_secrets(settings: Settings, args: argparse.Namespace) -> int:
    """Give every webhook that waits for a signing secret one now (what the job worker does)."""
    from whk.secretbox import SecretBox
    from whk.webhook_secrets import provision_pending, provision_secret

    box = SecretBox.from_settings(settings)
    with connect(settings) as conn:
        check_schema_version(conn)
        if args.webhook is not None:
            made = provision_secret(conn, box, args.webhook)
            done = [] if made is None else [(args.webhook, made)]
        else:
            done = provision_pending(conn, box, limit=args.limit)
    for webhook_id, new in done:
        _echo(f"webhook {webhook_id}: signing key {new.key_id} provisioned")
    _echo(f"{len(done)} webhook(s) given a signing secret")
    return 0


def cmd_webhooks_secret(settings: Settings, args: argparse.Namespace) -> int:
    """Print a webhook's current signing secret (to hand to its receiver), or exit 1 when it has none."""
    from whk.secretbox import SecretBox
    from whk.webhook_secrets import current_secret

    box = SecretBox.from_settings(settings)
    with connect(settings) as conn:
        check_schema_version(conn)
        secret = current_secret(conn, box, args.webhook_id)
    if secret is None:
        print(
            f"webhook {args.webhook_id} has no current signing secret "
            "(it waits for one: whk webhooks provision-secrets)",
            file=sys.stderr,
        )
        return EXIT_ERROR
    _echo(secret)
    return 0


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
    ret = dbsub.add_parser(
        "retention",
        help="drop expired outbox, attempt-log and delivery-history days; delete old audit rows",
    )
    ret.add_argument("--dry-run", action="store_true", help="show what would go, with sizes; remove nothing")
    ret.set_defaults(func=cmd_db_retention)
    new = dbsub.add_parser(
        "new-migration", help="write the next migration with the current text of sql/functions files"
    )
    new.add_argument("name", help="snake_case name of the migration, e.g. claim_by_key")
    new.add_argument("--why", required=True, help="what the migration changes and why (its first line)")
    new.add_argument("--function", action="append", metavar="F", help="a sql/functions file name (repeat)")
    new.add_argument(
        "--file", action="append", metavar="PATH", help="another sql/ source, e.g. views/kpi_slo.sql (repeat)"
    )
    new.add_argument("--all", action="store_true", help="every fresh-install source (a baseline)")
    new.set_defaults(func=cmd_db_new_migration)

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
    wh = sub.add_parser("webhooks", help="webhook signing secrets")
    whsub = wh.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    prov = whsub.add_parser(
        "provision-secrets", help="give every webhook waiting for a signing secret one (as the worker does)"
    )
    prov.add_argument("--webhook", type=int, help="only this webhook id")
    prov.add_argument("--limit", type=int, default=1000, help="at most this many webhooks (default 1000)")
    prov.set_defaults(func=cmd_webhooks_provision_secrets)
    show = whsub.add_parser("secret", help="print a webhook's current signing secret (whsec_...)")
    show.add_argument("webhook_id", type=int)
    show.set_defaults(func=cmd_webhooks_secret)
    add_mock_parser(sub)
    add_replay_parser(sub)
    add_explain_parser(sub)
    add_source_parser(sub)
    add_tail_parser(sub)
    add_export_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(args.debug) or os.environ.get("WHK_DEBUG", "").lower() in {"1", "true", "yes", "on"}
    try:
        settings = load_settings()
        configure_logging(settings)
        func: Callable[[Settings, argparse.Namespace], int] = args.func
        return func(settings, args)
    except WhkError as exc:
        if debug:
            raise
        print(f"whk: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
