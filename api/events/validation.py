"""Payload checks against an event type's JSON Schema with jsonschema-rs (every error, with a pointer)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

__all__ = ["compile_error", "pointer", "schema_errors"]


def pointer(parts: list[str | int] | tuple[str | int, ...], prefix: str = "") -> str:
    """RFC 6901 JSON pointer of a path under ``prefix``."""
    return prefix + "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def schema_errors(schema: dict[str, Any], instance: Any, *, prefix: str = "/data") -> list[dict[str, str]]:
    """Every validation error of ``instance`` as ``{"pointer", "message"}`` (empty = valid).

    A schema that does not compile is reported as one error at ``/schema``.
    """
    try:
        validator = jsonschema_rs.validator_for(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        return [
            {
                "pointer": "/schema",
                "message": f"the stored schema does not compile: {str(exc).splitlines()[0]}",
            }
        ]
    return [
        {"pointer": pointer(list(err.instance_path), prefix), "message": err.message}
        for err in validator.iter_errors(instance)
    ]


def compile_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not a usable JSON Schema (None = it compiles)."""
    try:
        jsonschema_rs.validator_for(schema)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        return str(exc).splitlines()[0]
    return None
