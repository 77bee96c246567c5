"""Keyset pagination, allow-listed filters and sorts shared by the resource list endpoints.

A list query is a named SQL block with three holes that only this module fills::

    SELECT ... FROM whk.whk_03_entregas d WHERE {where} ORDER BY {order} LIMIT %(limit)s

* ``{where}``: the tenant predicate, then one predicate per filter the caller sent, each taken from
  the endpoint's allow-list (:class:`FilterSpec`), values always bound as parameters;
* ``{order}``: ``<sort column> <dir>, <tie-breaker id> <dir>`` from the endpoint's sort allow-list,
  identifiers composed with :class:`psycopg.sql.Identifier`;
* the keyset predicate ``(sort, id) < (%(k_sort)s, %(k_id)s)`` (``>`` ascending) when a cursor is given.

A :class:`Listing` bundles one such query with its row type and allow-lists; ``Listing.page`` is the
only code that builds, runs and pages a list query (every resource's list endpoint goes through it).

Cursors are opaque base64url JSON ``[sort_name, value, id]``; a cursor made for another sort is refused
(422) instead of silently skipping rows. Unknown filter or sort names never reach SQL.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import msgspec
from psycopg import AsyncConnection, sql

from api.errors import Unprocessable
from api.rows import fetch_all

__all__ = [
    "CursorError",
    "FilterSpec",
    "ListPlan",
    "Listing",
    "SortSpec",
    "build_list_query",
    "decode_cursor",
    "encode_cursor",
    "next_cursor",
]

T = TypeVar("T")
Op = Literal["=", ">=", "<", "<=", ">", "any", "prefix", "contains"]


class CursorError(Unprocessable):
    """A cursor that is not ours, is corrupt, or belongs to another sort order (a 422 problem: the
    value fits the documented pattern, its content is refused)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, errors=[{"pointer": "/query/cursor", "message": detail}])


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """One allow-listed filter: query parameter ``name`` compares ``column`` with ``op``.

    ``column`` may be qualified (``"d.status"``); ``cast`` is a PostgreSQL type the bound value is cast to.
    ``expr``, when set, is a SQL expression written in code (never from a request) compared instead of
    the column, e.g. a correlated sub-select.
    """

    name: str
    column: str
    op: Op = "="
    cast: str | None = None
    expr: str | None = None


@dataclass(frozen=True, slots=True)
class SortSpec:
    """One allow-listed sort: ``name`` orders by ``column``, then by the unique ``tie``, one direction."""

    name: str
    column: str
    tie: str
    cast: str
    attr: str | None = None  # row attribute holding the sort value (default: column's last part)
    tie_attr: str | None = None  # row attribute holding the tie-breaker (default: tie's last part)


@dataclass(frozen=True, slots=True)
class ListPlan:
    """The composed ``WHERE`` and ``ORDER BY`` fragments and their parameters."""

    where: sql.Composable
    order: sql.Composable
    params: dict[str, Any] = field(default_factory=dict)


def _ident(qualified: str) -> sql.Composable:
    return sql.Identifier(*qualified.split("."))


def _target(spec: FilterSpec) -> sql.Composable:
    return sql.SQL(spec.expr) if spec.expr is not None else _ident(spec.column)


def _cast(placeholder: str, cast: str | None) -> sql.Composable:
    if cast is None:
        return sql.Placeholder(placeholder)
    # cast names come from the allow-lists in code, never from the request
    return sql.SQL("{}::{}").format(sql.Placeholder(placeholder), sql.SQL(cast))


def encode_cursor(sort_name: str, value: Any, row_id: Any) -> str:
    raw = msgspec.json.encode([sort_name, value, row_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, sort_name: str) -> tuple[Any, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise CursorError("the cursor is not valid") from exc
    if not (isinstance(decoded, list) and len(decoded) == 3 and isinstance(decoded[0], str)):
        raise CursorError("the cursor is not valid")
    if decoded[0] != sort_name:
        raise CursorError(f"the cursor was made for sort {decoded[0]!r}, not {sort_name!r}")
    return decoded[1], decoded[2]


def build_list_query(
    *,
    filters: Sequence[FilterSpec],
    values: Mapping[str, Any],
    sorts: Sequence[SortSpec],
    sort: str,
    cursor: str | None,
    fixed: Sequence[tuple[str, Any]] = (),
) -> ListPlan:
    """Compose WHERE/ORDER BY for ``values`` (filter name -> value; None = not given).

    ``sort`` is ``name`` (ascending) or ``-name`` (descending) and must be in ``sorts``; ``fixed`` are
    extra ``(column, value)`` equalities always applied (the tenant). Raises ``KeyError`` for a name
    outside the allow-lists (callers validate first, so this is a programming error).
    """
    params: dict[str, Any] = {}
    preds: list[sql.Composable] = []
    for i, (column, value) in enumerate(fixed):
        key = f"fx{i}"
        params[key] = value
        preds.append(sql.SQL("{} = {}").format(_ident(column), sql.Placeholder(key)))
    by_name = {f.name: f for f in filters}
    for name, value in values.items():
        if value is None:
            continue
        spec = by_name[name]
        key = f"f_{name}"
        if spec.op == "any" and len(value) == 1:
            # one value: plain equality, so a (filter, id) index can serve the page in order
            params[key] = next(iter(value))
            preds.append(sql.SQL("{} = {}").format(_target(spec), _cast(key, spec.cast)))
        elif spec.op == "any":
            params[key] = list(value)
            arr_cast = f"{spec.cast}[]" if spec.cast else None
            preds.append(sql.SQL("{} = ANY({})").format(_target(spec), _cast(key, arr_cast)))
        elif spec.op == "contains":
            params[key] = value
            preds.append(sql.SQL("{} @> ARRAY[{}]::text[]").format(_target(spec), sql.Placeholder(key)))
        elif spec.op == "prefix":
            params[key] = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            preds.append(sql.SQL("{} LIKE {}").format(_target(spec), sql.Placeholder(key)))
        else:
            params[key] = value
            preds.append(sql.SQL("{} {} {}").format(_target(spec), sql.SQL(spec.op), _cast(key, spec.cast)))

    descending = sort.startswith("-")
    sort_name = sort.lstrip("-")
    spec_by_name = {s.name: s for s in sorts}
    sspec = spec_by_name[sort_name]
    direction = sql.SQL("DESC" if descending else "ASC")
    if cursor is not None:
        k_value, k_id = decode_cursor(cursor, sort)
        params["k_sort"] = k_value
        params["k_id"] = k_id
        cmp = sql.SQL("<" if descending else ">")
        preds.append(
            sql.SQL("({}, {}) {} ({}, {})").format(
                _ident(sspec.column),
                _ident(sspec.tie),
                cmp,
                _cast("k_sort", sspec.cast),
                sql.Placeholder("k_id"),
            )
        )
    where = sql.SQL(" AND ").join(preds) if preds else sql.SQL("true")
    order = sql.SQL("{} {}, {} {}").format(_ident(sspec.column), direction, _ident(sspec.tie), direction)
    return ListPlan(where=where, order=order, params=params)


def next_cursor(rows: Sequence[Any], limit: int, sort: str, sorts: Sequence[SortSpec]) -> str | None:
    """The cursor after ``rows`` (fetched with ``limit + 1``) or None on the last page.

    Rows are Structs/objects whose attribute names are the last component of the sort column and tie.
    """
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    sspec = {s.name: s for s in sorts}[sort.lstrip("-")]
    value = getattr(last, sspec.attr or sspec.column.split(".")[-1])
    tie = getattr(last, sspec.tie_attr or sspec.tie.split(".")[-1])
    if hasattr(value, "isoformat"):
        value = value.isoformat()
    return encode_cursor(sort, value, tie)


@dataclass(frozen=True, slots=True)
class Listing(Generic[T]):
    """One keyset-paginated list: a named query with ``{where}``/``{order}`` holes (and ``fragments``),
    the Struct its rows become, and the filter/sort allow-lists.

    ``tenant_column``: compared with the caller's tenant when there is one (None: the query applies the
    tenant itself, or there is none); ``fixed``: equalities always applied (dead letters:
    ``("d.status", "dead")``).
    """

    query: str
    row: type[T]
    filters: Sequence[FilterSpec]
    sorts: Sequence[SortSpec]
    tenant_column: str | None = None
    fixed: Sequence[tuple[str, Any]] = ()
    fragments: Mapping[str, sql.Composable] = field(default_factory=dict)

    def plan(
        self, *, filters: Mapping[str, Any], sort: str, cursor: str | None, tenant: int | None = None
    ) -> ListPlan:
        """WHERE/ORDER BY for ``filters`` (filter name -> value, None = not given) and the tenant."""
        tenant_eq = [(self.tenant_column, tenant)] if tenant is not None and self.tenant_column else []
        return build_list_query(
            filters=self.filters,
            values=filters,
            sorts=self.sorts,
            sort=sort,
            cursor=cursor,
            fixed=[*tenant_eq, *self.fixed],
        )

    async def page(
        self,
        conn: AsyncConnection[Any],
        *,
        filters: Mapping[str, Any],
        sort: str,
        cursor: str | None,
        limit: int,
        tenant: int | None = None,
        params: Mapping[str, Any] | None = None,
        **fragments: sql.Composable,
    ) -> tuple[list[T], str | None]:
        """One page of rows and the cursor of the next (None on the last page): ``limit + 1`` rows are
        fetched to learn whether another page exists."""
        plan = self.plan(filters=filters, sort=sort, cursor=cursor, tenant=tenant)
        query = sql.SQL(self.query).format(
            where=plan.where, order=plan.order, **{**self.fragments, **fragments}
        )
        rows = await fetch_all(conn, query, {**plan.params, **(params or {}), "limit": limit + 1}, self.row)
        return rows[:limit], next_cursor(rows, limit, sort, self.sorts)
