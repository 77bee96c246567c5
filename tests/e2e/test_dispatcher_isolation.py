"""One webhook's poisoned row never stops `whk dispatcher` (issue 15, section 1), and every dispatcher of a
deployment applies the same SSRF policy, says which at start-up and reports it (section 4).

The dispatcher runs as a subprocess against a real receiver on 127.0.0.1; the API runs in-process on the
same database (what an operator would look at). The poison is written in SQL with the CHECK constraints
that would refuse it dropped first, so the test holds whatever bounds the schema sets.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.api_platform import admin_key, bearer, client, settings_for
from tests.support.delivery import TEST_SECRET, make_consumer, make_webhook
from tests.support.dispatch import FAST_ENV, REPO, WHK, start_process, stop_process
from tests.support.faults import poison_claim
from tests.support.receiver import receiver, wait_until

pytestmark = [pytest.mark.db, pytest.mark.e2e, pytest.mark.slow]
__all__ = ["receiver"]


def emit_batch(conn: psycopg.Connection[Any], start: int, n: int) -> None:
    conn.execute(
        "INSERT INTO whk.outbox (event_type, data, operation) "
        "SELECT 'p.e', jsonb_build_object('seq', g), 'EMIT' "
        "FROM generate_series(%s::int, %s::int) g ORDER BY g",
        [start, start + n - 1],
    )


def seqs(receiver: Any, path: str) -> set[int]:
    """The event numbers ``path`` received (a batch request carries a JSON array), signatures verified."""
    wh = Webhook(TEST_SECRET)
    out = set()
    for r in receiver.to(path):
        wh.verify(r.body, r.headers)  # the official verifier, not our code
        body = json.loads(r.body)
        out.update(e["data"]["seq"] for e in (body if isinstance(body, list) else [body]))
    return out


async def test_a_poisoned_webhook_is_quarantined_and_every_other_keeps_receiving(db_url, conn, receiver):
    c = make_consumer(conn)
    paths = ["/ok-immediate", "/ok-ordered", "/ok-batch"]
    make_webhook(conn, c, receiver.url(paths[0]), ["p.*"])
    make_webhook(conn, c, receiver.url(paths[1]), ["p.*"], delivery_mode="ordered")  # the fair claim's path
    make_webhook(
        conn, c, receiver.url(paths[2]), ["p.*"], delivery_mode="batch", batch_size=7, batch_window_ms=50
    )
    bad = make_webhook(conn, c, receiver.url("/bad"), ["p.*"])
    poison_claim(conn, bad)  # a token bucket of -1e300: the claim raises 22003 on every visit
    emit_batch(conn, 0, 40)
    proc = start_process(db_url, "isolation")
    settings = settings_for(db_url)
    admin = bearer(admin_key(conn))
    try:

        def got(n: int) -> bool:
            return all(len(seqs(receiver, p)) >= n for p in paths[:2]) and len(seqs(receiver, paths[2])) >= n

        # (b) every other webhook receives everything, in the round that hit the poison and after it.
        assert await wait_until(lambda: got(40), 60, 0.1)
        assert proc.poll() is None  # (a) the dispatcher stays up
        emit_batch(conn, 40, 40)
        assert await wait_until(lambda: got(80), 60, 0.1)
        assert receiver.to("/bad") == []
        assert proc.poll() is None

        # (c) quarantined, with the error, in the API and in health.
        async with client(settings) as api:
            hook = (await api.get(f"/api/whk/webhooks/{bad}", headers=admin)).json()
            assert hook["quarantine_stage"] == "claim" and hook["quarantine_sqlstate"] == "22003", hook
            assert "out of range" in hook["quarantine_reason"]
            health = (await api.get("/api/whk/monitoring/health")).json()
            assert health["status"] == "degraded" and health["quarantined_webhooks"] == [bad]
            assert health["dispatchers"][0]["last_error"] is None  # a culprit was found: nothing unexplained

            # (d) fixed and cleared: its deliveries arrive, nothing lost.
            conn.execute("UPDATE whk.whk_01_webhooks SET rate_limit_per_second = NULL WHERE id = %s", [bad])
            r = await api.post(f"/api/whk/webhooks/{bad}/clear-quarantine", headers=admin)
            assert r.status_code == 200, r.text
            assert await wait_until(lambda: len(seqs(receiver, "/bad")) == 80, 60, 0.1)
            health = (await api.get("/api/whk/monitoring/health")).json()
            assert health["quarantined_webhooks"] == []
        assert proc.poll() is None
    finally:
        assert stop_process(proc) == 0
    assert seqs(receiver, "/bad") == set(range(80))
    assert conn.execute(
        "SELECT count(*) FROM whk.whk_03_entregas WHERE status <> 'delivered'"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT actor FROM whk.audit_log WHERE action = 'webhook.quarantined' AND target_id = %s", [str(bad)]
    ).fetchall() == [("whk-dispatcher:isolation",)]


async def test_a_dispatcher_started_by_hand_agrees_on_the_ssrf_policy_and_says_so(
    db_url, conn, receiver, tmp_path
):
    """Started as the docs suggest, with only WHK_DATABASE_URL (no WHK_ALLOW_PRIVATE_CIDRS, no WHK_ENV):
    the development default lets it deliver to a local receiver, and it logs which CIDRs it exempts. A
    dispatcher with another policy shows up in health; a delivery it cannot send is quarantined, not
    retried as if the endpoint were down."""
    c = make_consumer(conn)
    hook = make_webhook(conn, c, receiver.url("/local"), ["p.*"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env.update(
        {
            "WHK_DATABASE_URL": db_url,
            "WHK_SECRET_KEYS": FAST_ENV["WHK_SECRET_KEYS"],
            "WHK_DISPATCHER_ID": "by-hand",
            "WHK_HEARTBEAT_INTERVAL": "0.5",
        }
    )
    log_path = tmp_path / "by-hand.log"
    with log_path.open("wb") as log_file:
        by_hand = subprocess.Popen([str(WHK), "dispatcher"], env=env, cwd=REPO, stderr=log_file)
    strict = None
    try:
        emit_batch(conn, 0, 3)
        assert await wait_until(lambda: len(receiver.to("/local")) == 3, 30, 0.05)
        settings = settings_for(db_url)
        async with client(settings) as api:
            h = (await api.get("/api/whk/monitoring/health")).json()
            [d] = h["dispatchers"]
            assert d["ssrf_exempt"] == ["127.0.0.0/8", "::1/128"] and not d["ssrf_policy_differs"]
            assert not any("SSRF" in p for p in h["problems"])

            # A second dispatcher told to exempt nothing: health names the disagreement.
            strict = start_process(db_url, "strict", WHK_ALLOW_PRIVATE_CIDRS="")

            def disagree() -> bool:
                body = conn.execute("SELECT count(DISTINCT ssrf_policy) FROM whk.dispatchers").fetchone()
                return body == (2,)

            assert await wait_until(disagree, 30, 0.1)
            h = (await api.get("/api/whk/monitoring/health")).json()
            assert h["status"] == "degraded"
            [problem] = [p for p in h["problems"] if "SSRF" in p]
            assert "strict exempt nothing" in problem and "by-hand exempt 127.0.0.0/8,::1/128" in problem

            # Only the strict one runs now: its refusal quarantines the webhook (stage ssrf) at once.
            assert stop_process(by_hand) == 0
            emit_batch(conn, 3, 2)
            assert await wait_until(
                lambda: (
                    conn.execute(
                        "SELECT quarantine_stage FROM whk.whk_01_webhooks WHERE id = %s", [hook]
                    ).fetchone()
                    == ("ssrf",)
                ),
                30,
                0.05,
            )
            body = (await api.get(f"/api/whk/webhooks/{hook}", headers=bearer(admin_key(conn)))).json()
            assert body["quarantine_reason"].startswith("ssrf_blocked: loopback")
            assert "(dispatcher strict)" in body["quarantine_reason"]
            await asyncio.sleep(1.5)  # several poll intervals: a blocked delivery must not be retried
        attempts = conn.execute(
            "SELECT outcome, error_class, dispatcher_id FROM whk.whk_03_entregas_tentativas "
            "WHERE error_class IS NOT NULL"
        ).fetchall()
        assert 1 <= len(attempts) <= 2 and {a[:2] for a in attempts} == {("blocked", "ssrf_blocked")}
        # Both deliveries wait, pending (not dead, no schedule spent), for the policy or URL to be fixed.
        waiting = conn.execute(
            "SELECT status, coalesce(last_error, '') FROM whk.whk_03_entregas "
            "WHERE webhook_id = %s AND status <> 'delivered'",
            [hook],
        ).fetchall()
        assert [w[0] for w in waiting] == ["pending", "pending"]
        assert any(w[1].startswith("ssrf_blocked: loopback") for w in waiting)
    finally:
        if strict is not None:
            assert stop_process(strict) == 0
        stop_process(by_hand)
    err = log_path.read_text()
    assert "SSRF policy cidrs-" in err and "requests may reach 127.0.0.0/8,::1/128" in err, err[-2000:]
