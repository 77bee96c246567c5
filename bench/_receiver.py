"""Benchmark receiver, run as its own process: `python -m bench._receiver PORT`.

Counts requests and events (a JSON array body is a batch) and, for events whose data carries ``t``
(Unix seconds at commit), the commit -> arrival latency. ``GET /stats`` returns the counters,
``POST /reset`` clears them.
"""

from __future__ import annotations

import sys
import time

import msgspec
import uvloop
from aiohttp import web


class State:
    def __init__(self) -> None:
        self.requests = 0
        self.events = 0
        self.latencies: list[float] = []
        self.first: float | None = None
        self.last: float | None = None


def build(state: State) -> web.Application:
    decode = msgspec.json.decode

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        state.requests += 1
        state.first = state.first or now
        state.last = now
        try:
            doc = decode(body)
        except msgspec.DecodeError:
            doc = None
        events = doc if isinstance(doc, list) else [doc]
        state.events += len(events)
        for ev in events:
            data = ev.get("data") if isinstance(ev, dict) else None
            if isinstance(data, dict) and isinstance(data.get("new"), dict):
                data = {"t": data["new"].get("t_commit")}  # a captured row: its t_commit column
            if isinstance(data, dict) and isinstance(data.get("t"), int | float):
                state.latencies.append(now - float(data["t"]))
        return web.Response(text="ok")

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": state.requests,
                "events": state.events,
                "first": state.first,
                "last": state.last,
                "latencies": state.latencies,
            }
        )

    async def reset(_request: web.Request) -> web.Response:
        state.__init__()  # type: ignore[misc]
        return web.Response(text="reset")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/stats", stats)
    app.router.add_post("/reset", reset)
    app.router.add_route("*", "/{tail:.*}", hook)
    return app


if __name__ == "__main__":
    uvloop.install()
    web.run_app(build(State()), host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
