"""Patterns and small shapes shared by several resource packages."""

from __future__ import annotations

from typing import Annotated

from litestar.params import QueryParameter

# Same rule as the CHECK on whk_02_eventos.name: dotted lower-case words, at least two.
EVENT_TYPE_RE = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
# Subscriptions: an exact type, a prefix wildcard ('order.*') or everything ('*').
EVENT_PATTERN_RE = r"^(\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$"

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
