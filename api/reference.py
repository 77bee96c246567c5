"""The generated reference part of ``docs/api-resources.md``: every operation's parameters, request and
response shapes, and every body schema's fields with their bounds, rendered from the OpenAPI document
the API serves at ``/schema/openapi.json``.

``python -m api.reference --write docs/api-resources.md`` replaces the part between the ``BEGIN`` and
``END`` marker lines; ``--check`` exits 1 when the committed part differs from a fresh rendering
(``tests/unit/test_api_reference.py`` does the same, so a stale example fails the suite).

Examples are derived from the schemas, deterministically: a field's first ``examples`` entry, else its
``default``, else its lowest allowed value (``minimum``, the first ``enum`` value, a placeholder string of
the right format). A request example is minimal: the required fields (or, when none is required, those
with a documented example); a response example shows every field. Rendering is pure: ``render(doc)``
takes the document as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BEGIN", "END", "document", "example", "render", "replace_section"]

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m api.reference --write docs/api-resources.md) -->"
END = "<!-- END GENERATED REFERENCE -->"

_METHODS = ("get", "put", "post", "patch", "delete")
_REF = "#/components/schemas/"
_FORMAT_EXAMPLES = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "email": "ops@example.com",
    "uri": "https://erp.example.com/hooks/whk",
}
_TIME_NAME = re.compile(r"(_at|_from|_to|^since|^until)$")
_BOUND_WORDS = (
    ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "≤ {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "length ≥ {}"),
    ("maxLength", "length ≤ {}"),
    ("minItems", "≥ {} items"),
    ("maxItems", "≤ {} items"),
    ("maxProperties", "≤ {} keys"),
)


def document(settings: Any = None) -> dict[str, Any]:
    """The OpenAPI document of the API as JSON, exactly as ``/schema/openapi.json`` serves it (built from
    the app without a database; the document does not depend on the settings)."""
    from api.app import complete_document, create_app
    from whk.settings import load_settings

    app = create_app(settings if settings is not None else load_settings({}))
    complete_document(app)
    doc: dict[str, Any] = json.loads(json.dumps(app.openapi_schema.to_schema()))
    return doc


def _resolve(doc: Mapping[str, Any], schema: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        resolved: Mapping[str, Any] = doc["components"]["schemas"][ref[len(_REF) :]]
        return resolved
    return schema


def _non_null(variants: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [v for v in variants if v.get("type") != "null"]


def _string_example(schema: Mapping[str, Any]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_EXAMPLES:
        return _FORMAT_EXAMPLES[fmt]
    low = int(schema.get("minLength", 1))
    return "string" if low <= 6 else "s" * low


def _number_example(schema: Mapping[str, Any], kind: str) -> int | float:
    if "minimum" in schema:
        low: int | float = schema["minimum"]
    elif "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + 1
    else:
        low = 1
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if high is not None and low > high:
        low = high
    if kind == "integer":
        return int(low)
    if "exclusiveMaximum" in schema and low >= schema["exclusiveMaximum"]:
        return float(schema["exclusiveMaximum"]) / 2
    return float(low)


def example(doc: Mapping[str, Any], schema: Mapping[str, Any], *, full: bool, depth: int = 0) -> Any:
    """A value of ``schema``. ``full``: every property (responses); else a minimal request: the required
    properties, or those with a documented example when none is required."""
    if depth > 12:
        return None
    if schema.get("examples"):
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if "$ref" in schema:
        return example(doc, _resolve(doc, schema), full=full, depth=depth + 1)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            variants = _non_null(schema[key]) or schema[key]
            return example(doc, variants[0], full=full, depth=depth + 1)
    if "enum" in schema:
        return next((v for v in schema["enum"] if v is not None), None)
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return _object_example(doc, schema, full=full, depth=depth)
    if kind == "array":
        items = schema.get("items")
        return [example(doc, items, full=full, depth=depth + 1)] if isinstance(items, Mapping) else []
    if kind == "string":
        return _string_example(schema)
    if kind in ("integer", "number"):
        return _number_example(schema, kind)
    if kind == "boolean":
        return False
    return None


def _object_example(doc: Mapping[str, Any], schema: Mapping[str, Any], *, full: bool, depth: int) -> Any:
    props: Mapping[str, Any] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    out: dict[str, Any] = {}
    for name, prop in props.items():
        if full or name in required or (not required and _has_example(prop)):
            value = example(doc, prop, full=full, depth=depth + 1)
            if value == "string" and _TIME_NAME.search(name):
                value = _FORMAT_EXAMPLES["date-time"]  # msgspec gives a datetime field no format
            out[name] = value
    return out


def _has_example(schema: Mapping[str, Any]) -> bool:
    if schema.get("examples"):
        return True
    return any(v.get("examples") for v in _non_null(schema.get("anyOf", ())))


def _type_text(schema: Mapping[str, Any]) -> str:
    """A short type: ``integer``, ``string (date-time)``, ``[WebhookCreate](#webhookcreate)``, ``list of
    string``, ``"a" | "b"``, ``… | null``."""
    if "$ref" in schema:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " | ".join(_type_text(v) for v in schema[key])
    if "enum" in schema:
        return " | ".join("null" if v is None else f"`{json.dumps(v)}`" for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(_type_text({**schema, "type": k}) for k in kind)
    if kind == "array":
        items = schema.get("items")
        return f"list of {_type_text(items)}" if isinstance(items, Mapping) else "list"
    if kind == "object" and "additionalProperties" in schema and not schema.get("properties"):
        values = schema["additionalProperties"]
        return f"map of {_type_text(values)}" if isinstance(values, Mapping) else "object"
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    return str(kind) if kind else "any JSON"


def _bounds_text(schema: Mapping[str, Any]) -> str:
    """Every bound of a schema and of its non-null variants, in words."""
    parts: list[str] = []
    sources = [schema, *_non_null(schema.get("anyOf", ())), *_non_null(schema.get("oneOf", ()))]
    for source in sources:
        for key, words in _BOUND_WORDS:
            if key in source and not (key in ("minLength", "minItems") and source[key] == 0):
                parts.append(words.format(_number_text(source[key])))
        if "pattern" in source:
            parts.append(f"pattern {_code(source['pattern'])}")
        names = source.get("propertyNames")
        if isinstance(names, Mapping) and "pattern" in names:
            parts.append(f"keys match {_code(names['pattern'])}")
        items = source.get("items")
        if isinstance(items, Mapping) and "$ref" not in items:
            inner = _bounds_text(items)
            if inner:
                parts.append(f"each item {inner}")
        values = source.get("additionalProperties")
        if isinstance(values, Mapping) and "$ref" not in values:
            inner = _bounds_text(values)
            if inner:
                parts.append(f"each value {inner}")
    return ", ".join(parts)


def _number_text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and abs(value) >= 10_000 else str(value)


def _code(text: str) -> str:
    """Inline code, also for text that contains a backtick."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else ""


def _clean(text: str) -> str:
    """A docstring as one Markdown paragraph (reST ``code`` → Markdown `code`)."""
    return re.sub(r"\s+", " ", text.replace("``", "`")).strip()


def _json_block(value: Any) -> list[str]:
    return ["```json", json.dumps(value, indent=2, ensure_ascii=False), "```"]


def _parameters(op: Mapping[str, Any]) -> list[str]:
    params = [p for p in op.get("parameters", ()) if p.get("in") in ("path", "query")]
    if not params:
        return []
    lines = ["| parameter | in | type | bounds | description |", "| --- | --- | --- | --- | --- |"]
    for p in params:
        schema = p.get("schema", {})
        name = f"`{p['name']}`" + (" (required)" if p.get("required") else "")
        description = _clean(str(p.get("description") or schema.get("description") or ""))
        lines.append(
            f"| {name} | {p['in']} | {_cell(_type_text(schema))} | {_cell(_bounds_text(schema))} "
            f"| {_cell(description)} |"
        )
    return [*lines, ""]


def _operation(doc: Mapping[str, Any], method: str, path: str, op: Mapping[str, Any]) -> list[str]:
    lines = [f"#### `{method.upper()} {path}`", ""]
    summary = _clean(str(op.get("summary") or ""))
    lines += [summary, ""] if summary else []
    if op.get("security") == []:
        lines += ["No credentials needed.", ""]
    lines += _parameters(op)
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None:
        schema = body.get("schema", {})
        lines += [
            f"Request body: {_type_text(schema)}",
            "",
            *_json_block(example(doc, schema, full=False)),
            "",
        ]
    errors: list[str] = []
    for code, response in op.get("responses", {}).items():
        if not code.startswith("2"):
            errors.append(code)
            continue
        content: Mapping[str, Any] = response.get("content") or {}
        if not content:
            lines += [f"Answers `{code}` with no body.", ""]
            continue
        for media, spec in content.items():
            schema = spec.get("schema", {})
            if media == "application/json" and schema and schema != {"type": "object"}:
                value = example(doc, schema, full=True)
                lines += [f"Answers `{code}` `{media}`: {_type_text(schema)}", "", *_json_block(value), ""]
            else:
                lines += [f"Answers `{code}` `{media}`.", ""]
    if errors:
        lines += [f"Errors (application/problem+json): {', '.join(f'`{c}`' for c in sorted(errors))}.", ""]
    return lines


def _schema_section(name: str, schema: Mapping[str, Any]) -> list[str]:
    lines = [f"#### {name}", ""]
    description = _clean(str(schema.get("description") or ""))
    if description:
        lines += [description, ""]
    props: Mapping[str, Any] = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {_type_text(schema)}.", ""]
    required = set(schema.get("required", ()))
    closed = schema.get("additionalProperties") is False
    lines += [
        "| field | type | required | default | bounds | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for field, prop in props.items():
        default = _code(json.dumps(prop["default"])) if "default" in prop else ""
        described = prop.get("description") or next(
            (v["description"] for v in prop.get("anyOf", ()) if v.get("description")), ""
        )
        lines.append(
            f"| `{field}` | {_cell(_type_text(prop))} | {'yes' if field in required else ''} "
            f"| {_cell(default)} | {_cell(_bounds_text(prop))} | {_cell(_clean(str(described)))} |"
        )
    if closed:
        lines += ["", "Other fields are refused (`400`)."]
    return [*lines, ""]


def render(doc: Mapping[str, Any]) -> str:
    """The generated reference (without the marker lines) for an OpenAPI document given as JSON."""
    lines = [
        "## Reference: every route and shape",
        "",
        "Generated from the OpenAPI document the API serves at `/schema/openapi.json` (do not edit by",
        "hand: `python -m api.reference --write docs/api-resources.md`; a test fails when this part is",
        "stale). Examples are derived from the schemas: a request example is minimal (the required fields,",
        "or those with a documented example when none is required), a response example shows every field.",
        "Every error is application/problem+json ([Problem](#problem)); `docs/api.md` says when each",
        "status is answered.",
        "",
        "### Operations",
        "",
    ]
    tags: dict[str, list[tuple[str, str, Mapping[str, Any]]]] = {}
    for path, item in doc.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue  # the docs UI itself
        for method in _METHODS:
            op = item.get(method)
            if op is not None:
                tag = (op.get("tags") or ["other"])[0]
                tags.setdefault(tag, []).append((method, path, op))
    for tag, ops in tags.items():
        lines += [f"### {tag}", ""]
        for method, path, op in sorted(ops, key=lambda o: (o[1], _METHODS.index(o[0]))):
            lines += _operation(doc, method, path, op)
    lines += ["### Schemas", ""]
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        lines += _schema_section(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def replace_section(text: str, rendered: str) -> str:
    """``text`` with the part between the marker lines replaced by ``rendered``."""
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    return f"{text[:start]}\n{rendered}{text[end:]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.reference", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="FILE", help="replace the generated part of FILE")
    group.add_argument("--check", metavar="FILE", help="exit 1 when the generated part of FILE is stale")
    args = parser.parse_args(argv)
    rendered = render(document())
    if args.write is None and args.check is None:
        sys.stdout.write(rendered)
        return 0
    path = Path(args.write or args.check)
    text = path.read_text(encoding="utf-8")
    fresh = replace_section(text, rendered)
    if args.check is not None:
        if fresh != text:
            sys.stderr.write(
                f"{path}: the generated reference is stale; run python -m api.reference --write\n"
            )
            return 1
        return 0
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
