"""Operations worker settings: the pgqueuer job system (schedules, notification retries) and the alert
channels' endpoints."""

from __future__ import annotations

from dataclasses import dataclass

from whk.settings._fields import positive, setting

# Periods croniter's seconds field repeats evenly within a minute (``*/N`` with N dividing 60).
EVAL_PERIODS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)


def _eval_period(value: int) -> str | None:
    if value in EVAL_PERIODS:
        return None
    return "must divide a minute evenly: " + ", ".join(str(p) for p in EVAL_PERIODS)


def _attempts(value: int) -> str | None:
    return None if 1 <= value <= 20 else "must be 1 to 20"


def _horizon(value: int) -> str | None:
    return None if 60 <= value <= 86400 else "must be 60 to 86400"


def _port_or_off(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (1-65535), or 0 for off"


def _optional_base(value: str | None) -> str | None:
    if value is None or value.startswith(("http://", "https://")):
        return None
    return "must be an http(s) URL"


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """Operations worker"""

    dispatcher_run_jobs: bool = setting(
        "WHK_DISPATCHER_RUN_JOBS",
        "Run the operations jobs (alert evaluation, notifications, partitions) inside `whk dispatcher` "
        "too, as a second process it starts; false: only `whk worker` runs them.",
        default=True,
    )
    alert_eval_every_s: int = setting(
        "WHK_ALERT_EVAL_EVERY_S",
        "Seconds between alert evaluations (a pgqueuer schedule: once per period across all workers).",
        default=15,
        check=_eval_period,
    )
    rollup_horizon_s: int = setting(
        "WHK_KPI_ROLLUP_HORIZON_S",
        "How far back each evaluation rebuilds the per-minute attempt roll-up (attempts recorded later "
        "than this after their start are not counted).",
        default=300,
        check=_horizon,
    )
    worker_concurrency: int = setting(
        "WHK_WORKER_CONCURRENCY",
        "Jobs one worker runs at a time (notifications are I/O bound).",
        default=20,
        check=positive,
    )
    job_heartbeat_timeout_s: float = setting(
        "WHK_JOB_HEARTBEAT_TIMEOUT_S",
        "A picked job whose worker stopped beating for this long is picked again by another worker.",
        default=30.0,
        check=positive,
    )
    notify_timeout_s: float = setting(
        "WHK_NOTIFY_TIMEOUT_S",
        "Overall deadline of one notification attempt (HTTP or SMTP), seconds.",
        default=10.0,
        check=positive,
    )
    notify_max_attempts: int = setting(
        "WHK_NOTIFY_MAX_ATTEMPTS",
        "Attempts of one notification before it is recorded as failed in the alert history.",
        default=5,
        check=_attempts,
    )
    notify_retry_delay_s: float = setting(
        "WHK_NOTIFY_RETRY_DELAY_S",
        "Delay before a notification's first retry; each further retry doubles it (at most 5 minutes).",
        default=5.0,
        check=positive,
    )
    pagerduty_events_url: str = setting(
        "WHK_PAGERDUTY_EVENTS_URL",
        "PagerDuty Events API v2 endpoint (point it at a local receiver in development).",
        default="https://events.pagerduty.com/v2/enqueue",
        check=_optional_base,
    )
    worker_metrics_port: int = setting(
        "WHK_WORKER_METRICS_PORT",
        "TCP port of the operations worker's own Prometheus /metrics (notifications sent, alert "
        "evaluations; unauthenticated); 0 = not served. Off unless set: expose it only to the scraper's "
        "network, and give each worker on a host its own port.",
        default=0,
        check=_port_or_off,
    )
    worker_metrics_host: str = setting(
        "WHK_WORKER_METRICS_HOST",
        "Address the worker's /metrics listens on (with WHK_WORKER_METRICS_PORT).",
        default="127.0.0.1",
    )
    slack_base_url: str | None = setting(
        "WHK_SLACK_BASE_URL",
        "When set, Slack incoming-webhook URLs are sent to this base instead of their own scheme and host "
        "(the path is kept): a local receiver in development.",
        default=None,
        check=_optional_base,
    )

    @property
    def eval_cron(self) -> str:
        """The schedule of alert evaluation in croniter's six-field form (the sixth field is seconds)."""
        if self.alert_eval_every_s == 60:
            return "* * * * * 0"
        return f"* * * * * */{self.alert_eval_every_s}"
