"""Fresh test databases made ahead of time, so a test does not wait for its clone of the template.

Cloning the migrated template (``CREATE DATABASE … TEMPLATE``) costs far more than most database tests
themselves (≈ 0.5 to 0.9 s each on the loaded 2-core build machine, against a few ms for most tests). Two
background threads keep ``ahead`` clones ready and drop the databases tests are done with, so that work
overlaps with the tests instead of adding to them (three DB test files: 46 to 70 s → 30 to 32 s, same hour).
Each test still gets a database nobody used before.

The threads survive a server that is down for a moment (fault tests restart it): they retry with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

import psycopg

from tests.support.pg import PgServer

log = logging.getLogger("tests.dbsupply")

_BACKOFF_MAX_S = 2.0


class DatabaseSupply:
    """Clones of ``template`` on ``server``, ``ahead`` of demand; ``take`` one, ``give_back`` it after."""

    def __init__(self, server: PgServer, template: str, *, ahead: int = 3, workers: int = 2) -> None:
        self._server = server
        self._template = template
        self._ready: queue.Queue[str] = queue.Queue(maxsize=ahead)
        self._done: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"whk-test-db-supply-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def take(self, timeout: float = 300.0) -> str:
        """A database cloned from the template that no test has used."""
        if not any(t.is_alive() for t in self._threads):
            raise RuntimeError("the test database supply threads died; see the log")
        return self._ready.get(timeout=timeout)

    def give_back(self, name: str) -> None:
        """The test is done with ``name``: it is dropped in the background."""
        self._done.put(name)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        leftovers = []
        while not self._ready.empty():
            leftovers.append(self._ready.get_nowait())
        while not self._done.empty():
            leftovers.append(self._done.get_nowait())
        for name in leftovers:
            with contextlib.suppress(psycopg.Error):
                self._server.drop_database(name)

    # ------------------------------------------------------------------ thread

    def _run(self) -> None:
        backoff = 0.1
        pending: str | None = None  # cloned but not yet handed over
        while not self._stop.is_set():
            try:
                self._drop_finished()
                if pending is None:
                    pending = self._server.create_database(template=self._template)
                self._ready.put(pending, timeout=0.05)
                pending = None
                backoff = 0.1
            except queue.Full:
                continue
            except psycopg.Error as exc:
                # The server may be restarting (fault tests) or the template briefly in use: try again.
                log.warning("test database supply: %s; retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
        if pending is not None:
            self._done.put(pending)

    def _drop_finished(self) -> None:
        while True:
            try:
                name = self._done.get_nowait()
            except queue.Empty:
                return
            try:
                self._server.drop_database(name)
            except psycopg.Error:
                self._done.put(name)
                raise
