"""`whk mock tail|list|clear|scenario`: the CLI over a real API server (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.api_platform import admin_key, real_server
from whk.settings import Settings
from whk.testing import sign_request

pytestmark = pytest.mark.db

WHK = Path(sys.executable).parent / "whk"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHK_")}
    env["WHK_ENV"] = "development"
    return env


async def _whk(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(WHK), *args, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.slow  # a real API server and a `whk mock tail` subprocess
async def test_tail_follows_new_requests(settings: Settings, conn: psycopg.Connection[Any]):
    key = admin_key(conn)
    async with real_server(settings) as base, httpx.AsyncClient(base_url=base, trust_env=False) as client:
        await client.post("/api/whk/dev/mock/cli", content=b"before")  # already stored: not printed
        tail = await asyncio.create_subprocess_exec(
            str(WHK),
            "mock",
            "tail",
            "cli",
            "--api",
            base,
            "--key",
            key,
            "--count",
            "2",
            "--interval",
            "0.1",
            env=_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert tail.stdout is not None
        first = await asyncio.wait_for(tail.stdout.readline(), 60)  # it follows from here on
        assert first.decode().startswith("following mock cli"), first
        signed = sign_request({"type": "order.created", "data": {}}, "whsec_" + "A" * 32)
        await client.put("/api/whk/dev/mock/cli", content=signed.body, headers=dict(signed.headers))
        await client.post("/api/whk/dev/mock/cli?status=503", content=b"x")
        out, err = await asyncio.wait_for(tail.communicate(), 60)
        assert tail.returncode == 0, err.decode()
    lines = out.decode().strip().splitlines()
    assert len(lines) == 2, lines
    assert " PUT -> 200  order.created " in lines[0]
    assert "no webhook targets this mock" in lines[0]
    assert " POST -> 503  - " in lines[1]


async def test_list_clear_and_scenario(settings: Settings, conn: psycopg.Connection[Any]):
    key = admin_key(conn)
    async with real_server(settings) as base, httpx.AsyncClient(base_url=base, trust_env=False) as client:
        common = ("--api", base, "--key", key)
        code, out, err = await _whk("mock", "scenario", "cli2", "[503, 200]", *common)
        assert code == 0, err
        assert '"served": 0' in out
        assert [
            (await client.post("/api/whk/dev/mock/cli2", content=b"{}")).status_code for _ in range(3)
        ] == [
            503,
            200,
            200,
        ]
        code, out, _ = await _whk("mock", "list", "cli2", *common)
        assert code == 0
        assert [line.split(" -> ")[1][:3] for line in out.strip().splitlines()] == ["503", "200", "200"]
        code, out, _ = await _whk("mock", "scenario", "cli2", *common)
        assert '"served": 3' in out
        code, _, err = await _whk("mock", "scenario", "cli2", "[99]", *common)
        assert code != 0 and "bad scenario" in err
        assert (await _whk("mock", "scenario", "cli2", "--clear", *common))[0] == 0
        assert (await _whk("mock", "clear", "cli2", *common))[0] == 0
        code, out, _ = await _whk("mock", "list", "cli2", *common)
        assert code == 0 and out.strip() == ""
        code, _, err = await _whk("mock", "list", "cli2", "--api", base)  # no key
        assert code != 0 and "WHK_API_KEY" in err
