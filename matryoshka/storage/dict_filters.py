"""Dict filters: a condition written as data, compiled into the SQL grammar of `predicates`.

    {"lang": "en", "year": {"$gte": 2020}}                      lang = 'en' AND year >= 2020
    {"$or": [{"lang": {"$in": ["en", "de"]}}, {"archived": True}]}
    {"tags": {"$contains": "python"}, "$not": {"year": {"$lt": 2000}}}

Keys are attribute names (ANDed) or `$and` / `$or` (a list of filters) and `$not` (a filter). A value is an
equality test; a dict of operators tests each (ANDed): `$eq`, `$ne`, `$gt`, `$gte`, `$lt`, `$lte`, `$in` and
`$nin` (a list), `$contains` (a list-of-strings column holds the string). None tests for null (`{"a": None}`,
`{"a": {"$ne": None}}`). `{}` passes every row.

As in the SQL filters, a null value passes no comparison, not `$ne` nor `$nin` either, and the `$not` of a
comparison on null is not true either. Values are checked against each column's type (a string for a string
column, an int or float for a number column, a bool for a boolean one, a datetime or ISO string for a timestamp,
a date or ISO string for a date) and written as quoted literals, never spliced: the compiled condition then goes
through the same checks as any SQL condition (`predicates.check_sql`).
"""
from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa

from matryoshka.core.errors import InputError

COMPARE = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
OPERATORS = (*COMPARE, "$in", "$nin", "$contains")
FLOAT_EXACT = 2 ** 53  # integers past this are not exactly a float64: refused against a float column


def to_sql(f: dict, schema: pa.Schema | None) -> str:
    """The SQL condition of dict filter `f` over attributes `schema` (the index's); an InputError naming the
    key, operator or value that does not fit."""
    if schema is None:
        raise InputError("this index stores no attributes, so it cannot filter; build it with attribute columns "
                         "(extra Parquet columns, or attributes=)")
    if not isinstance(f, dict):
        raise InputError(f"a dict filter is a dict such as {{'lang': 'en'}}; got {type(f).__name__} {f!r}")
    return _all(f, {x.name: x.type for x in schema})


def resolve(where, schema: pa.Schema | None):
    """`where` with every dict filter compiled to SQL: one condition, or a list of them (one per query)."""
    if isinstance(where, dict):
        return to_sql(where, schema)
    if isinstance(where, (list, tuple)):
        return [to_sql(w, schema) if isinstance(w, dict) else w for w in where]
    return where


def _all(f: dict, types: dict[str, pa.DataType]) -> str:
    parts = []
    for key, cond in f.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, (list, tuple)) or not cond or not all(isinstance(c, dict) for c in cond):
                raise InputError(f"where filter: {key} takes a non-empty list of filters (dicts); got {cond!r}")
            parts.append("(" + f" {key[1:].upper()} ".join(f"({_all(c, types)})" for c in cond) + ")")
        elif key == "$not":
            if not isinstance(cond, dict):
                raise InputError(f"where filter: $not takes a filter (a dict); got {cond!r}")
            parts.append(f"(NOT ({_all(cond, types)}))")
        elif isinstance(key, str) and key.startswith("$"):
            raise InputError(f"where filter: unknown operator {key!r} at the top of a filter; use $and, $or, $not "
                             "or an attribute name")
        else:
            parts.append(_column(key, cond, types))
    return " AND ".join(parts) if parts else "true"


def _column(key, cond, types: dict[str, pa.DataType]) -> str:
    if not isinstance(key, str) or key not in types:
        near = [c for c in types if isinstance(key, str) and c.lower() == key.lower()]
        hint = f"; did you mean {near[0]!r}? names are case-sensitive" if near else ""
        raise InputError(f"where filter: no attribute {key!r}{hint} (attributes: {', '.join(sorted(types))})")
    if not isinstance(cond, dict):
        return _op(key, types[key], "$eq", cond)
    if not cond:
        raise InputError(f"where filter: the condition on {key!r} is empty; give a value or operators such as "
                         "{'$gte': 2}")
    return " AND ".join(_op(key, types[key], op, v) for op, v in cond.items())


def _op(key: str, t: pa.DataType, op, value) -> str:
    col = identifier(key)
    if op not in OPERATORS:
        raise InputError(f"where filter: unknown operator {op!r} on {key!r}; use one of {', '.join(OPERATORS)}")
    listed = _is_list(t)
    if value is None:
        if op not in ("$eq", "$ne"):
            raise InputError(f"where filter: {op} on {key!r} takes a value, not None; test for null with "
                             f"{{{key!r}: None}} or {{{key!r}: {{'$ne': None}}}}")
        return f"({col} IS {'NOT ' if op == '$ne' else ''}NULL)"
    if op == "$contains":
        if not listed:
            raise InputError(f"where filter: $contains tests a list column; {key!r} is {t}: use $eq or $in")
        return f"list_contains({col}, {literal(key, t.value_type, value)})"
    if listed:
        raise InputError(f"where filter: {key!r} is a list column ({t}): test its elements with "
                         f"{{{key!r}: {{'$contains': value}}}}")
    if op in ("$in", "$nin"):
        if not isinstance(value, (list, tuple)):
            raise InputError(f"where filter: {op} on {key!r} takes a list of values; got {value!r}")
        if not value:  # nothing is in an empty list; every value (not null) is outside it
            return "false" if op == "$in" else f"({col} IS NOT NULL)"
        if any(v is None for v in value):
            raise InputError(f"where filter: {op} on {key!r} holds None; test for null with {{{key!r}: None}} "
                             "inside an $or")
        return f"({col} {'NOT ' if op == '$nin' else ''}IN ({', '.join(literal(key, t, v) for v in value)}))"
    return f"({col} {COMPARE[op]} {literal(key, t, value)})"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def identifier(name: str) -> str:
    """An attribute name quoted for SQL (a quote in it doubled)."""
    return '"' + name.replace('"', '""') + '"'


def literal(key: str, t: pa.DataType, v) -> str:
    """`v` as an SQL literal of column `key`'s type `t`, or an InputError naming both."""
    def refuse(want: str) -> InputError:
        return InputError(f"where filter: {key!r} is a column of {t}; {v!r} ({type(v).__name__}) is not {want}")

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not isinstance(v, str):
            raise refuse("a string")
        return _quoted(v)
    if pa.types.is_boolean(t):
        if not isinstance(v, bool):
            raise refuse("a bool (True or False)")
        return "TRUE" if v else "FALSE"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise refuse("a number")
        if isinstance(v, float):
            if not math.isfinite(v):
                raise refuse("a finite number (NaN and infinities compare with nothing)")
            return f"CAST({v!r} AS DOUBLE)"  # the value exactly, whatever width the column has
        if pa.types.is_floating(t) and abs(v) > FLOAT_EXACT:
            raise refuse("exactly a float (integers past 2^53 round); give it as a float")
        return str(int(v))
    if pa.types.is_timestamp(t):
        return _timestamp(v, t, refuse)
    if pa.types.is_date(t):
        if isinstance(v, str):
            try:
                v = dt.date.fromisoformat(v)
            except ValueError:
                raise refuse("a date (datetime.date or 'YYYY-MM-DD')") from None
        if isinstance(v, dt.datetime) or not isinstance(v, dt.date):
            raise refuse("a date (datetime.date or 'YYYY-MM-DD')")
        return f"DATE '{v.isoformat()}'"
    raise InputError(f"where filter: {key!r} is a column of {t}, which dict filters do not compare; write a SQL "
                     "condition")


def _timestamp(v, t: pa.TimestampType, refuse) -> str:
    want = "a datetime (or ISO text) " + ("with a time zone" if t.tz else "without a time zone")
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError:
            raise refuse(want) from None
    if not isinstance(v, dt.datetime) or (v.tzinfo is not None) != bool(t.tz):
        raise refuse(want)
    if t.tz:
        return f"TIMESTAMPTZ '{v.astimezone(dt.timezone.utc).isoformat(sep=' ')}'"
    return f"TIMESTAMP '{v.isoformat(sep=' ')}'"


def _quoted(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"
