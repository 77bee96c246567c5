"""Analytics export (``whk export``, ``GET /api/whk/exports/...``) against real PostgreSQL: every format's
row count and fields, paging past one page, the --since window, tenant scoping and scopes in the API."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from litestar.testing import AsyncTestClient

from api.app import create_app
from api.keys import create_api_key
from tests.support.delivery import emit, make_consumer, make_webhook, route
from tests.support.dispatch import REPO, WHK
from whk.export import COLUMNS, PAGE
from whk_cli.export import parse_since, progress_bar, run_export

pytestmark = [pytest.mark.db]

DELIVERY_FIELDS = [c.name for c in COLUMNS["deliveries"]]
EVENT_FIELDS = [c.name for c in COLUMNS["events"]]


def _seed(conn: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    """Consumer A gets every order.* event (PAGE + 5 of them, so exports cross a page), consumer B only
    the 3 invoice.* ones. Returns (consumer A, consumer B, A's webhook, B's webhook)."""
    a, b = make_consumer(conn, "acme"), make_consumer(conn, "globex")
    hook_a = make_webhook(conn, a, "http://127.0.0.1:9/a", ["order.*"])
    hook_b = make_webhook(conn, b, "http://127.0.0.1:9/b", ["invoice.*"])
    emit(conn, "order.created", {"n": 1}, count=PAGE + 5)
    emit(conn, "invoice.paid", {"n": 2}, count=3)
    while route(conn, 5000):
        pass
    conn.execute(
        "UPDATE whk.delivery_queue "
        "SET status = 'delivered', delivered_at = event_created_at + interval '2 ms' WHERE webhook_id = %s",
        [hook_b],
    )
    return a, b, hook_a, hook_b


def _export(conn: psycopg.Connection[Any], kind: str, fmt: str, **kw: Any) -> tuple[bytes, str, int]:
    out, err = io.BytesIO(), io.StringIO()
    n = run_export(conn, kind, fmt, out, err, **kw)
    return out.getvalue(), err.getvalue(), n


def test_each_format_has_every_row_and_field(conn: psycopg.Connection[Any]) -> None:
    _seed(conn)
    total = PAGE + 8
    raw, err, n = _export(conn, "deliveries", "ndjson", since=None)
    rows = [json.loads(x) for x in raw.decode().splitlines()]
    assert n == len(rows) == total
    assert list(rows[0]) == DELIVERY_FIELDS
    assert len({r["id"] for r in rows}) == total  # no row twice across the page boundary
    delivered = [r for r in rows if r["status"] == "delivered"]
    assert len(delivered) == 3 and all(abs(r["latency_ms"] - 2.0) < 0.01 for r in delivered)
    assert datetime.fromisoformat(rows[0]["created_at"]).tzinfo is not None
    assert f"{total}/{total} 100%" in err and err.endswith(f"exported {total} deliveries (ndjson)\n")

    raw, _, n = _export(conn, "deliveries", "csv", since=None)
    table = list(csv.DictReader(io.StringIO(raw.decode())))
    assert n == len(table) == total
    assert list(table[0]) == DELIVERY_FIELDS
    assert {r["delivered_at"] == "" for r in table} == {True, False}  # NULL is an empty cell

    raw, _, n = _export(conn, "events", "csv", since=None)
    assert n == total and list(csv.DictReader(io.StringIO(raw.decode())))[-1]["event_type"] == "invoice.paid"


def test_parquet_export(conn: psycopg.Connection[Any]) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pip install 'whk[parquet]'")
    _seed(conn)
    total = PAGE + 8
    raw, _, n = _export(conn, "deliveries", "parquet", since=None)
    parquet = pq.read_table(io.BytesIO(raw))
    assert n == parquet.num_rows == total
    assert parquet.column_names == DELIVERY_FIELDS
    assert str(parquet.schema.field("created_at").type) == "timestamp[us, tz=UTC]"
    assert pq.ParquetFile(io.BytesIO(raw)).num_row_groups == 2  # one per page: streamed, not buffered

    raw, _, n = _export(conn, "events", "parquet", since=None)
    events = pq.read_table(io.BytesIO(raw))
    assert n == events.num_rows == total and events.column_names == EVENT_FIELDS
    payload = json.loads(events.column("payload")[0].as_py())
    assert payload["type"] == "order.created" and payload["data"]["n"] == 1


def test_since_and_until_window(conn: psycopg.Connection[Any]) -> None:
    _seed(conn)
    assert _export(conn, "deliveries", "ndjson", since=datetime.now(UTC) + timedelta(minutes=1))[2] == 0
    assert _export(conn, "events", "ndjson", since=datetime.now(UTC) - timedelta(hours=1))[2] == PAGE + 8
    assert _export(conn, "events", "csv", since=None, until=datetime(2000, 1, 1, tzinfo=UTC))[0] == (
        (",".join(EVENT_FIELDS) + "\r\n").encode()  # no rows: still a header
    )
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    assert parse_since("24h", now) == now - timedelta(hours=24)
    assert parse_since("2026-12-01") == datetime(2026, 12, 1, tzinfo=UTC)
    assert progress_bar(5, 10, "events", width=10) == "exporting events [#####-----] 5/10  50%"


def test_whk_export_command_writes_a_file(db_url: str, conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    _seed(conn)
    target = tmp_path / "deliveries.csv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env["WHK_DATABASE_URL"] = db_url
    done = subprocess.run(
        [str(WHK), "export", "deliveries", "--since", "1h", "--format", "csv", "-o", str(target)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    with target.open() as f:
        assert len(list(csv.DictReader(f))) == PAGE + 8
    assert f"exported {PAGE + 8} deliveries (csv)" in done.stderr


@pytest.mark.slow
async def test_api_download_is_tenant_scoped(settings: Any, conn: psycopg.Connection[Any]) -> None:
    a, b, hook_a, hook_b = _seed(conn)
    admin = create_api_key(conn, admin=True, consumer_id=None, name="admin", actor="test")
    key_b = create_api_key(conn, admin=False, consumer_id=b, name="b", scopes=["*"], actor="test")
    events_only = create_api_key(
        conn, admin=False, consumer_id=b, name="e", scopes=["events:read"], actor="test"
    )
    deliveries_only = create_api_key(
        conn, admin=False, consumer_id=b, name="d", scopes=["deliveries:read"], actor="test"
    )
    async with AsyncTestClient(app=create_app(settings)) as client:

        async def get(path: str, key: str) -> Any:
            return await client.get(f"/api/whk/exports/{path}", headers={"Authorization": f"Bearer {key}"})

        r = await get("deliveries?format=ndjson", admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        assert "attachment" in r.headers["content-disposition"]
        assert len(r.text.splitlines()) == PAGE + 8

        r = await get("deliveries", key_b)
        rows = [json.loads(x) for x in r.text.splitlines()]
        assert len(rows) == 3 and {(x["consumer_id"], x["webhook_id"]) for x in rows} == {(b, hook_b)}

        r = await get("deliveries?format=csv", deliveries_only)
        table = list(csv.DictReader(io.StringIO(r.text)))
        assert r.status_code == 200 and len(table) == 3 and list(table[0]) == DELIVERY_FIELDS

        r = await get("events?format=csv", key_b)
        events = list(csv.DictReader(io.StringIO(r.text)))
        assert len(events) == 3 and {e["event_type"] for e in events} == {"invoice.paid"}
        if importlib.util.find_spec("pyarrow") is not None:
            r = await get("events?format=parquet", key_b)
            assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.parquet"
            assert r.content.startswith(b"PAR1") and r.content.endswith(b"PAR1")
        assert (await get("events", events_only)).status_code == 200

        # Scopes follow the exported resource; bad windows and formats are problem documents.
        assert (await get("deliveries", events_only)).status_code == 403
        since = "2026-12-07T10:00:00Z"
        bad = await get(f"deliveries?since={since}&until={since}", admin)
        assert bad.status_code == 422 and bad.json()["errors"][0]["pointer"] == "/query/since"
        bad = await get("deliveries?format=xlsx", admin)
        assert bad.status_code == 400 and bad.headers["content-type"].startswith("application/problem+json")
    assert a != b and hook_a != hook_b
