"""Delivery benchmark: the dispatcher against baselines measured in the same run, same receiver.

Prints:
- ``GOAL deliver_vs_raw_aiohttp``: immediate-mode events/s through `whk dispatcher` ÷ a bare aiohttp POST
  loop to the same receiver (the httpx default-pool figure is printed beside it);
- ``GOAL deliver_vs_pgqueuer_relay``: the same immediate drain ÷ the textbook design, one pgqueuer job per
  delivery (``bench/pgqueuer_relay.py``: asyncpg driver, batch dequeue, the same signing and aiohttp
  client), so the choice of a hand-written hot path stays a measured fact;
- ``GOAL batch_events_per_s``: batch mode (1,000 events per request) events/s;
- ``GOAL latency_p50_ms`` / ``GOAL latency_p99_ms``: commit -> arrival at 500 events/s steady (pgbench
  commits single-row INSERTs at that rate on a table captured by whk.enable_capture, woken by its NOTIFY);
- ``GOAL claim_1m_vs_1k``: time of one claim with 1,000,000 pending for another endpoint ÷ with 1,000;
- ``GOAL drain_rss_mb``: the dispatcher's peak RSS while draining a 1,000,000-delivery backlog;
- ``INFO raw_aiohttp_cpu_us_per_request`` / ``INFO immediate_cpu_us_per_event`` / ``INFO
  batch_cpu_us_per_event``: CPU per request or event of each process taking part (the raw loop's client and
  the receiver; the dispatcher, every PostgreSQL process and the receiver, counted from the first arrival
  so the dispatcher's start-up is left out): on this 2-core machine the sum bounds what a drain can reach;
- ``GOAL drain_after_a_year_of_partitions_vs_fresh``: the immediate drain after the housekeeping made the
  partitions of a year at the default retention (``whk.create_partitions``, sized by
  ``whk.partition_period``), their tables still empty ÷ the same drain on a fresh install; ``INFO
  partitions_after_a_year`` counts them per table;
- ``GOAL drain_with_history_vs_empty``: the immediate drain beside BENCH_HISTORY (default 5,000,000)
  delivered deliveries with their attempts ÷ the same drain with the same partitions and an empty history;
- ``GOAL drain_during_retention_vs_without``: that drain while retention drops the expired day of the
  history that holds a fifth of it (``whk.drop_partitions``, the job worker's call) ÷ without; ``INFO
  retention_drop`` says what the drop removed (rows, bytes) and how long it took;
- ``INFO immediate_disk_bytes_per_event``: disk per delivered event of the delivery history (deliveries
  and attempts, with indexes) and of the outbox, after the immediate drain;
- ``INFO immediate_floor`` / ``INFO batch_floor``: PostgreSQL's CPU per event for only the writes the data
  model needs (outbox row marked routed, delivery row inserted and updated, attempt rows), set-based with no
  logic, and the events/s that allows if PostgreSQL had every core: what the schema itself permits here.

Events are 1 KB. Durations: BENCH_DELIVER_SECONDS (default 5) per throughput phase,
BENCH_DRAIN_SECONDS (default 20) for the drain; BENCH_BACKLOG (default 1000000) sizes the backlog;
BENCH_DELIVER_PHASES (default all: immediate,batch,latency,claim,drain,history) picks phases;
BENCH_LATENCY_RATE (default 500) sets the commit rate of the latency phase (the GOAL is defined at 500/s,
steady) and BENCH_LATENCY_WARMUP (default 2) the seconds of the same load run before the measured ones.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import port_for
import psutil
import psycopg
from psycopg import sql

from bench.capture import pgbench_command
from bench.goals import Goal, report
from bench.http_baseline import httpx_default_posts, raw_aiohttp_posts
from bench.pgqueuer_relay import enqueue_jobs
from tests.support.delivery import TEST_SECRET_KEYS, make_consumer, make_webhook
from tests.support.pg import PgServer, migrate_database, start_server
from whk.sqlfiles import load_queries

REPO = Path(__file__).resolve().parents[1]
WHK = Path(sys.executable).parent / "whk"
BODY = b'{"type":"bench.e","timestamp":"2026-01-01T00:00:00Z","data":{"pad":"' + b"x" * 950 + b'"}}'
CONCURRENCY = 64
PHASES = ("immediate", "batch", "latency", "claim", "drain", "history")


def _env(dsn: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            "WHK_DATABASE_URL": dsn,
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8",
            "WHK_SECRET_KEYS": TEST_SECRET_KEYS,
            "WHK_LOG_LEVEL": "WARNING",
            "WHK_DISPATCHER_CONCURRENCY": str(CONCURRENCY),
            # The raw loop keeps CONCURRENCY requests in flight to the one receiver; by default the dispatcher
            # lets one host use only half its pool (so a stuck host cannot hold every slot). Same limit here,
            # as the webhook's max_in_flight is.
            "WHK_DISPATCHER_HOST_CONCURRENCY": str(CONCURRENCY),
            "WHK_POLL_INTERVAL": "1",
            # The engine alone: the operations worker's CPU would blur the dispatcher's figures.
            "WHK_DISPATCHER_RUN_JOBS": "false",
        }
    )
    env.update(extra)
    return env


def _dispatcher(dsn: str, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(WHK), "dispatcher"], env=_env(dsn, **extra), cwd=REPO)


def _relay(dsn: str, url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.pgqueuer_relay", dsn, url], cwd=REPO)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _control_client() -> httpx.AsyncClient:
    """A client for the receiver's control endpoints (plain HTTP on loopback). Not the default client: that
    one loads the system CA store when created (~40 ms of CPU), and polling /stats five times a second with
    it took ~0.2 of a core from the system under test during a drain (measured)."""
    return httpx.AsyncClient(verify=False, trust_env=False)  # plain HTTP on loopback: nothing to verify


async def _stats(url: str) -> dict[str, Any]:
    async with _control_client() as client:
        resp = await client.get(f"{url}/stats")
        return dict(resp.json())


async def _reset(url: str) -> None:
    async with _control_client() as client:
        await client.post(f"{url}/reset")


async def _raw_aiohttp(url: str, seconds: float, receiver_pid: int) -> tuple[float, str]:
    """Requests/s of a bare aiohttp POST loop, and its CPU us per request (this process, the receiver)."""
    cpu0, receiver0, wall0 = time.process_time(), _cpu_s(receiver_pid), time.monotonic()
    rate = await raw_aiohttp_posts(url, 10**9, CONCURRENCY, BODY, seconds=seconds)
    used = {"client": time.process_time() - cpu0, "receiver": _cpu_s(receiver_pid) - receiver0}
    return rate, cpu_line(used, int(max(rate * seconds, 1.0)), time.monotonic() - wall0)


def _seed_events(dsn: str, event_type: str, count: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for start in range(0, count, 10_000):
            conn.execute(
                """
                INSERT INTO whk.outbox (event_type, data, operation)
                SELECT %(t)s::text, jsonb_build_object('seq', g, 'pad', repeat('x', 950)), 'EMIT'
                FROM generate_series(%(a)s::int, %(b)s::int) g ORDER BY g
                """,
                {"t": event_type, "a": start, "b": min(start + 10_000, count) - 1},
            )


def _cpu_s(pid: int) -> float:
    """CPU seconds used so far by one process (0 once it has ended)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def cpu_line(used: dict[str, float], events: int, elapsed_s: float) -> str:
    """``name=µs ... total=µs cores_busy=N``: CPU per event of each process, and how many of the machine's
    cores they kept busy together (below the core count: the run waited on something other than CPU)."""
    parts = [f"{name}={1e6 * cpu / max(events, 1):.0f}" for name, cpu in used.items()]
    total = 1e6 * sum(used.values()) / max(events, 1)
    busy = sum(used.values()) / elapsed_s if elapsed_s > 0 else 0.0
    return " ".join([*parts, f"total={total:.0f}", f"cores_busy={busy:.2f}"])


class CpuSplit:
    """CPU per event of each process taking part, between two samples (``start`` and ``stop``)."""

    def __init__(self, server: PgServer, pids: dict[str, int]) -> None:
        self._server = server
        self._pids = pids
        self._start: dict[str, float] = {}
        self._used: dict[str, float] = {}
        self._started_at = self._elapsed = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {name: _cpu_s(pid) for name, pid in self._pids.items()}
        # Each PostgreSQL process on its own: a backend that ends between the samples (a previous phase's
        # session) must not subtract its whole life from the total; one that starts counts from zero.
        sample.update({f"pg:{pid}": cpu for pid, cpu in _postgres_cpu_by_pid(self._server).items()})
        return sample

    def start(self) -> None:
        self._start = self._sample()
        self._started_at = time.monotonic()

    def stop(self) -> None:
        end = self._sample()
        self._elapsed = time.monotonic() - self._started_at if self._started_at else 0.0
        used = {name: end[name] - self._start.get(name, 0.0) for name in end if not name.startswith("pg:")}
        used["postgres"] = sum(
            cpu - self._start.get(name, 0.0) for name, cpu in end.items() if name.startswith("pg:")
        )
        self._used = used

    def line(self, events: int) -> str:
        return cpu_line(self._used, events, self._elapsed)


async def _drain(
    server: PgServer,
    receiver_pid: int,
    dsn: str,
    url: str,
    expected: int,
    limit_s: float,
    relay_to: str | None = None,
    **env: str,
) -> tuple[float, str]:
    """Start a dispatcher (or, with ``relay_to``, the one-pgqueuer-job-per-delivery relay posting there),
    wait until the receiver saw ``expected`` events: (events/s first -> last arrival, CPU us per event of
    the deliverer, PostgreSQL and the receiver after the first arrival, so start-up is not counted)."""
    await _reset(url)
    proc = _dispatcher(dsn, **env) if relay_to is None else _relay(dsn, relay_to)
    split = CpuSplit(
        server, {"dispatcher" if relay_to is None else "relay": proc.pid, "receiver": receiver_pid}
    )
    counted_from = 0
    try:
        deadline = time.monotonic() + limit_s
        stats = await _stats(url)
        while stats["events"] < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            stats = await _stats(url)
            if not counted_from and stats["events"]:
                split.start()
                counted_from = stats["events"]
        split.stop()
    finally:
        _stop(proc)
    cpu = split.line(stats["events"] - counted_from)
    if not stats["first"] or stats["events"] < 2:
        return 0.0, cpu
    if stats["events"] < expected:
        print(f"  (only {stats['events']} of {expected} arrived before the time limit)", flush=True)
    return float(stats["events"]) / max(stats["last"] - stats["first"], 1e-3), cpu


async def _latency(
    server: PgServer, dbname: str, url: str, seconds: float, rate: float, warmup: float
) -> tuple[float, float]:
    """Commit -> arrival percentiles while pgbench commits single-row INSERTs on a captured table at
    ``rate`` per second (Poisson arrivals, ``-R``): a real ERP load generated in C, so the load generator
    does not take the CPU the system under test needs (a Python loop cost ~0.5 ms of CPU per commit).
    The goal is defined at a steady rate: the same load runs ``warmup`` seconds first (sessions connected,
    plans cached, buffers warm) and only the commits after it are measured."""
    proc = _dispatcher(server.dsn(dbname))
    try:
        await asyncio.sleep(1.5)
        with tempfile.TemporaryDirectory(prefix="whk-bench-") as tmp:
            script = Path(tmp) / "commit.sql"
            # t_commit (its DEFAULT) is the commit-side clock the receiver subtracts.
            script.write_text("INSERT INTO shop.orders (pad) VALUES (repeat('x', 900));\n")
            os.chmod(tmp, 0o755)
            sent = 0
            for phase_seconds in (warmup, seconds):
                await _reset(url)
                with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
                    conn.execute("TRUNCATE shop.orders")
                if phase_seconds <= 0:
                    continue
                pgbench = await asyncio.create_subprocess_exec(
                    *pgbench_command(server, dbname, script, phase_seconds, clients=1, rate=rate),
                    stdout=asyncio.subprocess.DEVNULL,
                )
                await pgbench.wait()
                with psycopg.connect(server.dsn(dbname), autocommit=True) as conn:
                    row = conn.execute("SELECT count(*) FROM shop.orders").fetchone()
                sent = int(row[0]) if row else 0
                deadline = time.monotonic() + 10
                stats = await _stats(url)
                while stats["events"] < sent and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    stats = await _stats(url)
    finally:
        _stop(proc)
    lat = sorted(stats["latencies"])
    if len(lat) < 10:
        return float("inf"), float("inf")
    q = statistics.quantiles(lat, n=100)
    return q[49] * 1000, q[98] * 1000


def _claim_time(conn: psycopg.Connection[Any], rounds: int = 60) -> float:
    """The fastest of ``rounds`` claims (rolled back): the least disturbed by other load on the machine."""
    samples = []
    for _ in range(rounds):
        with conn.transaction(force_rollback=True):
            t0 = time.perf_counter()
            conn.execute("SELECT count(*) FROM whk.claim_deliveries('bench', 100, 30)").fetchone()
            samples.append(time.perf_counter() - t0)
    return min(samples)


def _backlog(conn: psycopg.Connection[Any], webhook_id: int, consumer_id: int, rows: int) -> None:
    (outbox_id, created_at) = conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation, status, routed_at, commit_seq) "
        "VALUES ('bulk.e', jsonb_build_object('pad', repeat('x', 950)), 'EMIT', 'routed', now(), "
        "nextval('whk.outbox_commit_seq')) RETURNING id, created_at"
    ).fetchone()  # type: ignore[misc]
    conn.execute(
        "INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type, webhook_id, "
        "consumer_id, commit_seq, next_attempt_at) SELECT gen_random_uuid(), %s, %s, 'bulk.e', %s, %s, g, "
        "now() - interval '1 hour' FROM generate_series(1, %s) g",
        [outbox_id, created_at, webhook_id, consumer_id, rows],
    )
    conn.execute(
        "INSERT INTO whk.webhook_runtime (webhook_id) VALUES (%s) ON CONFLICT DO NOTHING", [webhook_id]
    )
    conn.execute("ANALYZE whk.delivery_queue")


def _disk_per_event(dsn: str, events: int) -> str:
    """Bytes on disk per delivered event (heap, TOAST and indexes after a VACUUM) of the delivery history
    (the finished deliveries, the live queue they passed through, and their attempts) and, apart, of the
    outbox that holds the payloads."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "VACUUM whk.delivery_queue, whk.delivery_history, whk.whk_03_entregas_tentativas, whk.outbox"
        )
        row = conn.execute(
            "SELECT pg_total_relation_size('whk.delivery_queue') "
            # Partitioned tables have no storage of their own: their partitions' sizes are summed.
            " + (SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            "    WHERE inhparent = 'whk.delivery_history'::regclass), "
            "(SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            " WHERE inhparent = 'whk.whk_03_entregas_tentativas'::regclass), "
            "(SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
            " WHERE inhparent = 'whk.outbox'::regclass)"
        ).fetchone()
    deliveries, attempts, outbox = (int(v) / max(events, 1) for v in (row or (0, 0, 0)))
    return (
        f"history={deliveries + attempts:.0f} (deliveries={deliveries:.0f} attempts={attempts:.0f}) "
        f"outbox={outbox:.0f} (1 KB events)"
    )


def _history(
    conn: psycopg.Connection[Any], webhook_id: int, consumer_id: int, rows: int, days_ago: int
) -> None:
    """``rows`` delivered deliveries that finished ``days_ago`` days ago (a millisecond apart, before that
    moment), each with its one attempt: the history a dispatcher leaves behind (``whk.delivery_history``,
    its ids drawn from the queue's sequence like the rows moved there), in chunks of 500,000, in the day
    partitions the housekeeping makes."""
    conn.execute(
        "SELECT whk.create_partitions('whk.delivery_history', since => now() - make_interval(days => %s))",
        [days_ago + 1],
    )
    _history_rows(
        conn,
        webhook_id,
        consumer_id,
        rows,
        "now() - make_interval(days => %(days)s, secs => g / 1000.0)",
        {"days": days_ago},
    )


def _history_day(
    conn: psycopg.Connection[Any], webhook_id: int, consumer_id: int, rows: int, days_ago: int
) -> str:
    """A partition of ``whk.delivery_history`` (and of the attempt log) for the one UTC day ``days_ago`` days
    back, as the housekeeping made it then, filled with ``rows`` delivered deliveries spread over that day,
    each with its attempt: a day that retention drops whole. Returns the history partition's name."""
    row = conn.execute(
        "SELECT date_trunc('day', (now() - make_interval(days => %s)) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'",
        [days_ago],
    ).fetchone()
    assert row is not None
    day = row[0]
    names = []
    for table in ("delivery_history", "whk_03_entregas_tentativas"):
        name = f"{table}_p{day:%Y%m%d}"  # whk.create_partitions' name for that day
        conn.execute(
            sql.SQL("CREATE TABLE whk.{} PARTITION OF whk.{} FOR VALUES FROM ({}) TO ({})").format(
                sql.Identifier(name),
                sql.Identifier(table),
                sql.Literal(day),
                sql.Literal(day + timedelta(days=1)),
            )
        )
        names.append(f"whk.{name}")
    # Spread over the day's first 22 hours, so every row lands in the day's partition.
    _history_rows(
        conn,
        webhook_id,
        consumer_id,
        rows,
        "%(day)s::timestamptz + make_interval(secs => 3600 + (g %% 79200) + (g %% 1000) / 1000.0)",
        {"day": day},
    )
    return names[0]


def _history_rows(
    conn: psycopg.Connection[Any],
    webhook_id: int,
    consumer_id: int,
    rows: int,
    finished_at: str,
    params: dict[str, Any],
) -> None:
    """Write ``rows`` delivered deliveries with their attempts, each finished at ``finished_at`` (an SQL
    expression of the row number ``g``), into the history and the attempt log."""
    seq = "pg_get_serial_sequence('whk.delivery_queue', 'id')"
    for start in range(0, rows, 500_000):
        n = min(500_000, rows - start)
        conn.execute(
            f"""
            WITH d AS MATERIALIZED (
                SELECT nextval({seq}) AS id, g, t
                FROM generate_series(%(start)s + 1, %(start)s + %(n)s) g,
                     LATERAL (SELECT {finished_at} AS t) x),
            a AS (
                INSERT INTO whk.whk_03_entregas_tentativas (delivery_id, webhook_id, attempt_no, started_at,
                                                            duration_ms, request_method, request_url,
                                                            request_headers, request_body_size,
                                                            response_status, outcome)
                SELECT d.id, %(w)s, 1, d.t, 3.5, 'POST', 'http://127.0.0.1/history',
                       '{{"webhook-id": "msg_history"}}', 1024, 200, 'delivered'
                FROM d
                RETURNING id, delivery_id)
            -- The columns whk.record_outcomes fills when it moves a delivered row here.
            INSERT INTO whk.delivery_history (id, event_id, outbox_id, event_created_at, event_type,
                                              webhook_id, consumer_id, status, commit_seq, attempts,
                                              schedule_offset, attempt_ids, next_attempt_at,
                                              last_status_code, last_attempt_at, delivered_at, acked_at,
                                              created_at, updated_at, finished_at)
            SELECT d.id, gen_random_uuid(), d.g, d.t - interval '50 milliseconds', 'hist.e', %(w)s, %(c)s,
                   'delivered', d.g, 1, 0, ARRAY[a.id], d.t - interval '40 milliseconds', 200, d.t, d.t, d.t,
                   d.t - interval '40 milliseconds', d.t, d.t
            FROM d JOIN a ON a.delivery_id = d.id
            """,
            {"w": webhook_id, "c": consumer_id, "n": n, "start": start, **params},
        )
    conn.execute("VACUUM ANALYZE whk.delivery_history, whk.whk_03_entregas_tentativas")
    conn.execute("CHECKPOINT")


async def _retention_drop(
    dsn: str, url: str, after: int, stop: asyncio.Event, days: int = 1
) -> tuple[list[Any], float]:
    """Once ``after`` events of the drain have arrived, run delivery-history retention as the job worker
    does (whk/retention.sql, drop_history): ``whk.drop_partitions`` with ``max_drops => 1``, each call its
    own transaction, until ``days`` days are dropped or a call drops nothing (a day kept as busy is tried
    again while the drain runs). Returns the rows of the calls (partition, dropped, reason, bytes) and the
    seconds they took."""
    while not stop.is_set():
        if (await _stats(url))["events"] >= after:
            break
        await asyncio.sleep(0.05)
    drop = load_queries("whk", "retention.sql")["drop_history"]
    answers: list[Any] = []
    took = 0.0
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        while not stop.is_set():
            t0 = time.monotonic()
            cur = await conn.execute(drop)
            rows = await cur.fetchall()
            took += time.monotonic() - t0
            answers.extend(rows)
            if not rows or sum(1 for r in answers if r[1]) >= days:
                break
            if not any(r[1] for r in rows):
                await asyncio.sleep(0.2)  # busy (lock timeout): the next run of the job tries again
    return answers, took


def _postgres_cpu_by_pid(server: PgServer) -> dict[int, float]:
    """CPU seconds used so far by each process of the server (backends and background workers)."""
    pid = int((server.datadir / "postmaster.pid").read_text(encoding="utf-8").split()[0])
    root = psutil.Process(pid)
    # A backend that ended meanwhile counts 0 (_cpu_s).
    return {proc.pid: _cpu_s(proc.pid) for proc in [root, *root.children(recursive=True)]}


def _postgres_cpu_s(server: PgServer) -> float:
    """CPU seconds used so far by every process of the server (backends and background workers)."""
    return sum(_postgres_cpu_by_pid(server).values())


def _floor(
    server: PgServer, dsn: str, webhook_id: int, consumer_id: int, events: int, per_request: int
) -> float:
    """PostgreSQL CPU (us per event) of only the writes the data model needs for each delivered event, with
    no routing logic, claims, breaker, usage or HTTP: the outbox row marked routed, one ``delivery_queue``
    row inserted in flight, one attempt row per ``per_request`` events, and in a later transaction (as a
    dispatcher records them) each delivery moved, delivered, from the queue to ``delivery_history``.
    Set-based, 1,000 events per transaction, one session. ``cores * 1e6 / floor`` is what this schema allows
    on this machine if PostgreSQL had every core and the dispatcher and the receiver none."""
    _seed_events(dsn, "floor.e", events)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        before = _postgres_cpu_s(server)
        for _ in range(events // 1000):
            with conn.transaction():
                row = conn.execute(
                    """
                    WITH p AS (SELECT o.id, o.created_at FROM whk.outbox o WHERE o.status = 'pending'
                               ORDER BY o.id LIMIT 1000 FOR UPDATE SKIP LOCKED),
                    r AS (UPDATE whk.outbox o
                          SET status = 'routed', routed_at = now(),
                              commit_seq = nextval('whk.outbox_commit_seq')
                          FROM p WHERE o.id = p.id AND o.created_at = p.created_at
                          RETURNING o.id, o.created_at, o.event_id, o.event_type, o.commit_seq),
                    f AS (INSERT INTO whk.delivery_queue (event_id, outbox_id, event_created_at, event_type,
                                                           webhook_id, consumer_id, commit_seq, status,
                                                           lease_until, claimed_by)
                          SELECT r.event_id, r.id, r.created_at, r.event_type, %s, %s, r.commit_seq,
                                 'in_flight', now() + interval '30 seconds', 'floor'
                          FROM r
                          RETURNING id)
                    SELECT array_agg(f.id ORDER BY f.id) FROM f
                    """,
                    [webhook_id, consumer_id],
                ).fetchone()
            ids: list[int] = row[0] if row and row[0] else []
            with conn.transaction():
                attempts = conn.execute(
                    """
                    INSERT INTO whk.whk_03_entregas_tentativas
                        (delivery_id, webhook_id, attempt_no, request_method, request_url, request_headers,
                         response_status, outcome, delivery_ids)
                    SELECT ids[k * n + 1], %(webhook)s, 1, 'POST', 'http://127.0.0.1/floor',
                           '{"webhook-id": "msg_floor"}', 200, 'delivered', ids[k * n + 1 : (k + 1) * n]
                    FROM (SELECT %(ids)s::bigint[] AS ids, %(n)s::int AS n) AS x
                    CROSS JOIN generate_series(0, (cardinality(x.ids) - 1) / x.n) AS k
                    RETURNING id, delivery_ids
                    """,
                    {"webhook": webhook_id, "ids": ids, "n": per_request},
                ).fetchall()
                members = [(did, aid) for aid, dids in attempts for did in dids]
                conn.execute(
                    """
                    WITH gone AS (DELETE FROM whk.delivery_queue d
                                  USING unnest(%s::bigint[], %s::bigint[]) AS u(did, aid)
                                  WHERE d.id = u.did
                                  RETURNING d.*, u.aid)
                    INSERT INTO whk.delivery_history
                    SELECT g.id, g.event_id, g.outbox_id, g.event_created_at, g.event_type, g.webhook_id,
                           g.consumer_id, 'delivered', g.ordering_key, g.commit_seq, 1, g.schedule_offset,
                           ARRAY[g.aid], g.next_attempt_at, NULL, NULL, g.batch_id, 200, NULL, now(), now(),
                           NULL, now(), NULL, NULL, NULL, g.payload, NULL, g.created_at, now(), now()
                    FROM gone g
                    """,
                    [[m[0] for m in members], [m[1] for m in members]],
                )
        return (_postgres_cpu_s(server) - before) * 1e6 / events


async def _history_phase(
    server: PgServer, receiver_pid: int, dsn: str, url: str, seconds: float, history: int
) -> list[Goal]:
    """The same immediate drain on a fresh install, then after the partitions a year of housekeeping makes
    (an empty history), then beside ``history`` delivered deliveries (each with its attempt; a fifth of
    them in three days past retention), then while retention drops one of those days. Each figure is the
    median of three drains (one drain of 10,000 events lasts a few seconds and varies by ±20 % from one to
    the next on this machine); each drain of the last kind drops a day."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        consumer = make_consumer(conn, "bench")
        webhook = make_webhook(conn, consumer, f"{url}/history", ["hist.*"], max_in_flight=CONCURRENCY)
        old = make_webhook(conn, consumer, f"{url}/old", ["none.*"])
        # The days the housekeeping schedule keeps made: the recent history's and the drain's own.
        for table in ("whk.delivery_history", "whk.whk_03_entregas_tentativas"):
            conn.execute("SELECT whk.create_partitions(%s, since => now() - interval '3 days')", [table])
    n = int(min(max(2000 * seconds, 2000), 50_000))
    limit = 30 + 6 * seconds

    async def drain() -> float:
        _seed_events(dsn, "hist.e", n)
        rate, _ = await _drain(server, receiver_pid, dsn, url, n, limit)
        return rate

    async def median_drain() -> tuple[float, list[float]]:
        rates = [await drain() for _ in range(3)]
        return statistics.median(rates), rates

    fresh, fresh_rates = await median_drain()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # A year of the hourly housekeeping at the default retention (365 days): the partitions it makes.
        for table in ("whk.outbox", "whk.delivery_history", "whk.whk_03_entregas_tentativas"):
            conn.execute("SELECT whk.create_partitions(%s, since => now() - interval '365 days')", [table])
        made = conn.execute(
            "SELECT string_agg(format('%s=%s', parent, n), ' ' ORDER BY parent::text) "
            "FROM (SELECT parent, count(*) AS n FROM whk.partitions GROUP BY parent) p"
        ).fetchone()
    print(f"INFO partitions_after_a_year {made[0] if made else '?'} (default partition included)", flush=True)
    empty, empty_rates = await median_drain()
    t0 = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        expired = history // 5
        # Three days past the 365-day default of retention.delivered_days, and the rest two days ago.
        days = [_history_day(conn, old, consumer, expired // 3, 400 + k) for k in range(3)]
        _history(conn, webhook, consumer, history - expired // 3 * 3, 2)
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()
        in_days = {
            day: int(row[0])
            for day in days
            if (
                row := conn.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*day.split(".")))
                ).fetchone()
            )
        }
    print(
        f"history: {history} delivered deliveries with attempts written in {time.monotonic() - t0:.0f} s "
        f"(database {size[0] if size else '?'}; {sum(in_days.values())} of them in {', '.join(days)})",
        flush=True,
    )
    full, full_rates = await median_drain()
    during_rates: list[float] = []
    answers: list[Any] = []
    took = 0.0
    for _ in range(3):
        stop = asyncio.Event()
        await _reset(url)  # the drop waits for this drain's arrivals, not the last one's
        retention = asyncio.create_task(_retention_drop(dsn, url, n // 4, stop, days=1))
        during_rates.append(await drain())
        stop.set()
        got, spent = await retention
        answers.extend(got)
        took += spent
    during = statistics.median(during_rates)
    dropped = [(name, size_b) for name, ok, _why, size_b in answers if ok]
    kept = sorted({f"{name} ({why})" for name, ok, why, _size in answers if not ok})
    freed = sum(int(b or 0) for _n, b in dropped)
    rows_gone = sum(in_days.get(name, 0) for name, _b in dropped)

    def rates(values: list[float]) -> str:
        return "/".join(f"{v:.0f}" for v in values)

    print(
        f"immediate drain (median of 3): {fresh:.0f} events/s on a fresh install ({rates(fresh_rates)}), "
        f"{empty:.0f} after a year of partitions, with an empty history ({rates(empty_rates)}), "
        f"{full:.0f} beside {history} rows ({rates(full_rates)}), {during:.0f} while retention dropped a day "
        f"({rates(during_rates)}; {', '.join(n for n, _b in dropped) or 'nothing'})"
        + (f" (kept: {', '.join(kept)})" if kept else ""),
        flush=True,
    )
    print(
        f"INFO retention_drop partitions={len(dropped)} rows={rows_gone} bytes={freed} "
        f"({freed / 2**20:.0f} MB) seconds={took:.3f}",
        flush=True,
    )
    return [
        Goal("drain_after_a_year_of_partitions_vs_fresh", empty / fresh if fresh else 0.0, 0.9),
        Goal("drain_with_history_vs_empty", full / empty if empty else 0.0, 0.9),
        Goal("drain_during_retention_vs_without", during / full if full and dropped else 0.0, 0.9),
    ]


async def _run(seconds: float, drain_seconds: float, backlog: int, phases: set[str], history: int) -> int:
    server = start_server()
    port = port_for.select_random()
    receiver = subprocess.Popen([sys.executable, "-m", "bench._receiver", str(port)], cwd=REPO)  # noqa: ASYNC220
    url = f"http://127.0.0.1:{port}"
    try:
        template = server.create_database("bench_template")
        migrate_database(server.dsn(template))

        phase_dbs: list[str] = []

        def fresh_db() -> str:
            """An empty, migrated database for the next phase. The previous phase's database is dropped
            and a checkpoint taken first, so no autovacuum of its rows or checkpoint of its writes runs
            during the next measurement (seen: the latency phase after the batch phase measured p50 13.6
            ms where it measured 8.5-9.7 ms alone)."""
            while phase_dbs:
                server.drop_database(phase_dbs.pop())
            with server.admin() as admin:
                admin.execute("CHECKPOINT")
            phase_dbs.append(server.create_database(template=template))
            return phase_dbs[-1]

        def fresh() -> str:
            return server.dsn(fresh_db())

        dsn = fresh()
        for _ in range(100):
            try:
                await _stats(url)
                break
            except httpx.TransportError:
                await asyncio.sleep(0.05)

        def floor_info(name: str, per_request: int) -> None:
            """Print the data model's floor for this phase's shape (see _floor), on a fresh database."""
            floor_dsn = fresh()
            with psycopg.connect(floor_dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "floor")
                webhook = make_webhook(conn, consumer, f"{url}/floor", ["floor.*"])
            cpu_us = _floor(server, floor_dsn, webhook, consumer, 20_000, per_request)
            cores = os.cpu_count() or 1
            print(
                f"INFO {name}_floor postgres_cpu_us_per_event={cpu_us:.0f} "
                f"ceiling_events_per_s={cores * 1e6 / cpu_us:.0f} (cores={cores}; the writes the data model "
                "needs per event, set-based, nothing else: the ceiling if PostgreSQL had every core)",
                flush=True,
            )

        goals: list[Goal] = []
        if "immediate" in phases:
            raw, raw_cpu = await _raw_aiohttp(f"{url}/raw", seconds, receiver.pid)
            via_httpx = await httpx_default_posts(f"{url}/httpx", 10**9, CONCURRENCY, BODY, seconds=seconds)
            print(
                f"baseline raw aiohttp: {raw:.0f} req/s; httpx default pool: {via_httpx:.0f} req/s",
                flush=True,
            )
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                make_webhook(conn, consumer, f"{url}/immediate", ["imm.*"], max_in_flight=CONCURRENCY)
            n = int(min(max(raw * seconds, 2000), 100_000))
            _seed_events(dsn, "imm.e", n)
            immediate, immediate_cpu = await _drain(server, receiver.pid, dsn, url, n, 30 + 3 * seconds)
            print(f"immediate: {immediate:.0f} events/s ({n} events)", flush=True)
            print(f"INFO immediate_disk_bytes_per_event {_disk_per_event(dsn, n)}", flush=True)
            # Where the CPU goes (2 cores): what keeps the ratio below 1 is visible in every run.
            print(f"INFO raw_aiohttp_cpu_us_per_request {raw_cpu}", flush=True)
            print(f"INFO immediate_cpu_us_per_event {immediate_cpu}", flush=True)
            print(
                f"httpx default pool: {via_httpx:.0f} req/s ({via_httpx / raw:.2f} of raw aiohttp)",
                flush=True,
            )
            goals.append(Goal("deliver_vs_raw_aiohttp", immediate / raw if raw else 0.0, 0.5))
            floor_info("immediate", 1)
            relay_dsn = fresh()
            await enqueue_jobs(relay_dsn, BODY, n)
            relayed, relay_cpu = await _drain(
                server, receiver.pid, relay_dsn, url, n, 30 + 6 * seconds, relay_to=f"{url}/relay"
            )
            print(f"pgqueuer relay (one job per delivery): {relayed:.0f} events/s ({n} events)", flush=True)
            print(f"INFO pgqueuer_relay_cpu_us_per_event {relay_cpu}", flush=True)
            goals.append(Goal("deliver_vs_pgqueuer_relay", immediate / relayed if relayed else 0.0, 3.0))

        if "batch" in phases:
            dsn = fresh()
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                make_webhook(
                    conn,
                    consumer,
                    f"{url}/batch",
                    ["bat.*"],
                    delivery_mode="batch",
                    batch_size=1000,
                    batch_window_ms=100,
                    max_in_flight=8,
                )
            m = int(min(20_000 * seconds, 100_000))
            _seed_events(dsn, "bat.e", m)
            batch, batch_cpu = await _drain(
                server, receiver.pid, dsn, url, m, 30 + 6 * seconds, WHK_CLAIM_BATCH="1000"
            )
            print(f"batch: {batch:.0f} events/s ({m} events)", flush=True)
            print(f"INFO batch_cpu_us_per_event {batch_cpu}", flush=True)
            goals.append(Goal("batch_events_per_s", batch, 20000))
            floor_info("batch", 1000)

        if "latency" in phases:
            latency_db = fresh_db()
            dsn = server.dsn(latency_db)
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                conn.execute("CREATE SCHEMA shop")
                # Rows that match the seeded order.created schema (id, status): the steady state is valid
                # events (an invalid one is flagged through the slower reference validator).
                conn.execute(
                    "CREATE TABLE shop.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                    "status text NOT NULL DEFAULT 'new', "
                    "t_commit double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()), "
                    "pad text)"
                )
                conn.execute("SELECT whk.enable_capture('shop.orders', 'order')")
                make_webhook(conn, consumer, f"{url}/latency", ["order.*"], max_in_flight=CONCURRENCY)
            rate = float(os.environ.get("BENCH_LATENCY_RATE", "500"))
            warmup = float(os.environ.get("BENCH_LATENCY_WARMUP", "2"))
            p50, p99 = await _latency(server, latency_db, url, seconds, rate, warmup)
            print(f"latency at {rate:g}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms", flush=True)
            goals.append(Goal("latency_p50_ms", p50, 10, higher_is_better=False))
            goals.append(Goal("latency_p99_ms", p99, 50, higher_is_better=False))

        if "claim" in phases or "drain" in phases:
            dsn = fresh()
            with psycopg.connect(dsn, autocommit=True) as conn:
                consumer = make_consumer(conn, "bench")
                busy = make_webhook(conn, consumer, f"{url}/drain", ["none.*"], max_in_flight=CONCURRENCY)
                quiet = make_webhook(conn, consumer, f"{url}/quiet", ["quiet.*"])
                _backlog(conn, quiet, consumer, 1)
                _backlog(conn, busy, consumer, 1000)
                small = _claim_time(conn)
                _backlog(conn, busy, consumer, backlog - 1000)
                large = _claim_time(conn)
            print(
                f"claim: {small * 1000:.2f} ms with 1k pending, {large * 1000:.2f} ms with {backlog}",
                flush=True,
            )
            ratio = large / small if small else float("inf")
            goals.append(Goal("claim_1m_vs_1k", ratio, 2.0, higher_is_better=False))

        if "drain" in phases:
            await _reset(url)
            proc = _dispatcher(dsn)
            peak = 0.0
            try:
                ps = psutil.Process(proc.pid)
                end = time.monotonic() + drain_seconds
                while time.monotonic() < end and proc.poll() is None:
                    peak = max(peak, ps.memory_info().rss / 2**20)
                    await asyncio.sleep(0.2)
                drained = (await _stats(url))["events"]
            finally:
                _stop(proc)
            print(f"drain: {drained} delivered in {drain_seconds:g} s, peak RSS {peak:.0f} MB", flush=True)
            goals.append(Goal("drain_rss_mb", peak, 200, higher_is_better=False))
        if "history" in phases:
            goals.extend(await _history_phase(server, receiver.pid, fresh(), url, seconds, history))
        return report(*goals)
    finally:
        receiver.terminate()
        receiver.wait(10)
        server.stop()


def main(argv: list[str]) -> int:
    del argv
    seconds = float(os.environ.get("BENCH_DELIVER_SECONDS", "5"))
    drain_seconds = float(os.environ.get("BENCH_DRAIN_SECONDS", "20"))
    backlog = int(os.environ.get("BENCH_BACKLOG", "1000000"))
    phases = set(os.environ.get("BENCH_DELIVER_PHASES", ",".join(PHASES)).split(","))
    history = int(os.environ.get("BENCH_HISTORY", "5000000"))
    return asyncio.run(_run(seconds, drain_seconds, backlog, phases & set(PHASES), history))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
