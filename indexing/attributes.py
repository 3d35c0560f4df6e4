"""Attributes: columns stored beside the ids for filtered search (`retrieval.filters`).

They come from the extra columns of a Parquet input (any column but id, embedding and text) or from
`attributes=` (a pyarrow Table or a dict of equal-length arrays). Each shard keeps its rows' attributes in
`attrs.parquet`; the manifest records their names and types. An add may bring new columns (earlier rows
read them as null) and leave some out (null for its rows).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Collection

import pyarrow as pa

from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.storage.attribute_schema import manifest_schema
from matryoshka.storage.manifest import Manifest

RESERVED = ("id", "embedding", "text")
KINDS = "strings, integers, floats, booleans, timestamps, dates and lists of strings"


def _stored_type(name: str, t: pa.DataType) -> pa.DataType:
    """The type a column is stored as (large strings as strings, dictionaries as their values), or an
    InputError naming the column."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_timestamp(t) \
            or pa.types.is_date(t):
        return t
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and (pa.types.is_string(t.value_type) or
                                                               pa.types.is_large_string(t.value_type)):
        return pa.list_(pa.string())
    raise InputError(f"attribute {name!r} has type {t}; attributes may be {KINDS}: convert the column or leave it "
                     "out of the input")


def schema_of(schema: pa.Schema, skip_unsupported: bool = False) -> pa.Schema | None:
    """The stored schema of the attribute columns among `schema`'s fields (None when there are none).
    skip_unsupported (a Parquet input's extra columns): columns of other types, and pandas' index columns
    (`__index_level_0__`), are left out instead of refused."""
    fields = []
    seen: dict[str, str] = {}  # lower-cased name: the attribute's (the columns kept, not id or one left out)
    for f in schema:
        if f.name in RESERVED or (skip_unsupported and f.name.startswith("__")):
            continue
        try:
            fields.append(pa.field(f.name, _stored_type(f.name, f.type)))
        except InputError:
            if not skip_unsupported:
                raise
            continue
        other = seen.setdefault(f.name.lower(), f.name)
        if other != f.name:
            raise InputError(f"attributes {other!r} and {f.name!r} differ only by case; filters name "
                             "attributes case-sensitively and SQL would confuse them: rename one")
        if len(fields) > len(seen):
            raise InputError(f"attribute {f.name!r} appears twice; rename or drop one")
    return pa.schema(fields) if fields else None


def as_table(value, count: int) -> pa.Table | None:
    """`attributes=` (a Table or a dict of arrays) as an Arrow table of `count` rows, names and types checked;
    None for no columns (`{}`: an add then leaves every column of the index null for its rows)."""
    try:
        table = value if isinstance(value, pa.Table) else pa.table(dict(value))
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"attributes must be a pyarrow Table or a dict of equal-length arrays ({e})") from None
    if not table.column_names:
        return None
    if table.num_rows != count:
        raise InputError(f"attributes have {table.num_rows} rows for {count} vectors; give one row per vector")
    clash = [n for n in table.column_names if n in RESERVED]
    if clash:
        raise InputError(f"attribute names {clash} are reserved (id, embedding, text); rename them")
    schema_of(table.schema)
    return table


def conform(table: pa.Table, schema: pa.Schema, start: int) -> pa.Table:
    """`table` with the columns and types of `schema` (the index's, widened by this input's: see `widened`):
    nulls in the columns it lacks, or an InputError naming a column whose values do not fit its type (`fits`)."""
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise InputError(f"rows {start}..: attribute column(s) {extra} are not among the index's {schema.names}")
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        column = table.column(f.name)
        if column.null_count < len(column):
            check_type(f.name, f.type, column.type, f"rows {start}..: ")
        try:  # a safe cast: an integer out of the column's range (or past 2^53 for a float) is refused
            columns.append(column.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise InputError(f"rows {start}..: attribute {f.name!r} is {column.type}, the index stores {f.type} "
                             f"({e}); convert the values, or use another attribute name") from None
    return pa.Table.from_arrays(columns, schema=schema)


def fits(stored: pa.DataType, given: pa.DataType) -> bool:
    """True when values of type `given` go into a column of type `stored` unchanged: the same type, nulls, or a
    widening whose every value the (safe) cast checks: integers into integer or float columns, floats into
    floats as wide, dates into dates, timestamps into timestamps of the same time zone. Never across kinds (an
    integer into a string or boolean column, a string into a number column): that cast would change the values."""
    if pa.types.is_null(given):
        return True
    try:
        given = _stored_type("", given)
    except InputError:
        return False
    if given == stored:
        return True
    if pa.types.is_integer(given):
        return pa.types.is_integer(stored) or pa.types.is_floating(stored)
    if pa.types.is_floating(given):
        return pa.types.is_floating(stored) and stored.bit_width >= given.bit_width
    if pa.types.is_timestamp(given):
        return pa.types.is_timestamp(stored) and stored.tz == given.tz
    return pa.types.is_date(given) and pa.types.is_date(stored)


def check_type(name: str, stored: pa.DataType, given: pa.DataType, where: str = "") -> None:
    """An InputError naming the column, both types and the fix, unless `fits(stored, given)`."""
    if not fits(stored, given):
        raise InputError(f"{where}attribute {name!r} is {given}, the index stores {stored}: an add's values must "
                         "have the column's type, or widen it losslessly (integers into a float column); convert "
                         "the values, or use another attribute name")


def check_add(stored: pa.Schema | None, given: pa.Schema | None, all_null: Collection[str] = ()) -> None:
    """Refuse an add's attribute columns (`given`) that the index's (`stored`) cannot take: a name that differs
    from a stored one only by case (SQL could then tell neither apart, and every filter would be refused), or
    values of another type (`fits`; the columns in `all_null` hold only nulls and fit any type). Called before
    the add writes anything."""
    if stored is None or given is None:
        return
    by_case = {f.name.lower(): f.name for f in stored}
    for f in given:
        other = by_case.get(f.name.lower(), f.name)
        if other != f.name:
            raise InputError(f"attribute {f.name!r} differs only by case from the index's attribute {other!r}; "
                             "filters name attributes case-sensitively and SQL would confuse them: give the "
                             f"values as {other!r}, or use another name")
        if f.name in stored.names and f.name not in all_null:
            check_type(f.name, stored.field(f.name).type, f.type)


def typed_nulls(attributes, stored: pa.Schema | None):
    """`attributes=` (a Table or a dict of arrays) with each column of nothing but untyped nulls (`[None, None]`)
    given the type of the index's column of that name, so that an add may leave values out as None."""
    if stored is None or not isinstance(attributes, (pa.Table, dict)):
        return attributes
    table = attributes if isinstance(attributes, pa.Table) else None
    out = {}
    for name in (table.column_names if table is not None else attributes):
        values = table.column(name) if table is not None else attributes[name]
        if isinstance(name, str) and name in stored.names and _untyped_nulls(values):
            values = pa.nulls(len(values), stored.field(name).type)
        out[name] = values
    return pa.table(out) if table is not None else out


def _untyped_nulls(values) -> bool:
    try:
        return pa.types.is_null((values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)).type)
    except (pa.ArrowException, TypeError, ValueError):
        return False  # as_table names what is wrong with these values


def widened(schema: pa.Schema | None, given: pa.Schema | None) -> pa.Schema | None:
    """The index's attribute schema after an add whose input has columns `given`: the index's columns (their types
    kept: values are cast to them), then the new ones. Earlier rows read a new column as null."""
    if given is None:
        return schema
    if schema is None:
        return given
    return pa.schema(list(schema) + [f for f in given if f.name not in schema.names])


def index_attributes(root: Path, m: Manifest) -> pa.Schema | None:
    """The schema of the attributes the index in `root` (manifest `m`) stores, None when it stores none."""
    try:
        return manifest_schema(m.attributes)
    except IndexFormatError as e:
        raise InputError(f"{root}: {e}") from None


def describe(schema: pa.Schema | None) -> dict[str, str]:
    """{name: type} for the manifest."""
    return {f.name: str(f.type) for f in schema} if schema is not None else {}


def digest(table: pa.Table) -> str:
    """SHA-256 of a table's schema and values (part of an input's identity)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
