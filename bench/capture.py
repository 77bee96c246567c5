"""bench capture: what WHK's capture costs the ERP's commits, against baselines measured in the same run.

Four identical ERP tables, 8 pgbench clients each committing single-row INSERTs, on a server with
production durability (``fsync``, ``full_page_writes`` and ``synchronous_commit`` on, data on the disk: a
commit waits for its WAL flush, as an ERP's does):

* ``none``          no trigger (the ERP alone);
* ``bare``          a row trigger that only inserts the outbox row (the cheapest correct outbox);
* ``naive_notify``  the same plus ``pg_notify`` on every commit (NOTIFY serialises commits cluster-wide);
* ``whk``           ``whk.enable_capture``: statement-level trigger, Standard Webhooks envelope, and the
                    conditional wake-up (a dispatcher is registered and busy, the steady state under load).

And, for aggregate capture, one order with 20 lines per transaction (``BEGIN``, the order, its lines,
``COMMIT``), on two pairs of order/order-line tables:

* ``agg_bare``      the bare row trigger on both tables: 21 outbox rows per transaction (the naive thing);
* ``agg_whk``       ``whk.enable_capture(..., aggregate => ...)``: one event per transaction, at commit;

each with the 20 lines in one ``INSERT`` statement, and (``*_rows``, for information) as 20 single-row
``INSERT`` statements, as an ORM writes them.

A LISTEN connection on ``whk_outbox`` is open during every variant, as a dispatcher's would be. Variants are
interleaved in rounds (order rotated per round) and the median round counts: this machine is shared and
noisy, ratios measured side by side are what mean something. Also measured, and printed for information:
WHK with an *idle* dispatcher (then every statement notifies: the worst case), and one 50,000-row UPDATE
with and without capture (events written, wake-ups sent, time ratio).

Environment: ``BENCH_CAPTURE_SECONDS`` (per variant, default 20), ``BENCH_CAPTURE_ROUNDS`` (default 4),
``BENCH_CAPTURE_CLIENTS`` (default 8), ``BENCH_CAPTURE_DURABLE`` (default 1; 0 = the test servers' settings,
fsync off, for comparison only: without fsync a commit is not durable and commit-time costs are hidden).
The settings the server really ran with are printed.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.goals import Goal, report
from tests.support.pg import PgServer, migrate_database, start_server

VARIANTS = ("none", "bare", "naive_notify", "whk", "agg_bare", "agg_whk", "agg_bare_rows", "agg_whk_rows")
SINGLE_ROW = ("none", "bare", "naive_notify", "whk", "whk_idle")
SETUP_SQL = Path(__file__).with_name("capture.sql")
TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


class Listener(threading.Thread):
    """A LISTEN connection on whk_outbox that counts notifications (a dispatcher's, minus the work)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.count = 0
        self.stop = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("LISTEN whk_outbox")
            self.ready.set()
            while not self.stop.is_set():
                for _ in conn.notifies(timeout=0.2):
                    self.count += 1


def pgbench_binary(server: PgServer) -> str:
    candidate = server.bindir / "pgbench"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("pgbench")
    if not found:
        raise SystemExit("bench capture: pgbench not found (install postgresql-client or set WHK_PG_BINDIR)")
    return found


def pgbench_command(
    server: PgServer, dbname: str, script: Path, seconds: float, clients: int, rate: float | None = None
) -> list[str]:
    """pgbench running ``script`` with prepared statements for ``seconds``: as fast as it can with
    ``clients`` connections, or at ``rate`` transactions per second (Poisson arrivals, ``-R``)."""
    paced = ["-R", str(rate)] if rate is not None else []
    return [
        pgbench_binary(server),
        "-n",
        "-h",
        server.host,
        "-p",
        str(server.port),
        "-U",
        server.user,
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 1)),
        *paced,
        "-T",
        str(max(1, round(seconds))),
        "-M",
        "prepared",
        "-f",
        str(script),
        dbname,
    ]


def run_pgbench(server: PgServer, dbname: str, script: Path, seconds: float, clients: int) -> float:
    out = subprocess.run(
        pgbench_command(server, dbname, script, seconds, clients),
        capture_output=True,
        text=True,
        check=True,
    )
    match = TPS_RE.search(out.stdout)
    if not match:
        raise RuntimeError(f"pgbench printed no tps:\n{out.stdout}\n{out.stderr}")
    return float(match.group(1))


def wait_ready(server: PgServer, timeout: float = 60) -> None:
    """The executor returns once pg_ctl does; under load the server may still be starting up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with server.admin():
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def server_settings(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """What the benchmark really ran with (options can be overridden; ask the server)."""
    names = [
        "server_version",
        "fsync",
        "full_page_writes",
        "synchronous_commit",
        "wal_sync_method",
        "data_directory",
    ]
    rows = conn.execute(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)", (names,)
    ).fetchall()
    found = {str(name): str(value) for name, value in rows}
    return {name: found.get(name, "?") for name in names}


def filesystem_of(path: str) -> str:
    out = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def reset(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "TRUNCATE whk.outbox, bench.t_none, bench.t_bare, bench.t_naive_notify, bench.t_whk,"
        " bench.o_bare, bench.ol_bare, bench.o_whk, bench.ol_whk"
    )
    conn.execute("CHECKPOINT")


def set_idle(conn: psycopg.Connection[Any], idle: bool) -> None:
    conn.execute("SELECT whk.dispatcher_set_idle('bench', %s)", (idle,))


def order_script(suffix: str, line_statements: bool) -> str:
    """One transaction: an order and its 20 lines (in one INSERT, or in 20 single-row INSERTs)."""
    head = (
        "BEGIN;\n"
        f"INSERT INTO bench.o_{suffix} (customer, status, total) VALUES ('acme', 'open', 199.80)"
        " RETURNING id \\gset\n"
    )
    if line_statements:
        lines = "".join(
            f"INSERT INTO bench.ol_{suffix} (order_id, line_no, sku, qty, price)"
            f" VALUES (CAST(:id AS bigint), {i}, 'sku-{i}', 1, 9.99);\n"
            for i in range(1, 21)
        )
    else:
        lines = (
            f"INSERT INTO bench.ol_{suffix} (order_id, line_no, sku, qty, price)"
            " SELECT CAST(:id AS bigint), i, 'sku-' || i, 1, 9.99 FROM generate_series(1, 20) AS i;\n"
        )
    return head + lines + "COMMIT;\n"


def outbox_per_order(conn: psycopg.Connection[Any], suffix: str) -> float:
    """Outbox rows written per committed order (21 for the bare trigger, 1 for aggregate capture)."""
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM whk.outbox)::float8 / greatest(count(*), 1) FROM bench.o_{suffix}"
    ).fetchone()  # suffix is one of two constants
    return float(row[0]) if row else 0.0


def timed_update(conn: psycopg.Connection[Any], table: str) -> float:
    start = time.perf_counter()
    with conn.transaction():
        conn.execute(f"UPDATE bench.{table} SET qty = qty + 1")  # table is one of two constants
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    seconds = float(os.environ.get("BENCH_CAPTURE_SECONDS", "20"))
    rounds = max(1, int(os.environ.get("BENCH_CAPTURE_ROUNDS", "4")))
    clients = int(os.environ.get("BENCH_CAPTURE_CLIENTS", "8"))
    durable = os.environ.get("BENCH_CAPTURE_DURABLE", "1") != "0"
    per_round = seconds / rounds
    print(
        f"capture: {clients} clients, {seconds:g} s per variant in {rounds} interleaved rounds",
        flush=True,
    )

    server = start_server("-c synchronous_commit=on", durable=durable)
    listener: Listener | None = None
    try:
        wait_ready(server)
        dbname = server.create_database("whk_bench_capture")
        dsn = server.dsn(dbname)
        migrate_database(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SETUP_SQL.read_text(encoding="utf-8").encode())
            settings = server_settings(conn)
        settings["filesystem"] = filesystem_of(settings["data_directory"])
        print("  server: " + " ".join(f"{k}={v}" for k, v in settings.items()), flush=True)
        if durable and (settings["fsync"], settings["synchronous_commit"]) != ("on", "on"):
            raise SystemExit(f"bench capture: the server is not durable ({settings})")
        pgbench_binary(server)  # fail early, before any round, when pgbench is missing
        listener = Listener(dsn)
        listener.start()
        listener.ready.wait(10)

        with (
            tempfile.TemporaryDirectory(prefix="whk-bench-") as tmp,
            psycopg.connect(dsn, autocommit=True) as conn,
        ):
            scripts = {}
            for variant in (*VARIANTS, "whk_idle"):
                path = Path(tmp) / f"{variant}.sql"
                if variant in SINGLE_ROW:
                    table = "t_whk" if variant == "whk_idle" else f"t_{variant}"
                    insert = f"INSERT INTO bench.{table} (name, qty, price) VALUES ('widget', 3, 9.99);\n"
                    path.write_text(insert)
                else:
                    suffix = "whk" if variant.startswith("agg_whk") else "bare"
                    path.write_text(order_script(suffix, variant.endswith("_rows")))
                os.chmod(tmp, 0o755)
                scripts[variant] = path

            tps: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "whk_idle")}
            notified: dict[str, int] = dict.fromkeys(tps, 0)
            per_order: dict[str, float] = {}
            for r in range(rounds):
                order = list(VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)])
                for variant in order:
                    reset(conn)
                    before = listener.count
                    tps[variant].append(run_pgbench(server, dbname, scripts[variant], per_round, clients))
                    time.sleep(0.3)
                    notified[variant] += listener.count - before
                    if variant.startswith("agg_"):
                        per_order[variant] = outbox_per_order(conn, "whk" if "whk" in variant else "bare")
                    print(f"  round {r + 1} {variant:<13} {tps[variant][-1]:9.0f} tps", flush=True)

            # Worst case, for information: an idle dispatcher makes every statement notify.
            reset(conn)
            set_idle(conn, True)
            before = listener.count
            tps["whk_idle"].append(run_pgbench(server, dbname, scripts["whk_idle"], per_round, clients))
            time.sleep(0.3)
            notified["whk_idle"] = listener.count - before
            set_idle(conn, False)

            med = {v: statistics.median(values) for v, values in tps.items() if values}
            for variant, value in med.items():
                print(
                    f"  {variant:<13} median {value:9.0f} tps  notifications received {notified[variant]}",
                    flush=True,
                )
            # For information: the same ratios taken round by round (variants of one round ran within
            # seconds of each other), which shows how much the shared machine's load moved between rounds.
            paired_bare = [w / b for w, b in zip(tps["whk"], tps["bare"], strict=True)]
            paired_naive = [w / n for w, n in zip(tps["whk"], tps["naive_notify"], strict=True)]
            paired_agg = [w / b for w, b in zip(tps["agg_whk"], tps["agg_bare"], strict=True)]
            print(
                "INFO capture_per_round whk/bare="
                + ",".join(f"{r:.2f}" for r in paired_bare)
                + " whk/naive="
                + ",".join(f"{r:.2f}" for r in paired_naive)
                + " agg_whk/agg_bare="
                + ",".join(f"{r:.2f}" for r in paired_agg),
                flush=True,
            )
            print(
                f"INFO capture_naive_notify_vs_bare measured={med['naive_notify'] / med['bare']:.3g} "
                f"bare_vs_none={med['bare'] / med['none']:.3g} (the baselines, same run)",
                flush=True,
            )
            print(
                "INFO capture_aggregate_outbox_rows_per_order "
                + " ".join(f"{v}={n:.3g}" for v, n in sorted(per_order.items()))
                + " (1 order + 20 lines per transaction)",
                flush=True,
            )
            print(
                f"INFO capture_aggregate_line_statements_vs_bare measured="
                f"{med['agg_whk_rows'] / med['agg_bare_rows']:.3g} (the 20 lines as 20 single-row INSERTs)",
                flush=True,
            )
            print(
                f"INFO capture_idle_dispatcher_vs_bare measured={med['whk_idle'] / med['bare']:.3g} "
                "(worst case: a dispatcher idle during the whole run)",
                flush=True,
            )

            # One 50,000-row UPDATE with and without capture (an idle dispatcher, so a wake-up is due).
            reset(conn)
            set_idle(conn, True)
            plain: list[float] = []
            captured: list[float] = []
            wakeups: list[int] = []
            events: list[int] = []
            for _ in range(3):
                plain.append(timed_update(conn, "u_none"))
                conn.execute("TRUNCATE whk.outbox")
                before = listener.count
                captured.append(timed_update(conn, "u_whk"))
                time.sleep(0.5)
                wakeups.append(listener.count - before)
                row = conn.execute(
                    "SELECT count(*) FROM whk.outbox WHERE event_type = 'bench.bulk.updated'"
                ).fetchone()
                events.append(int(row[0]) if row else 0)
            set_idle(conn, False)
            t_plain, t_captured = statistics.median(plain), statistics.median(captured)
            print(
                f"INFO capture_update_50k without={t_plain * 1000:.0f} ms with={t_captured * 1000:.0f} ms "
                f"ratio={t_captured / t_plain:.2f}x events={max(events)} wakeups={max(wakeups)}",
                flush=True,
            )

        return report(
            Goal("capture_vs_bare_trigger", med["whk"] / med["bare"], 0.9),
            Goal("capture_vs_naive_notify", med["whk"] / med["naive_notify"], 2.0),
            Goal("capture_aggregate_vs_bare_trigger", med["agg_whk"] / med["agg_bare"], 0.8),
            Goal("capture_update_50k_events", float(min(events)), 50000),
            Goal("capture_update_50k_wakeups", float(max(wakeups)), 1, higher_is_better=False),
        )
    finally:
        if listener is not None:
            listener.stop.set()
            listener.join(5)
        server.stop()


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
