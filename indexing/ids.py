"""External ids: one type per index (int64 or string), no nulls, no duplicates."""
from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import pyarrow as pa

from matryoshka.core.errors import InputError

MAX_ID_BYTES = 1024


def as_ids(values, start: int) -> pa.Array:
    """Convert ids to an int64 or string Arrow array, naming the first bad row on failure."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
            values = pa.array(values)
        else:
            values = list(values) if not isinstance(values, (list, np.ndarray)) else values
            try:
                values = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
                raise InputError(f"ids in rows {start}..: {e}; ids must be all integers or all strings (integers "
                                 "within a signed 64-bit integer)") from None
            except UnicodeError:
                bad = next(i for i, v in enumerate(values) if isinstance(v, str) and not _utf8(v))
                raise InputError(f"row {start + bad} has an id that is not valid Unicode ({values[bad]!r}: a lone "
                                 "surrogate); ids must be encodable as UTF-8") from None
    if values.null_count:
        bad = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(f"row {start + bad} has a null id; every row needs an id")
    t = values.type
    if pa.types.is_integer(t):
        if pa.types.is_unsigned_integer(t) and len(values):
            big = np.flatnonzero(values.to_numpy(zero_copy_only=False) > np.iinfo(np.int64).max)
            if len(big):
                raise InputError(f"row {start + int(big[0])} has the id {values[int(big[0])].as_py()}, beyond the "
                                 "largest signed 64-bit integer (2**63 - 1); use smaller integers or string ids")
        return values.cast(pa.int64())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if (bad := invalid_utf8(values)) is not None:  # bytes declared as text, as a Parquet file can hold
            raise InputError(f"row {start + bad} has an id that is not valid UTF-8 text; write string ids as "
                             "UTF-8")
        lengths = pa.compute.binary_length(values).to_numpy(zero_copy_only=False)
        if len(lengths) and lengths.max() > MAX_ID_BYTES:
            bad = int(np.argmax(lengths > MAX_ID_BYTES))
            raise InputError(f"row {start + bad} has an id of {lengths[bad]} bytes; ids are limited to "
                             f"{MAX_ID_BYTES} bytes: keep long keys in your own store and index a short key")
        return values.cast(pa.string())
    raise InputError(f"ids must be integers or strings; got {t} (in rows {start}..)")


def invalid_utf8(values) -> int | None:
    """The position of the first value of a string array whose bytes are not UTF-8 (Arrow does not check what a
    Parquet file declares as text; Python would fail decoding it), or None when there is none."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        return None
    try:
        values.validate(full=True)
        return None
    except pa.ArrowInvalid:
        pass
    raw = values.view(pa.binary() if pa.types.is_string(values.type) else pa.large_binary())
    for i, b in enumerate(raw.to_pylist()):
        try:
            if b is not None:
                b.decode("utf-8")
        except UnicodeDecodeError:
            return i
    return None


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeError:
        return False


def id_kind(ids: pa.Array) -> str:
    return "int" if pa.types.is_integer(ids.type) else "string"


def id_list(ids):
    """Ids as given to get or delete: one id (a string or an integer) is a list of one, not of its characters;
    a sequence or array of them is kept, an iterator read into a list."""
    if isinstance(ids, (str, bytes, int, np.integer)) and not isinstance(ids, bool):
        return [ids]
    return ids if hasattr(ids, "__len__") else list(ids)


def coerce_ids(values, kind: str) -> pa.Array:
    """Ids given by a user, as an index's id type (`kind`: "int" or "string"; integers given as text are
    parsed)."""
    if len(values) == 0:
        return pa.array([], pa.int64() if kind == "int" else pa.string())
    ids = as_ids(values, 0)
    if id_kind(ids) == kind:
        return ids
    if kind == "int":
        try:
            return pa.array([int(v) for v in ids.to_pylist()], pa.int64())
        except ValueError:
            pass
    raise InputError(f"the index's ids are {kind}s but {id_kind(ids)}s were given (first: {ids[0].as_py()!r}); "
                     "give ids of the index's type")


def hash_ids(ids: pa.Array) -> np.ndarray:
    """64-bit keys: the value itself for int ids, a BLAKE2b digest for strings."""
    if pa.types.is_integer(ids.type):
        return ids.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    return np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
                     for s in ids.to_pylist()], dtype=np.uint64)


class DuplicateGuard:
    """Finds ids already used in this build, within a batch or anywhere before it, in 8 bytes per id.

    String ids are compared by a 64-bit hash; a hash match is confirmed against the ids themselves
    (those not yet written, then `on_disk(id)`) so that a collision is never reported as a duplicate.
    """

    def __init__(self, on_disk: Callable[[object], bool]):
        self.runs: list[np.ndarray] = []  # sorted keys, merged when there are many
        self.unwritten: list[pa.Array] = []
        self.on_disk = on_disk

    def check(self, ids: pa.Array, start: int) -> None:
        keys = hash_ids(ids)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        for j in np.flatnonzero(sk[1:] == sk[:-1]):
            a, b = sorted((int(order[j]), int(order[j + 1])))
            if ids[a] == ids[b]:
                raise InputError(f"duplicate id {ids[b].as_py()!r} at rows {start + a} and {start + b}; "
                                 "ids must be unique")
        for run in self.runs:
            if not len(run):
                continue
            pos = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            for i in np.flatnonzero(run[pos] == keys):
                value = ids[int(i)].as_py()
                if pa.types.is_integer(ids.type) or self._seen(value):
                    raise InputError(f"duplicate id {value!r} at row {start + i} was already used by an earlier "
                                     "row; ids must be unique")
        self.runs.append(sk)
        self.unwritten.append(ids)
        if len(self.runs) > 16:
            self.runs = [np.sort(np.concatenate(self.runs))]

    def _seen(self, value) -> bool:
        return any(value in set(a.to_pylist()) for a in self.unwritten) or self.on_disk(value)

    def written(self) -> None:
        """A shard is on disk: forget its ids, except the last batch, which may continue in the next shard."""
        self.unwritten = self.unwritten[-1:]

    def add_existing(self, ids: pa.Array) -> None:
        self.runs.append(np.sort(hash_ids(ids)))
