"""Patterns and small shapes shared by several resource packages."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar.params import PathParameter, QueryParameter
from msgspec import Meta

# Same rule as the CHECK on whk_02_eventos.name: dotted lower-case words, at least two.
EVENT_TYPE_RE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# Subscriptions: an exact type, a prefix wildcard ('order.*') or everything ('*').
EVENT_PATTERN_RE = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$"

# Dialect-neutral (no \s): JSON Schema validators (ECMA regex) and msgspec (Python re) read it alike.
EMAIL_RE = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$"
Email = Annotated[str, Meta(max_length=320, pattern=EMAIL_RE, examples=["ops@example.com"])]

# A point in time in a body: RFC 3339 with an offset (documented as format date-time; a naive time
# would be read in the database session's zone).
Timestamp = Annotated[datetime, Meta(tz=True)]

# Limits shared by consumers and webhooks; the same bounds are SQL CHECKs (docs/configuration.md lists every
# bounded setting). The rate has a floor: a denormal rate underflows the claim's token-bucket arithmetic.
RatePerSecond = Annotated[
    float,
    Meta(ge=0.001, le=1_000_000, description="requests per second (0.001 to 1,000,000; null = no limit)"),
]
Burst = Annotated[int, Meta(ge=1, le=1_000_000, description="token bucket size (1 to 1,000,000)")]

# Ids are bigint: the documented and enforced range of every id in a path.
INT64_MAX = 2**63 - 1
IdPath = Annotated[int, PathParameter(ge=1, le=INT64_MAX, description="id (1 to 2^63-1)")]

# Query parameters: the constraints must sit on QueryParameter (Litestar ignores msgspec Meta there).
LimitQ = Annotated[int, QueryParameter(ge=1, le=500, description="page size")]
CursorQ = Annotated[
    str | None,
    QueryParameter(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="next_cursor of the previous page",
    ),
]
