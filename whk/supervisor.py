"""Supervision of `whk up`'s children (API, dispatcher, ...): restart with backoff, never stop the database.

A child that exits while `whk up` runs is restarted after a backoff and the exit is logged with its
cause ("killed by signal 9 (SIGKILL)", "exited with code 1"). The policy (``RestartPolicy``, pure):

* the n-th crash within ``window`` seconds is restarted after ``initial_delay * 2**(n-1)`` seconds,
  at most ``max_delay`` (0.5, 1, 2, 4 s ...);
* ``max_crashes`` crashes within ``window`` (default **5 within 60 s**) make the child *failing*: it is
  still retried, every ``max_delay`` (30 s), so it comes back by itself once its cause is fixed, and it
  stays failing until it has run a whole window without crashing;
* a child that ran a whole window before it crashed starts a fresh count.

``Supervisor`` runs the children and applies the policy; ``StatusTable`` publishes each child's state
to ``whk.supervised_processes`` (read by /api/whk/monitoring/health), tolerating a database that is
briefly away. Only `whk up` itself being stopped (Ctrl-C, SIGTERM) stops the children, and then
PostgreSQL (in ``whk_cli.main``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg

from whk.sqlfiles import load_queries

__all__ = [
    "ChildSpec",
    "CrashHistory",
    "RestartPolicy",
    "StatusTable",
    "Supervisor",
    "describe_exit",
]

log = logging.getLogger("whk.up")

State = Literal["running", "restarting", "failing"]


# --------------------------------------------------------------------------- pure policy
@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """When to restart a crashed child, and when to call it failing (see the module docstring)."""

    initial_delay: float = 0.5
    max_delay: float = 30.0
    max_crashes: int = 5
    window: float = 60.0

    def backoff(self, crashes_in_window: int) -> float:
        """Delay before restarting after the ``crashes_in_window``-th crash of the window (1-based)."""
        exponent = max(0, crashes_in_window - 1)
        if exponent >= 32:  # 2**32 x any sane initial delay is past max_delay
            return self.max_delay
        return float(min(self.max_delay, self.initial_delay * 2**exponent))


@dataclass(slots=True)
class CrashHistory:
    """One child's recent crashes; every method takes the time, so the policy is tested without waiting."""

    policy: RestartPolicy
    crashes: list[float] = field(default_factory=list)
    failing: bool = False

    def on_exit(self, now: float, started_at: float) -> float:
        """Record an exit at ``now`` of a child started at ``started_at``; return the restart delay."""
        if now - started_at >= self.policy.window:
            self.crashes.clear()
            self.failing = False
        self.crashes = [t for t in self.crashes if now - t < self.policy.window]
        self.crashes.append(now)
        if len(self.crashes) >= self.policy.max_crashes:
            self.failing = True
        return self.policy.max_delay if self.failing else self.policy.backoff(len(self.crashes))

    def on_alive(self, now: float, started_at: float) -> bool:
        """The child started at ``started_at`` is still up at ``now``; True when that ends a failing spell."""
        if self.failing and now - started_at >= self.policy.window:
            self.failing = False
            self.crashes.clear()
            return True
        return False

    def in_window(self, now: float) -> int:
        return sum(1 for t in self.crashes if now - t < self.policy.window)


def describe_exit(returncode: int) -> str:
    """An exit status as an operator reads it: ``killed by signal 9 (SIGKILL)``, ``exited with code 1``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            return f"killed by signal {-returncode}"
        return f"killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


# --------------------------------------------------------------------------- status in the database
@dataclass(frozen=True, slots=True)
class ChildStatus:
    name: str
    pid: int | None
    state: State
    restarts: int
    crashes_in_window: int
    last_exit: str | None
    last_exit_at: datetime | None


class StatusTable:
    """Publishes children's states to ``whk.supervised_processes``; a database error is logged once and
    the connection is retried at the next publish (supervision never depends on the database)."""

    def __init__(self, dsn: str, supervisor: str, *, connect_timeout: float = 2.0) -> None:
        self._dsn = dsn
        self._supervisor = supervisor
        self._timeout = max(1, round(connect_timeout))
        self._q = load_queries("whk", "supervisor.sql")
        self._conn: psycopg.Connection[Any] | None = None
        self._broken = False

    def _execute(self, name: str, params: Mapping[str, Any]) -> None:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=self._timeout)
            self._conn.execute(self._q[name], params)
            if self._broken:
                log.info("supervisor status: writing to whk.supervised_processes again")
            self._broken = False
        except psycopg.Error as exc:
            if not self._broken:
                log.warning("supervisor status: cannot write whk.supervised_processes: %s", exc)
            self._broken = True
            self.close()

    def publish(self, statuses: Sequence[ChildStatus]) -> None:
        for s in statuses:
            self._execute(
                "upsert_child",
                {
                    "supervisor": self._supervisor,
                    "name": s.name,
                    "pid": s.pid,
                    "state": s.state,
                    "restarts": s.restarts,
                    "crashes_in_window": s.crashes_in_window,
                    "last_exit": s.last_exit,
                    "last_exit_at": s.last_exit_at,
                },
            )

    def forget(self) -> None:
        """Remove this supervisor's rows (it is stopping)."""
        self._execute("forget_supervisor", {"supervisor": self._supervisor})

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


# --------------------------------------------------------------------------- the supervisor
@dataclass(frozen=True, slots=True)
class ChildSpec:
    """A supervised child: its name (``api``, ``dispatcher``), command line and environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    history: CrashHistory
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    last_exit: str | None = None
    last_exit_at: datetime | None = None


def supervisor_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Supervisor:
    """Runs ``specs`` as child processes and keeps them running (see the module docstring).

    Call ``start`` once, then ``tick`` regularly (it never waits for a child), then ``stop``. ``echo``
    prints a line for the operator; ``status`` (optional) receives every state change and a refresh
    every ``refresh_s`` seconds."""

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        *,
        policy: RestartPolicy | None = None,
        echo: Callable[[str], None],
        status: StatusTable | None = None,
        clock: Callable[[], float] = time.monotonic,
        refresh_s: float = 5.0,
    ) -> None:
        policy = policy or RestartPolicy()
        self._children = [_Child(spec, CrashHistory(policy)) for spec in specs]
        self._policy = policy
        self._echo = echo
        self._status = status
        self._clock = clock
        self._refresh_s = refresh_s
        self._published = -1e9

    def pid(self, name: str) -> int | None:
        for c in self._children:
            if c.spec.name == name and c.proc is not None and c.proc.poll() is None:
                return c.proc.pid
        return None

    def _spawn(self, child: _Child, now: float) -> None:
        child.proc = subprocess.Popen(list(child.spec.argv), env=dict(child.spec.env))
        child.started_at = now
        child.restart_at = None

    def start(self) -> None:
        now = self._clock()
        for child in self._children:
            self._spawn(child, now)
        self._publish(now)

    def tick(self) -> None:
        """Notice exits, schedule and perform restarts, publish states."""
        now = self._clock()
        changed = False
        for child in self._children:
            if child.proc is not None:
                code = child.proc.poll()
                if code is not None:
                    self._exited(child, code, now)
                    changed = True
                elif child.history.on_alive(now, child.started_at):
                    self._echo(
                        f"whk up: `whk {child.spec.name}` ran {self._policy.window:g} s: no longer failing"
                    )
                    changed = True
            elif child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self._spawn(child, now)
                changed = True
                self._echo(f"whk up: restarted `whk {child.spec.name}` (pid {self.pid(child.spec.name)})")
        if changed or now - self._published >= self._refresh_s:
            self._publish(now)

    def _exited(self, child: _Child, code: int, now: float) -> None:
        child.last_exit = describe_exit(code)
        child.last_exit_at = datetime.now(UTC)
        child.proc = None
        delay = child.history.on_exit(now, child.started_at)
        child.restart_at = now + delay
        what = f"whk up: `whk {child.spec.name}` {child.last_exit}"
        if child.history.failing:
            self._echo(
                f"{what}; FAILING: {child.history.in_window(now)} crashes within {self._policy.window:g} s, "
                f"retrying every {delay:g} s (PostgreSQL and the other processes stay up)"
            )
        else:
            self._echo(f"{what}; restarting in {delay:g} s")

    def _state(self, child: _Child) -> State:
        if child.history.failing:
            return "failing"
        return "running" if child.proc is not None else "restarting"

    def statuses(self) -> list[ChildStatus]:
        now = self._clock()
        return [
            ChildStatus(
                name=c.spec.name,
                pid=c.proc.pid if c.proc is not None else None,
                state=self._state(c),
                restarts=c.restarts,
                crashes_in_window=c.history.in_window(now),
                last_exit=c.last_exit,
                last_exit_at=c.last_exit_at,
            )
            for c in self._children
        ]

    def _publish(self, now: float) -> None:
        self._published = now
        if self._status is not None:
            self._status.publish(self.statuses())

    def stop(self, grace: float) -> None:
        """Terminate every child (SIGTERM), wait up to ``grace`` seconds each, then kill what is left."""
        running = [c.proc for c in self._children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for c in self._children:
            c.proc = None
        if self._status is not None:
            self._status.forget()
            self._status.close()
