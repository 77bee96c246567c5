"""HTTP baselines for delivery benchmarks: bare aiohttp and httpx POST loops, plus WHK's sender.

``bench/deliver.py`` runs the first two for a fixed time to print ``deliver_vs_raw_aiohttp`` with the
httpx figure beside it; run alone (``python -m bench.http_baseline``) it prints the three client loops
against one receiver process on 127.0.0.1::

    raw_aiohttp_posts  — a bare aiohttp ClientSession POST loop (the ceiling for the dispatcher)
    httpx_default_posts — the same loop through httpx.AsyncClient's own pool
    sender_posts       — the same loop through dispatcher.sender.Sender (SSRF guard, deadline, cap)

Not a `make bench` entry itself (bench/__main__.py skips it): it has no GOAL of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

__all__ = ["httpx_default_posts", "raw_aiohttp_posts", "receiver_process", "sender_posts"]

PostOnce = Callable[[], Awaitable[None]]


async def _drive(post: PostOnce, n: int, concurrency: int, seconds: float | None = None) -> float:
    """Run ``n`` posts, or as many as ``seconds`` allow, with ``concurrency`` workers; posts per second."""
    remaining = n
    done = 0
    deadline = None if seconds is None else time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal remaining, done
        while remaining > 0 and (deadline is None or time.perf_counter() < deadline):
            remaining -= 1
            await post()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, n)))))
    return done / (time.perf_counter() - started)


async def raw_aiohttp_posts(
    url: str, n: int, concurrency: int, body: bytes, seconds: float | None = None
) -> float:
    """Posts/s of a bare aiohttp POST loop (one session, pool sized to ``concurrency``): ``n`` posts, or as
    many as ``seconds`` allow."""
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> None:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"receiver answered {resp.status}")

        await post()  # warm the pool
        return await _drive(post, n, concurrency, seconds)


async def httpx_default_posts(
    url: str, n: int, concurrency: int, body: bytes, seconds: float | None = None
) -> float:
    """Posts/s of the same loop through httpx.AsyncClient's default pool."""
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient() as client:

        async def post() -> None:
            resp = await client.post(url, content=body, headers=headers)
            if resp.status_code >= 300:
                raise RuntimeError(f"receiver answered {resp.status_code}")

        await post()
        return await _drive(post, n, concurrency, seconds)


async def sender_posts(url: str, n: int, concurrency: int, body: bytes) -> float:
    """Events/s of the same loop through WHK's sender (loopback exempted from the SSRF guard)."""
    from dispatcher.sender import OutboundRequest, Sender
    from whk.settings import load_settings

    settings = load_settings(
        {
            "WHK_ALLOW_PRIVATE_CIDRS": "127.0.0.0/8,::1/128",
            "WHK_DISPATCHER_CONCURRENCY": str(concurrency),
            "WHK_DISPATCHER_HOST_CONCURRENCY": str(concurrency),  # one receiver, like the raw loop
        }
    )
    request = OutboundRequest(
        method="POST", url=url, headers=[("Content-Type", "application/json")], body=body, deadline_s=15.0
    )
    async with Sender(settings) as sender:

        async def post() -> None:
            result = await sender.send(request)
            if result.status is None or result.status >= 300:
                raise RuntimeError(
                    f"attempt failed: {result.status} {result.error_class} {result.error_detail}"
                )

        await post()
        return await _drive(post, n, concurrency)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(port: int) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


@contextmanager
def receiver_process(port: int | None = None) -> Iterator[str]:
    """A 200-OK aiohttp receiver in its own process on 127.0.0.1 (so it does not share our CPU)."""
    port = port or _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.http_baseline", "--serve", str(port)],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("benchmark receiver did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _compare(url: str, n: int, concurrency: int, body: bytes, rounds: int) -> None:
    """Interleave the loops (noise on a shared machine hits both sides) and print medians."""
    raw: list[float] = []
    via_sender: list[float] = []
    via_httpx: list[float] = []
    for _ in range(rounds):
        raw.append(await raw_aiohttp_posts(url, n, concurrency, body))
        via_sender.append(await sender_posts(url, n, concurrency, body))
        via_httpx.append(await httpx_default_posts(url, max(200, n // 10), concurrency, body))
    base = statistics.median(raw)
    sender_rate, httpx_rate = statistics.median(via_sender), statistics.median(via_httpx)
    sender_ratio = statistics.median([s / r for s, r in zip(via_sender, raw, strict=True)])
    print(f"raw_aiohttp_posts_per_s={base:.0f}")
    print(f"sender_posts_per_s={sender_rate:.0f} sender_vs_raw_aiohttp={sender_ratio:.2f}")
    print(f"httpx_default_posts_per_s={httpx_rate:.0f} httpx_vs_raw_aiohttp={httpx_rate / base:.2f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_baseline")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve)
        return 0
    body = b'{"type":"bench","data":"' + b"x" * 990 + b'"}'  # ~1 KB event
    with receiver_process() as url:
        asyncio.run(_compare(url, args.n, args.concurrency, body, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
