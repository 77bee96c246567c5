"""Dispatcher settings: claiming, leases, timeouts and concurrency."""

from __future__ import annotations

from dataclasses import dataclass

from whk.errors import SettingsError
from whk.settings._fields import positive, positive_or_unset, setting


def _port_or_off(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (1-65535), or 0 for off"


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """Dispatcher"""

    dispatcher_id: str | None = setting(
        "WHK_DISPATCHER_ID",
        "Name of this dispatcher in heartbeats and attempt logs.",
        default=None,
        default_doc="<hostname>-<pid>",
    )
    poll_interval: float = setting(
        "WHK_POLL_INTERVAL",
        "Seconds between polls when no wake-up arrives (backstop).",
        default=1.0,
        check=positive,
    )
    attempt_timeout: float = setting(
        "WHK_ATTEMPT_TIMEOUT",
        "Overall deadline of one HTTP attempt, seconds (connect to last byte).",
        default=15.0,
        check=positive,
    )
    lease_seconds: float = setting(
        "WHK_LEASE_SECONDS",
        "Claim lease; must be at least 3x WHK_ATTEMPT_TIMEOUT.",
        default=60.0,
        check=positive,
    )
    concurrency: int = setting(
        "WHK_DISPATCHER_CONCURRENCY",
        "Maximum HTTP attempts in flight per dispatcher process.",
        default=64,
        check=positive,
    )
    host_concurrency: int | None = setting(
        "WHK_DISPATCHER_HOST_CONCURRENCY",
        "Maximum HTTP attempts in flight to one host, all its webhooks together, so a stuck host cannot "
        "hold every slot; a webhook's max_in_flight above it is bounded by it. At most "
        "WHK_DISPATCHER_CONCURRENCY.",
        default=None,
        default_doc="half of WHK_DISPATCHER_CONCURRENCY (at least 4)",
        check=positive_or_unset,
    )
    batch_size: int = setting(
        "WHK_CLAIM_BATCH",
        "Outbox events or deliveries claimed per round trip.",
        default=100,
        check=positive,
    )
    shutdown_grace: float = setting(
        "WHK_SHUTDOWN_GRACE",
        "Seconds SIGTERM waits for in-flight attempts before releasing them.",
        default=10.0,
        check=positive,
    )

    db_role: str | None = setting(
        "WHK_DISPATCHER_DB_ROLE",
        "Role the dispatcher and the operations worker (`whk worker`) switch to on every connection "
        "(SET ROLE), e.g. whk_dispatcher, when their DSN logs in as a more privileged role. A login role "
        "of their own is stronger (docs/dba.md).",
        default=None,
    )
    heartbeat_interval: float = setting(
        "WHK_HEARTBEAT_INTERVAL",
        "Seconds between dispatcher heartbeats and maintenance sweeps (expired leases, ack timeouts, "
        "auto-disable).",
        default=2.0,
        check=positive,
    )
    user_agent: str = setting(
        "WHK_USER_AGENT",
        "User-Agent header of every webhook request.",
        default="WHK-Webhooks/0.1 (+https://www.standardwebhooks.com/)",
    )
    metrics_port: int = setting(
        "WHK_DISPATCHER_METRICS_PORT",
        "TCP port of the dispatcher's own Prometheus /metrics (unauthenticated); 0 = not served. Off unless "
        "set: expose it only to the scraper's network.",
        default=0,
        check=_port_or_off,
    )
    metrics_host: str = setting(
        "WHK_DISPATCHER_METRICS_HOST",
        "Address the dispatcher's /metrics listens on (with WHK_DISPATCHER_METRICS_PORT).",
        default="127.0.0.1",
    )

    @property
    def connections_per_host(self) -> int:
        """The in-flight limit per host: WHK_DISPATCHER_HOST_CONCURRENCY, or half the pool (at least 4)."""
        if self.host_concurrency is not None:
            return self.host_concurrency
        return min(self.concurrency, max(4, self.concurrency // 2))

    def validate(self) -> None:
        """Cross-field checks (called once by load_settings)."""
        if self.host_concurrency is not None and self.host_concurrency > self.concurrency:
            raise SettingsError(
                f"WHK_DISPATCHER_HOST_CONCURRENCY={self.host_concurrency} is larger than "
                f"WHK_DISPATCHER_CONCURRENCY={self.concurrency}",
                hint="one host can never have more attempts in flight than the whole dispatcher",
            )
        if self.lease_seconds < 3 * self.attempt_timeout:
            raise SettingsError(
                f"WHK_LEASE_SECONDS={self.lease_seconds:g} is shorter than 3 x WHK_ATTEMPT_TIMEOUT="
                f"{self.attempt_timeout:g}",
                hint="a lease shorter than the work lets a second dispatcher deliver the same event twice",
            )
