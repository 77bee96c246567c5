"""Credential masking of stored HTTP request headers: the one rule behind the dispatcher's attempt log
(``dispatcher.request.loggable_headers``) and the development mock endpoints (``api.devmock``).

A header's value is replaced by ``MASK`` before it is stored when its name

* is one of the webhook's configured credential headers (``credential_names``: the outbound-auth header,
  whatever it is called, even a name WHK also sends itself), or
* is a well-known credential header (``Authorization``, ``Proxy-Authorization``, ``Cookie``,
  ``X-API-Key``, ``API-Key``) or contains a credential-looking word (``token``, ``secret``, ``password``,
  ``apikey``, ``api-key``, ``api_key``, ``auth``), unless it is one of the headers WHK itself sets on
  every delivery (``OWN_HEADERS``: the Standard Webhooks headers stay readable, so a stored request can
  still be verified).

Names compare case-insensitively; the stored names keep the case they were given in. Pure code.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["MASK", "OWN_HEADERS", "looks_secret", "mask_headers"]

MASK = "***"

# Header names whose values are never stored.
_SECRET_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
_SECRET_HINTS = ("token", "secret", "password", "apikey", "api-key", "api_key", "auth")

# Headers WHK itself sets on every delivery: not credentials, so their names are not searched for
# credential-looking words (a configured credential header is masked regardless).
OWN_HEADERS = frozenset(
    {"content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"}
)


def looks_secret(name: str) -> bool:
    """Whether a header of this name carries a credential by its name alone."""
    low = name.lower()
    return low in _SECRET_NAMES or any(h in low for h in _SECRET_HINTS)


def mask_headers(
    headers: Iterable[tuple[str, str]], *, credential_names: Collection[str] = ()
) -> dict[str, str]:
    """``headers`` as a dict to store, credentials replaced by ``MASK``. ``credential_names``: lower-case
    names that are credentials whatever they are called (the configured outbound-auth header)."""
    out: dict[str, str] = {}
    for name, value in headers:
        low = name.lower()
        secret = low in credential_names or (low not in OWN_HEADERS and looks_secret(name))
        out[name] = MASK if secret else value
    return out
