"""bench capture: what WHK's capture costs the ERP's commits, against baselines measured in the same run.

Four identical ERP tables, 8 pgbench clients each committing single-row INSERTs, on a server with
production durability (``fsync``, ``full_page_writes`` and ``synchronous_commit`` on, data on the disk: a
commit waits for its WAL flush, as an ERP's does):

* ``none``          no trigger (the ERP alone);
* ``bare``          a row trigger that only inserts the outbox row (the cheapest correct outbox);
* ``naive_notify``  the same plus ``pg_notify`` on every commit (NOTIFY serialises commits cluster-wide);
* ``whk``           ``whk.enable_capture``: statement-level trigger, Standard Webhooks envelope, and the
                    conditional wake-up (a dispatcher is registered and busy, the steady state under load).

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

VARIANTS = ("none", "bare", "naive_notify", "whk")
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
    conn.execute("TRUNCATE whk.outbox, bench.t_none, bench.t_bare, bench.t_naive_notify, bench.t_whk")
    conn.execute("CHECKPOINT")


def set_idle(conn: psycopg.Connection[Any], idle: bool) -> None:
    conn.execute("SELECT whk.dispatcher_set_idle('bench', %s)", (idle,))


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
                table = "t_whk" if variant == "whk_idle" else f"t_{variant}"
                path = Path(tmp) / f"{variant}.sql"
                path.write_text(f"INSERT INTO bench.{table} (name, qty, price) VALUES ('widget', 3, 9.99);\n")
                os.chmod(tmp, 0o755)
                scripts[variant] = path

            tps: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "whk_idle")}
            notified: dict[str, int] = dict.fromkeys(tps, 0)
            for r in range(rounds):
                order = list(VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)])
                for variant in order:
                    reset(conn)
                    before = listener.count
                    tps[variant].append(run_pgbench(server, dbname, scripts[variant], per_round, clients))
                    time.sleep(0.3)
                    notified[variant] += listener.count - before
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
            print(
                "INFO capture_per_round whk/bare="
                + ",".join(f"{r:.2f}" for r in paired_bare)
                + " whk/naive="
                + ",".join(f"{r:.2f}" for r in paired_naive),
                flush=True,
            )
            print(
                f"INFO capture_naive_notify_vs_bare measured={med['naive_notify'] / med['bare']:.3g} "
                f"bare_vs_none={med['bare'] / med['none']:.3g} (the baselines, same run)",
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
