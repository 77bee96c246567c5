"""Declarative WHK_* environment fields: one parser for every settings section.

A section is a frozen dataclass whose fields carry ``setting(...)`` metadata: the variable name, a
one-line doc and (optionally) a validator. ``load_section`` reads the environment once; the docs
generator and the "unknown variable" check read the same metadata, so code and docs cannot drift.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from whk.errors import SettingsError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def setting(
    env: str,
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | None = None,
    check: Callable[[Any], str | None] | None = None,
    default_doc: str | None = None,
) -> Any:
    """Declare a settings field bound to environment variable ``env``.

    ``check`` returns an error sentence for a bad (parsed) value, or None.
    ``default_doc`` describes a computed default in the docs.
    """
    meta = {"env": env, "doc": doc, "check": check, "default_doc": default_doc}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def positive_or_unset(value: float | None) -> str | None:
    return None if value is None or value > 0 else "must be greater than 0"


def non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or greater"


def one_of(*choices: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _parse_scalar(kind: Any, raw: str) -> Any:
    if kind is str:
        return raw
    if kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected true/false")
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    if kind is Path:
        return Path(raw).expanduser()
    if kind in (ipaddress.IPv4Network | ipaddress.IPv6Network, "network"):
        return ipaddress.ip_network(raw.strip(), strict=False)
    raise TypeError(f"unsupported settings type {kind!r}")


def parse_value(annotation: Any, raw: str) -> Any:
    """Parse ``raw`` according to a field annotation (scalars, optionals, comma-separated tuples)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if raw.strip() == "":
            return None
        if len(args) == 1:
            return parse_value(args[0], raw)
        if set(args) == {ipaddress.IPv4Network, ipaddress.IPv6Network}:
            return ipaddress.ip_network(raw.strip(), strict=False)
        raise TypeError(f"unsupported union {annotation!r}")
    if origin is tuple:
        (item, _ellipsis) = typing.get_args(annotation)
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        return tuple(parse_value(item, p) for p in parts)
    return _parse_scalar(annotation, raw)


def env_fields(section: type[Any]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(section) if "env" in f.metadata]


def load_section(section: type[T], env: Mapping[str, str]) -> T:
    """Build one settings section from ``env``; raise SettingsError naming the variable."""
    hints = typing.get_type_hints(section)
    values: dict[str, Any] = {}
    for f in env_fields(section):
        name = f.metadata["env"]
        if name not in env:
            continue
        raw = env[name]
        try:
            value = parse_value(hints[f.name], raw)
        except (ValueError, TypeError) as exc:
            raise SettingsError(
                f"{name}={raw!r} is not valid: {exc}", hint=f"see {name} in docs/configuration.md"
            ) from exc
        values[f.name] = value
    obj = section(**values)
    for f in env_fields(section):
        check = f.metadata.get("check")
        if check is None:
            continue
        problem = check(getattr(obj, f.name))
        if problem:
            name = f.metadata["env"]
            raise SettingsError(
                f"{name}={getattr(obj, f.name)!r} {problem}", hint=f"see {name} in docs/configuration.md"
            )
    return obj


def describe_default(f: dataclasses.Field[Any]) -> str:
    if f.metadata.get("default_doc"):
        return str(f.metadata["default_doc"])
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is None:
        return "(unset)"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
