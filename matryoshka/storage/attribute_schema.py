"""The attribute schema of an index, which adds may widen: the manifest records the union of every shard's
columns, and a shard written before a column existed reads it as nulls."""
from __future__ import annotations

import re

import pyarrow as pa

from matryoshka.core.errors import IndexFormatError


def manifest_schema(described: dict[str, str]) -> pa.Schema | None:
    """The schema the manifest's `attributes` ({name: type}) describe; None when the index stores none."""
    if not described:
        return None
    try:
        return pa.schema([(n, pa.list_(pa.string()) if t.startswith("list<") else _type(t))
                          for n, t in described.items()])
    except ValueError as e:
        raise IndexFormatError(f"cannot read the attribute types {described} ({e}); rebuild the index") from None


def _type(name: str) -> pa.DataType:
    tz = re.fullmatch(r"timestamp\[(\w+), tz=(.+)\]", name)
    return pa.timestamp(tz.group(1), tz.group(2)) if tz else pa.type_for_alias(name)


def padded(table: pa.Table | None, schema: pa.Schema, count: int) -> pa.Table:
    """`table` (None: no columns) with `schema`'s columns in its order: nulls for those it lacks."""
    cols = [table.column(f.name) if table is not None and f.name in table.column_names else pa.nulls(count, f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)
