"""JWT verification with one pinned algorithm (pyjwt).

Refused (``JwtRejected``, answered 401): another algorithm in the header (``none``, HS↔RS swap), a bad
signature, ``exp`` in the past, ``nbf`` in the future, ``aud`` or ``iss`` not the configured ones, a
missing ``exp``/``sub``/``aud``/``iss``. ``leeway`` (WHK_JWT_LEEWAY) absorbs clock skew.

Claims WHK reads: ``sub`` (the actor), ``scope`` (space-separated) or ``scp`` (list) — ``whk:admin``
makes an admin — and the consumer claim (WHK_JWT_CONSUMER_CLAIM, default ``whk_consumer``) naming the
tenant of a non-admin token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jwt

from whk.errors import SettingsError, WhkError
from whk.settings import Settings

__all__ = ["ADMIN_CLAIM_SCOPE", "JwtClaims", "JwtRejected", "JwtVerifier"]

ADMIN_CLAIM_SCOPE = "whk:admin"


class JwtRejected(WhkError):
    """The token is not acceptable; ``message`` says why (safe to return to the caller)."""


@dataclass(frozen=True, slots=True)
class JwtClaims:
    subject: str
    admin: bool
    consumer_id: int | None
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class JwtVerifier:
    algorithm: str
    key: Any
    audience: str
    issuer: str
    leeway: float
    consumer_claim: str

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        """None when JWT auth is not configured (no secret and no public key)."""
        api = settings.api
        alg = api.jwt_algorithm
        if api.jwt_secret is None and api.jwt_public_key_file is None:
            return None
        if not api.jwt_issuer:
            raise SettingsError("WHK_JWT_ISSUER is required when JWT auth is configured")
        key: Any
        if alg.startswith("HS"):
            if not api.jwt_secret or len(api.jwt_secret.encode()) < 32:
                raise SettingsError(
                    f"WHK_JWT_ALGORITHM={alg} needs WHK_JWT_SECRET of at least 32 bytes",
                    hint="or pin an asymmetric algorithm and set WHK_JWT_PUBLIC_KEY_FILE",
                )
            if api.jwt_public_key_file is not None:
                raise SettingsError("WHK_JWT_PUBLIC_KEY_FILE is set but WHK_JWT_ALGORITHM is symmetric")
            key = api.jwt_secret.encode()
        else:
            if api.jwt_public_key_file is None or api.jwt_secret is not None:
                raise SettingsError(
                    f"WHK_JWT_ALGORITHM={alg} needs WHK_JWT_PUBLIC_KEY_FILE (and no WHK_JWT_SECRET)"
                )
            try:
                pem = api.jwt_public_key_file.read_bytes()
                key = jwt.algorithms.get_default_algorithms()[alg].prepare_key(pem)
            except (OSError, ValueError, TypeError, jwt.PyJWTError) as exc:
                raise SettingsError(
                    f"WHK_JWT_PUBLIC_KEY_FILE cannot be read as a {alg} public key: {exc}"
                ) from exc
        return cls(
            algorithm=alg,
            key=key,
            audience=api.jwt_audience,
            issuer=api.jwt_issuer,
            leeway=api.jwt_leeway,
            consumer_claim=api.jwt_consumer_claim,
        )

    def verify(self, token: str) -> JwtClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise JwtRejected("malformed token") from exc
        if header.get("alg") != self.algorithm:
            raise JwtRejected(f"token algorithm {header.get('alg')!r} is not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "sub", "aud", "iss"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError as exc:
            raise JwtRejected("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise JwtRejected("token not yet valid") from exc
        except jwt.InvalidAudienceError as exc:
            raise JwtRejected("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise JwtRejected("token issuer is not accepted") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise JwtRejected(f"token lacks the {exc.claim!r} claim") from exc
        except jwt.PyJWTError as exc:
            raise JwtRejected("token signature or format is invalid") from exc
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise JwtRejected("token lacks the 'sub' claim")
        scopes = _scopes(claims)
        admin = ADMIN_CLAIM_SCOPE in scopes
        consumer_id: int | None = None
        raw = claims.get(self.consumer_claim)
        if raw is not None:
            if isinstance(raw, bool) or not isinstance(raw, int | str) or not str(raw).isdigit():
                raise JwtRejected(f"claim {self.consumer_claim!r} must be a consumer id")
            consumer_id = int(raw)
        if not admin and consumer_id is None:
            raise JwtRejected(f"token names no consumer ({self.consumer_claim!r}) and is not whk:admin")
        return JwtClaims(
            subject=sub,
            admin=admin and consumer_id is None,
            consumer_id=consumer_id,
            scopes=frozenset(s for s in scopes if s != ADMIN_CLAIM_SCOPE),
        )


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return frozenset(raw.split())
    if isinstance(raw, list):
        return frozenset(s for s in raw if isinstance(s, str))
    return frozenset()
