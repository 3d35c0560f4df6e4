"""Attributes: columns stored beside the ids for filtered search (`retrieval.filters`).

They come from the extra columns of a Parquet input (any column but id, embedding and text) or from
`attributes=` (a pyarrow Table or a dict of equal-length arrays). Each shard keeps its rows' attributes in
`attrs.parquet`; the manifest records their names and types. An add may bring new columns (earlier rows
read them as null) and leave some out (null for its rows).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa

from matryoshka.core.errors import IndexFormatError, InputError
from matryoshka.storage.attribute_schema import manifest_schema

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


def as_table(value, count: int) -> pa.Table:
    """`attributes=` (a Table or a dict of arrays) as an Arrow table of `count` rows, names and types checked."""
    try:
        table = value if isinstance(value, pa.Table) else pa.table(dict(value))
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise InputError(f"attributes must be a pyarrow Table or a dict of equal-length arrays ({e})") from None
    if table.num_rows != count:
        raise InputError(f"attributes have {table.num_rows} rows for {count} vectors; give one row per vector")
    clash = [n for n in table.column_names if n in RESERVED]
    if clash:
        raise InputError(f"attribute names {clash} are reserved (id, embedding, text); rename them")
    schema_of(table.schema)
    return table


def conform(table: pa.Table, schema: pa.Schema, start: int) -> pa.Table:
    """`table` with the columns and types of `schema` (the index's, widened by this input's: see `widened`):
    nulls in the columns it lacks, or an InputError naming a column whose values do not fit its type."""
    extra = [n for n in table.column_names if n not in schema.names]
    if extra:
        raise InputError(f"rows {start}..: attribute column(s) {extra} are not among the index's {schema.names}")
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(table.num_rows, f.type))
            continue
        try:
            columns.append(table.column(f.name).cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
            raise InputError(f"rows {start}..: attribute {f.name!r} is {table.column(f.name).type}, the index "
                             f"stores {f.type} ({e})") from None
    return pa.Table.from_arrays(columns, schema=schema)


def widened(schema: pa.Schema | None, given: pa.Schema | None) -> pa.Schema | None:
    """The index's attribute schema after an add whose input has columns `given`: the index's columns (their types
    kept: values are cast to them), then the new ones. Earlier rows read a new column as null."""
    if given is None:
        return schema
    if schema is None:
        return given
    return pa.schema(list(schema) + [f for f in given if f.name not in schema.names])


def index_attributes(root: Path, m: dict) -> pa.Schema | None:
    """The schema of the attributes the index in `root` (manifest `m`) stores, None when it stores none."""
    try:
        return manifest_schema(m)
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
