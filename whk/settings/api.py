"""API settings: listening address, request limits, authentication and client addresses."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from whk.settings._fields import non_negative, one_of, positive, setting

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

JWT_ALGORITHMS = ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """API"""

    host: str = setting("WHK_API_HOST", "Address the API listens on.", default="127.0.0.1")
    port: int = setting("WHK_API_PORT", "TCP port of the API.", default=8080, check=positive)
    workers: int = setting(
        "WHK_API_WORKERS", "API worker processes started by `whk api`.", default=1, check=positive
    )
    max_body_bytes: int = setting(
        "WHK_API_MAX_BODY_BYTES",
        "Largest request body the API reads; bigger bodies get 413.",
        default=1_048_576,
        check=positive,
    )
    trusted_proxies: tuple[Network, ...] = setting(
        "WHK_API_TRUSTED_PROXIES",
        "Comma-separated CIDRs of reverse proxies whose X-Forwarded-For is believed; from anyone else "
        "the header is ignored and the TCP peer is the client address.",
        default=(),
    )
    admin_allowed_ips: tuple[Network, ...] = setting(
        "WHK_API_ADMIN_ALLOWED_IPS",
        "Comma-separated CIDRs admin credentials may call from (empty: any). Consumers have their own "
        "allowlist (whk_04_assinantes.allowed_ips).",
        default=(),
    )
    rate_limit_window: int = setting(
        "WHK_API_RATE_LIMIT_WINDOW",
        "Seconds of the per-consumer API rate-limit window (the limit itself is per consumer, default "
        "from whk_05_configuracoes 'rate_limit.api_per_minute' scaled to this window).",
        default=60,
        check=positive,
    )
    jwt_algorithm: str = setting(
        "WHK_JWT_ALGORITHM",
        "The one JWT algorithm accepted (pinned; tokens saying anything else are refused).",
        default="HS256",
        check=one_of(*JWT_ALGORITHMS),
    )
    jwt_secret: str | None = setting(
        "WHK_JWT_SECRET",
        "Shared secret for HS* JWTs (at least 32 bytes). Unset with no public key: JWT auth is off.",
        default=None,
    )
    jwt_public_key_file: Path | None = setting(
        "WHK_JWT_PUBLIC_KEY_FILE",
        "PEM public key for RS*/ES*/EdDSA JWTs.",
        default=None,
    )
    jwt_audience: str = setting("WHK_JWT_AUDIENCE", "Required `aud` of JWTs.", default="whk-api")
    jwt_issuer: str | None = setting(
        "WHK_JWT_ISSUER", "Required `iss` of JWTs (required when JWT auth is on).", default=None
    )
    jwt_leeway: float = setting(
        "WHK_JWT_LEEWAY", "Clock skew in seconds tolerated on exp/nbf/iat.", default=30.0, check=non_negative
    )
    jwt_consumer_claim: str = setting(
        "WHK_JWT_CONSUMER_CLAIM",
        "JWT claim carrying the consumer id (tenant); tokens with scope whk:admin need none.",
        default="whk_consumer",
    )
    db_role: str | None = setting(
        "WHK_API_DB_ROLE",
        "Role the API switches to on every pooled connection (SET ROLE), e.g. whk_app, so a privileged "
        "DSN still cannot rewrite the audit trail.",
        default=None,
    )
    dashboard_session_s: int = setting(
        "WHK_DASHBOARD_SESSION_S",
        "Lifetime in seconds of a dashboard sign-in (the signed session cookie expires with it; the key "
        "behind it is re-checked on every page, so revoking the key ends the session at once).",
        default=28_800,
        check=positive,
    )
    docs_enabled: bool = setting(
        "WHK_API_DOCS",
        "Serve the OpenAPI document and docs UI under /schema (false: 404 there; requests are still "
        "checked against the document).",
        default=True,
    )
