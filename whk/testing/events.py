"""Valid event envelopes for any registered event type and version, built from the catalogue's JSON Schemas.

The catalogue ships as package data (``catalogue.json``, generated from the seed catalogue by
``python -m whk.testing.catalogue --write``), so the factory needs no database. An integrator with event
types of their own passes them as ``EventFactory({name: {"versions": {"1.0": schema}}})`` or loads
them from a running WHK (``EventFactory.from_api``).

Values are the simplest that validate: required members only (plus overrides), ``const``/``enum`` first,
then the first non-null type, within ``minimum``/``maximum``/``minLength``/``minItems``. Every envelope
is validated against its schema before it is returned (``jsonschema_rs``, draft 2020-12), so a factory
that drifts from the contract fails loudly; ``validate=False`` builds a deliberately invalid one.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import jsonschema_rs

__all__ = ["CATALOGUE_RESOURCE", "EventFactory", "InvalidEvent", "load_catalogue", "value_for"]

CATALOGUE_RESOURCE: Final = "catalogue.json"
_FIXED_TIME: Final = datetime(2026, 1, 1, tzinfo=UTC)


class InvalidEvent(AssertionError):
    """An envelope (usually after overrides) does not validate against its event type's schema."""


def load_catalogue() -> dict[str, Any]:
    """The packaged catalogue: ``{"event_types": {name: {"description", "versions": {"M.m": schema}}}}``."""
    text = resources.files("whk.testing").joinpath(CATALOGUE_RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _first_type(schema: Mapping[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        non_null = [t for t in declared if t != "null"]
        return non_null[0] if non_null else "null"
    return declared if isinstance(declared, str) else None


def value_for(schema: Mapping[str, Any], name: str = "value", counter: Iterator[int] | None = None) -> Any:
    """The simplest value that validates against ``schema`` (a subset of JSON Schema: type, const, enum,
    required/properties, items/minItems, minimum/maximum, minLength, format date-time)."""
    numbers = counter if counter is not None else itertools.count(1)
    if "const" in schema:
        return copy.deepcopy(schema["const"])
    if schema.get("enum"):
        return copy.deepcopy(schema["enum"][0])
    for combinator in ("allOf", "anyOf", "oneOf"):
        if schema.get(combinator):
            return value_for(schema[combinator][0], name, numbers)
    kind = _first_type(schema) or ("object" if "properties" in schema else None)
    if kind == "object":
        props: Mapping[str, Any] = schema.get("properties", {})
        return {key: value_for(props.get(key, {}), key, numbers) for key in schema.get("required", [])}
    if kind == "array":
        item = schema.get("items", {})
        return [value_for(item, name, numbers) for _ in range(int(schema.get("minItems", 0)))]
    if kind in ("integer", "number"):
        low = schema.get("minimum")
        high = schema.get("maximum")
        value = next(numbers)
        if low is not None:
            value = max(value, int(low) if kind == "integer" else low)
        if high is not None:
            value = min(value, int(high) if kind == "integer" else high)
        return value
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string" or kind is None:
        if schema.get("format") == "date-time":
            return _FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{name}-{next(numbers)}"
        return text.ljust(int(schema.get("minLength", 0)), "x")
    return None


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, Mapping):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(override)


def _version_key(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


class EventFactory:
    """``factory("order.created", new={"id": 7})`` → ``{"type", "timestamp", "data"}`` valid for the
    latest version of ``order.created``; ``version="1.0"`` picks another. Keyword arguments are merged
    into ``data`` (dicts deeply, other values replaced)."""

    def __init__(
        self, event_types: Mapping[str, Any], *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.event_types = dict(event_types)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._validators: dict[tuple[str, str], Any] = {}

    @classmethod
    def packaged(cls) -> EventFactory:
        return cls(load_catalogue()["event_types"])

    @classmethod
    def from_api(cls, base_url: str, api_key: str) -> EventFactory:
        """The event types a running WHK has registered (``GET /api/whk/events/types`` and versions)."""
        from whk.testing.remote import fetch_event_types

        return cls(fetch_event_types(base_url, api_key))

    @property
    def names(self) -> list[str]:
        return sorted(self.event_types)

    def versions(self, event_type: str) -> list[str]:
        return sorted(self._entry(event_type)["versions"], key=_version_key)

    def schema(self, event_type: str, version: str | None = None) -> dict[str, Any]:
        versions = self._entry(event_type)["versions"]
        chosen = version or self.versions(event_type)[-1]
        if chosen not in versions:
            raise KeyError(
                f"{event_type} has no version {chosen} (known: {', '.join(self.versions(event_type))})"
            )
        schema: dict[str, Any] = versions[chosen]
        return schema

    def data(self, event_type: str, version: str | None = None, **overrides: Any) -> Any:
        return _merge(value_for(self.schema(event_type, version)), overrides)

    def __call__(
        self,
        event_type: str,
        version: str | None = None,
        *,
        timestamp: datetime | None = None,
        validate: bool = True,
        **overrides: Any,
    ) -> dict[str, Any]:
        data = self.data(event_type, version, **overrides)
        if validate:
            self.check(event_type, data, version)
        when = (timestamp or self._clock()).astimezone(UTC)
        return {"type": event_type, "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "data": data}

    def check(self, event_type: str, data: Any, version: str | None = None) -> None:
        """Raise ``InvalidEvent`` naming the first problem when ``data`` breaks the schema."""
        chosen = version or self.versions(event_type)[-1]
        validator = self._validators.get((event_type, chosen))
        if validator is None:
            validator = jsonschema_rs.validator_for(self.schema(event_type, chosen))
            self._validators[(event_type, chosen)] = validator
        for error in validator.iter_errors(data):
            where = "/".join(str(p) for p in error.instance_path) or "(root)"
            raise InvalidEvent(f"{event_type} {chosen}: data at {where}: {error.message}")

    def _entry(self, event_type: str) -> Mapping[str, Any]:
        entry = self.event_types.get(event_type)
        if entry is None:
            raise KeyError(f"unknown event type {event_type!r} (known: {', '.join(self.names)})")
        found: Mapping[str, Any] = entry
        return found
