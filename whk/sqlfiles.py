"""Locating the project's SQL and loading named query blocks.

Runtime queries live in ``queries.sql`` files next to their only caller, as named blocks::

    -- name: due_deliveries :many
    SELECT ...;

``load_queries`` parses such a file once (callers keep the result, e.g. on their repository object).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)(?:\s+:(\w+))?\s*$", re.MULTILINE)


def sql_root() -> Path:
    """The repository's ``sql/`` directory (migrations, functions, triggers, schema)."""
    return Path(__file__).resolve().parent.parent / "sql"


def parse_named_queries(text: str, *, origin: str = "<string>") -> dict[str, str]:
    """Split ``text`` into ``{name: sql}``; duplicate or empty blocks are programming errors."""
    matches = list(_NAME.finditer(text))
    queries: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[m.end() : end].strip()
        name = m.group(1)
        if not body:
            raise ValueError(f"{origin}: query {name!r} is empty")
        if name in queries:
            raise ValueError(f"{origin}: query {name!r} is defined twice")
        queries[name] = body.rstrip(";").strip()
    return queries


def load_queries(package: str, resource: str = "queries.sql") -> dict[str, str]:
    """Load the named blocks of ``resource`` inside ``package``."""
    text = resources.files(package).joinpath(resource).read_text(encoding="utf-8")
    return parse_named_queries(text, origin=f"{package}/{resource}")
