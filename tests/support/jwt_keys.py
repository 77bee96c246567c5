"""Keys and token factory for JWT tests (HS256 secret, an RSA key pair written to a PEM file)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HS_SECRET = "test-hs256-secret-that-is-long-enough-0123456789"
ISSUER = "https://issuer.test"
AUDIENCE = "whk-api"


def rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def write_public(tmp: Path, public: bytes) -> Path:
    path = tmp / "jwt-public.pem"
    path.write_bytes(public)
    return path


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now - 10,
        "exp": now + 600,
    }
    for k, v in overrides.items():
        if v is None:
            base.pop(k, None)
        else:
            base[k] = v
    return base


def hs_token(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), HS_SECRET, algorithm="HS256")


def rs_token(private: bytes, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), private, algorithm="RS256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def none_token(**overrides: Any) -> str:
    """An unsigned token (alg none)."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims(**overrides)).encode())
    return f"{header}.{body}."


def hs_forged_with(secret: bytes, **overrides: Any) -> str:
    """HS256 token MAC'd with arbitrary bytes (e.g. the RSA public key PEM: the classic swap attack)."""
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims(**overrides)).encode())
    sig = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def tamper(token: str) -> str:
    """Change the payload (sub -> mallory) keeping the original signature."""
    header, body, sig = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data["sub"] = "mallory"
    data["scope"] = "whk:admin"
    return f"{header}.{_b64(json.dumps(data).encode())}.{sig}"
