"""Building one shard at a time, for any scheduler (Ray tasks, a batch system, a loop): the shard's rows,
its build, and the cross-shard id check that a driver runs once every shard is done."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import layout
from matryoshka.core.errors import InputError
from matryoshka.core.progress import bar
from matryoshka.core.timing import StageTimer

from .ids import DuplicateGuard, hash_ids
from .options import BuildOptions
from .pipeline import Pipeline
from .sources import Source, offset_ids
from .training import BuildState, read_trained_state


def shard_rows(source: Source, shard_size: int) -> list[tuple[int, int]]:
    """[lo, hi) rows of every shard of a source of known size: shard i holds rows i*shard_size onwards."""
    if source.count is None:
        raise InputError("a build by shards needs an input of known size (a .npy or Parquet path), not an iterator")
    return [(lo, min(lo + shard_size, source.count)) for lo in range(0, source.count, shard_size)]


def build_shard(root: str | os.PathLike, source: Source, number: int, options: BuildOptions,
                device: str = "cpu") -> dict:
    """Build shard `number` alone (rows number*shard_size onwards) into a trained index folder.

    Engine-independent: any scheduler may run one call per shard, in any order, on any machine that sees the
    folder. Ids are checked for duplicates within the shard only; `check_unique_ids` checks across shards.
    Returns the shard's metadata, with the seconds spent per step under "seconds".
    """
    root = Path(root)
    lo, hi = shard_rows(source, options.shard_size)[number]
    return write_shard(root, source, number, (lo, hi), lo, options, read_trained_state(root), device)


def write_shard(root: Path, source: Source, number: int, rows: tuple[int, int], id_start: int,
                options: BuildOptions, state: BuildState, device: str = "cpu", has_text: bool | None = None,
                id_type: pa.DataType | None = None, id_offset: int | None = None,
                attributes: pa.Schema | None = None) -> dict:
    """Write the input's rows [lo, hi) as shard `number` of the trained index in `root`, from global row
    `id_start` (a build: the same as lo; an add: after every row the index has). `id_offset` is added to the
    input's default ids (its row numbers). Returns the metadata, with seconds per step under "seconds"."""
    lo, hi = rows
    timer = StageTimer()
    pipe = Pipeline(root, state, options, device, source.has_text if has_text is None else has_text, timer, id_type,
                    source.attributes if attributes is None else attributes)
    guard = DuplicateGuard(lambda v: False)  # no other shard's ids are looked at here
    with bar(hi - lo, f"shard {layout.shard_name(number)}", True) as pbar:
        metas = pipe.fill_shards(offset_ids(source.batches(options.batch_rows, lo), id_offset), guard, number,
                                 id_start, pbar, stop=hi)
    if len(metas) != 1 or metas[0]["count"] != hi - lo:
        got = sum(m["count"] for m in metas)
        raise InputError(f"shard {number}: the input gave {got} rows where {hi - lo} were expected (rows {lo}..{hi}); "
                         "was the input changed during the build?")
    return {**metas[0], "seconds": dict(timer)}


def shard_ids(root: Path, number: int) -> pa.Array:
    """The external ids of a finished shard."""
    path = root / layout.SHARDS / layout.shard_name(number) / layout.IDS_FILE
    return pq.read_table(path).column("id").combine_chunks()


def written_id(root: Path, value, first: int = 0) -> bool:
    """Whether a finished shard numbered `first` or above holds the id `value` (a duplicate guard's last word
    when 64-bit keys of string ids collide)."""
    return any(value in set(pq.read_table(p).column("id").to_pylist())
               for p in (root / layout.SHARDS).glob(f"[0-9]*/{layout.IDS_FILE}") if int(p.parent.name) >= first)


def shard_id_keys(root: str | os.PathLike, number: int) -> np.ndarray:
    """The sorted 64-bit id keys of a finished shard (8 bytes per id), for `check_unique_ids`."""
    return np.sort(hash_ids(shard_ids(Path(root), number)))


def id_type(root: Path, shard: dict) -> str:
    """'int' or 'string': the id type of a finished shard."""
    schema = pq.read_schema(root / layout.SHARDS / layout.shard_name(shard["number"]) / layout.IDS_FILE)
    return "int" if pa.types.is_integer(schema.field("id").type) else "string"


def check_unique_ids(root: Path, shards: list[dict], keys: list[np.ndarray]) -> None:
    """Refuse ids used twice across shards, given each shard's sorted id keys (`shard_id_keys`)."""
    kinds = {layout.shard_name(m["number"]): id_type(root, m) for m in shards}
    if len(set(kinds.values())) > 1:
        raise InputError(f"ids are integers in some shards and strings in others ({kinds}); use one id type for the "
                         "whole corpus")
    if not keys:
        return
    allk = np.concatenate(keys)
    owner = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    order = np.argsort(allk, kind="stable")
    sk = allk[order]
    for j in np.flatnonzero(sk[1:] == sk[:-1]):
        a, b = int(owner[order[j]]), int(owner[order[j + 1]])
        found = [_rows_with_key(root, shards[s], sk[j]) for s in sorted({a, b})]
        rows = [r for f in found for r in f]  # (global row, id) pairs holding this key
        for x in range(len(rows)):
            for y in range(x + 1, len(rows)):
                if rows[x][1] == rows[y][1]:
                    raise InputError(f"duplicate id {rows[x][1]!r} at rows {rows[x][0]} and {rows[y][0]}; ids must "
                                     "be unique (the shards are kept; fix the input and build again)")


def _rows_with_key(root: Path, meta: dict, key) -> list[tuple[int, object]]:
    ids = shard_ids(root, meta["number"])
    pos = np.flatnonzero(hash_ids(ids) == key)
    return [(meta["id_start"] + int(p), ids[int(p)].as_py()) for p in pos]
