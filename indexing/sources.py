"""Inputs of a build, each read in batches without holding the corpus in RAM (the `Source` protocol)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from matryoshka.core.errors import InputError

from .attributes import as_table, digest, schema_of
from .ids import as_ids, invalid_utf8


@dataclass
class Batch:
    start: int  # row number of the first row in the source
    ids: pa.Array
    vectors: np.ndarray
    texts: list[str] | None = None
    attrs: pa.Table | None = None  # attribute columns of these rows (see indexing.attributes)

    def head(self, n: int) -> "Batch":
        """The first n rows."""
        return Batch(self.start, self.ids[:n], self.vectors[:n], self.texts[:n] if self.texts is not None else None,
                     self.attrs.slice(0, n) if self.attrs is not None else None)


class Source(Protocol):
    """What a build reads. `count` is None for an input of unknown size (a Python iterator): such an input is
    sampled from its first rows (`take_sample`) and cannot resume."""

    dim: int
    count: int | None
    has_text: bool
    model_name: str | None  # the model that encoded the vectors from texts, if the source did
    model: object | None  # that model, loaded

    def fingerprint(self) -> dict:
        """What identifies the input's content, recorded with the index."""

    def prepare(self, workdir: Path, quiet: bool) -> None:
        """Work needed before sampling (encoding texts), resumable in `workdir`."""

    def sample(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of the given sorted rows, float32."""

    def take_sample(self, n: int) -> np.ndarray:
        """The first n vectors, for a source of unknown size."""

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        """Batches of about `size` rows, in order, from row `start`."""


class SourceBase:
    """Defaults of the `Source` protocol for inputs of vectors."""

    model_name: str | None = None
    model: object | None = None
    attributes: pa.Schema | None = None  # stored schema of the attribute columns, when the input has any

    def prepare(self, workdir: Path, quiet: bool) -> None:
        pass

    def take_sample(self, n: int) -> np.ndarray:
        raise NotImplementedError("only a source of unknown size is sampled from its first rows")


def offset_ids(batches: Iterable[Batch], offset: int | None) -> Iterator[Batch]:
    """The batches with `offset` added to their (integer) ids: rows added to an index get numbers after its own."""
    for b in batches:
        yield b if offset is None else Batch(b.start, pa.array(b.ids.to_numpy() + offset), b.vectors, b.texts,
                                             b.attrs)


def as_texts(values, start: int) -> list[str]:
    """Texts as str; bytes that are not UTF-8 are decoded with replacement characters rather than dropped."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    out = []
    for i, t in enumerate(values):
        if t is None:
            t = ""
        elif isinstance(t, (bytes, bytearray)):
            t = bytes(t).decode("utf-8", errors="replace")
        elif not isinstance(t, str):
            raise InputError(f"row {start + i}: text must be a string, got {type(t).__name__}")
        elif not t.isascii():
            try:
                t.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: kept as U+FFFD, like undecodable bytes
                t = t.encode("utf-8", "surrogatepass").decode("utf-8", errors="replace")
        out.append(t)
    return out


def _file_fingerprint(paths: Iterable[Path]) -> list:
    return [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(paths)]


FINGERPRINT_ROWS = 256  # rows of a file input hashed into its identity, spread evenly over it
HASH_BLOCK_ROWS = 65536


def sampled_rows(count: int) -> np.ndarray:
    """Rows hashed into the identity of a file input: the first, the last and others evenly between."""
    return np.unique(np.linspace(0, max(count - 1, 0), min(count, FINGERPRINT_ROWS)).astype(np.int64))


def array_digest(x) -> str:
    """SHA-256 of a whole matrix (in memory or memory-mapped), read in blocks of rows."""
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    for lo in range(0, x.shape[0], HASH_BLOCK_ROWS):
        h.update(memoryview(np.ascontiguousarray(x[lo:lo + HASH_BLOCK_ROWS])).cast("B"))
    return h.hexdigest()


def values_digest(values) -> str:
    """SHA-256 of a sequence of ids or texts, each with its type, so that 1 and '1' differ."""
    h = hashlib.sha256()
    for v in values.to_pylist() if isinstance(values, (pa.Array, pa.ChunkedArray)) else values:
        v = v.item() if isinstance(v, np.generic) else v
        h.update(f"{type(v).__name__}:{v!r}\0".encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def list_column_to_matrix(col, start: int, rows: np.ndarray | None = None) -> np.ndarray:
    """A list or fixed-size-list Arrow column of numbers -> (n, D) float32; ragged rows are an error naming the
    input's row: `start` + the position, or rows[position] for a column of (sampled) rows."""
    def row(position: int) -> int:
        return int(rows[position]) if rows is not None else start + position

    def error(message: str, position: int) -> InputError:
        e = InputError(message)
        e.row = row(position)  # for naming the file that holds it (FileRows.naming)
        return e

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        bad = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise error(f"row {row(bad)} has no embedding (null); every row needs one", bad)
    n = len(col)
    if pa.types.is_fixed_size_list(col.type):
        dim = col.type.list_size
    elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        offsets = col.offsets.to_numpy()
        lengths = np.diff(offsets)
        if n and (lengths != lengths[0]).any():
            bad = int(np.flatnonzero(lengths != lengths[0])[0])
            raise error(f"row {row(bad)} has a {lengths[bad]}-dim embedding but row {row(0)} has {lengths[0]}; "
                        "every embedding must have the same length", bad)
        dim = int(lengths[0]) if n else 0
    else:
        raise InputError(f"the embedding column must be a list of floats; got {col.type}")
    values = col.flatten()
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
        raise InputError(f"the embedding column must hold numbers; got lists of {values.type}")
    return values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(n, dim)


# Inputs read like Parquet through pyarrow's readers: a file, or a folder of such files only
TEXT_FORMATS = {".csv": "csv", ".jsonl": "json", ".ndjson": "json"}
FORMAT_NAMES = {"parquet": "Parquet", "csv": "CSV", "json": "JSON Lines"}


def file_format(path: Path) -> str:
    """'csv' or 'json' for a CSV or JSON Lines file (or a folder of only such files), else 'parquet'."""
    if path.is_dir():
        kinds = {TEXT_FORMATS.get(p.suffix.lower(), "parquet") for p in path.iterdir()
                 if p.is_file() and not p.name.startswith((".", "_"))}
        return kinds.pop() if len(kinds) == 1 else "parquet"
    return TEXT_FORMATS.get(path.suffix.lower(), "parquet")


def open_files(path: str | os.PathLike) -> ds.Dataset:
    """A Parquet, CSV or JSON Lines input (a file or a folder of files) as a dataset, checked as `open_parquet`
    checks Parquet. CSV needs a header row; its `text` column is read as text and its `embedding` column as
    text holding a list (`[0.1, -0.2, ...]`, parsed by `text_embeddings`)."""
    fmt = file_format(Path(path))
    if fmt == "parquet":
        return open_parquet(path)
    try:
        inferred = ds.dataset(path, format=_text_format(fmt)).schema  # from each file's first block
        dataset = ds.dataset(path, format=_text_format(fmt, inferred))
        fragments = list(dataset.get_fragments())
        for fragment in fragments:
            fragment.count_rows()
        for fragment in fragments[1:]:
            _check_columns(dataset.schema, fragment.physical_schema, fragment.path, fragments[0].path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"cannot read {path} as {FORMAT_NAMES[fmt]} ({str(e).splitlines()[0]}); repair the file "
                         f"it names{', with a header row of column names' if fmt == 'csv' else ''}") from None
    return dataset


def _text_format(fmt: str, inferred: pa.Schema | None = None) -> ds.FileFormat:
    """The dataset format of a CSV or JSON Lines input; with the `inferred` schema, its id, text and embedding
    columns typed so that every block reads alike (a text of digits is text, an id column stays as it began)."""
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    names = inferred.names if inferred is not None else []
    types = {}
    if "id" in names:
        types["id"] = pa.int64() if pa.types.is_integer(inferred.field("id").type) else pa.string()
    if "text" in names:
        types["text"] = pa.string()
    if "embedding" in names:
        listed = pa.types.is_list(inferred.field("embedding").type)
        types["embedding"] = pa.list_(pa.float64()) if fmt == "json" and listed else pa.string()
    if fmt == "csv":
        return ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=types))
    return ds.JsonFileFormat(parse_options=pajson.ParseOptions(explicit_schema=pa.schema(list(types.items())),
                                                               unexpected_field_behavior="infer"))


def text_embeddings(col, start: int, rows: np.ndarray | None = None) -> pa.Array:
    """Embeddings written as text (a CSV cell such as "[0.1, -0.2, 3e-4]") as lists of floats; other columns as
    they are. A cell that is no such list is an error naming its row (`start` + position, or rows[position])."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    cells = pc.utf8_trim_whitespace(col)
    framed = pc.and_(pc.starts_with(cells, "["), pc.ends_with(cells, "]")).fill_null(True)
    inner = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(cells, 1, -1))
    empty = pc.equal(inner, "").fill_null(False)
    parts = pc.split_pattern(inner, ",")
    try:
        if not pc.all(framed).as_py() or pc.any(empty).as_py():
            raise ValueError
        values = pc.cast(pc.utf8_trim_whitespace(pc.list_flatten(parts)), pa.float32())
    except (ValueError, pa.ArrowInvalid):
        bad = next(i for i, cell in enumerate(cells.to_pylist()) if cell is not None and not _text_vector(cell))
        row, cell = int(rows[bad]) if rows is not None else start + bad, cells[bad].as_py()
        why = "has no embedding (an empty cell); every row needs one" if not cell else \
            f"has the embedding {cell[:60]!r}, not a list of numbers; write each one as [0.1, -0.2, ...]"
        e = InputError(f"row {row} {why}")
        e.row = row  # for naming the file that holds it (FileRows.naming)
        raise e from None
    return pa.ListArray.from_arrays(parts.offsets, values, mask=col.is_null())


def _text_vector(cell: str) -> bool:
    """Whether `cell` is a bracketed, comma-separated list of at least one number Arrow reads."""
    if not (cell.startswith("[") and cell.endswith("]")) or not cell[1:-1].strip():
        return False
    try:
        pc.cast(pa.array([v.strip() for v in cell[1:-1].split(",")]), pa.float32())
    except pa.ArrowInvalid:
        return False
    return True


def open_parquet(path: str | os.PathLike) -> ds.Dataset:
    """A Parquet file or folder as a dataset, every file's footer read up front: a stray, corrupt or unreadable
    file is an InputError naming it, not an Arrow traceback halfway through a build."""
    if file_format(Path(path)) != "parquet":
        raise InputError(f"{path} is {FORMAT_NAMES[file_format(Path(path))]}; this reader (a build or add on Ray) "
                         "takes .npy or Parquet inputs: convert it to Parquet, or leave out ray")
    try:
        dataset = ds.dataset(path, format="parquet")
        fragments = list(dataset.get_fragments())
        for fragment in fragments:
            fragment.count_rows()
        if len(fragments) > 1:
            for fragment in fragments[1:]:
                _check_columns(dataset.schema, fragment.physical_schema, fragment.path, fragments[0].path)
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"cannot read {path} as Parquet ({e}); remove or repair the file it names, or point the "
                         "input at a folder holding only Parquet files") from None
    return dataset


def _kind(t: pa.DataType) -> str:
    """What a column holds, as far as reading a folder of files can convert it safely: an int32 file reads into
    an int64 column, but a string file would be parsed into integers (or fail halfway through a build)."""
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list of {_kind(t.value_type)}"
    for kind, test in (("integer", pa.types.is_integer), ("float", pa.types.is_floating),
                       ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
                       ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
                       ("timestamp", pa.types.is_timestamp), ("date", pa.types.is_date),
                       ("decimal", pa.types.is_decimal)):
        if test(t):
            return kind
    return str(t)


def _check_columns(schema: pa.Schema, other: pa.Schema, path: str, first: str) -> None:
    """Refuse a file of a folder whose columns differ from the folder's first file (the dataset's schema)."""
    for field in schema:
        if field.name not in other.names:
            raise InputError(f"{path} has no column {field.name!r}, which {first} (the folder's first file) has; "
                             "every file of a folder needs the same columns")
        theirs = other.field(field.name).type
        if _kind(theirs) != _kind(field.type) and not pa.types.is_null(theirs) and not pa.types.is_null(field.type):
            raise InputError(f"{path}: column {field.name!r} is {theirs} but it is {field.type} in {first} (the "
                             "folder's first file); write every file of a folder with the same column types")
        if pa.types.is_fixed_size_list(theirs) and pa.types.is_fixed_size_list(field.type) and \
                theirs.list_size != field.type.list_size:
            raise InputError(f"{path}: column {field.name!r} holds {theirs.list_size} values a row but "
                             f"{field.type.list_size} in {first} (the folder's first file); every file needs "
                             "embeddings of the same length")


class FileRows:
    """Which file of a Parquet dataset holds a row, for errors that name the file and its row."""

    def __init__(self, dataset: ds.Dataset):
        self.fragments = list(dataset.get_fragments())
        self.starts = np.cumsum([0] + [f.count_rows() for f in self.fragments]).astype(np.int64)

    def file(self, row: int) -> int:
        return int(min(max(np.searchsorted(self.starts, row, "right") - 1, 0), len(self.fragments) - 1))

    def where(self, row: int) -> str:
        i = self.file(row)
        whole = f" (row {row} of the input)" if len(self.fragments) > 1 else ""
        return f"{self.fragments[i].path}, row {row - int(self.starts[i])}{whole}"

    def naming(self, e: InputError, row: int) -> InputError:
        """`e`, about rows of the input, naming the file that holds `row`."""
        i = self.file(row)
        path = self.fragments[i].path
        if str(path) in str(e):
            return e
        if len(self.fragments) == 1:
            return InputError(f"{path}: {e}")
        return InputError(f"{e} (in {path}, which holds rows {self.starts[i]}..{self.starts[i + 1] - 1} of the "
                          "input)")

    def unreadable(self, rows: np.ndarray, columns: list[str]) -> str | None:
        """Which file a read of `rows` from the whole dataset failed in, reading file by file: first the parts of
        `rows` in each file, then the columns of every file whole (a dataset reads ahead into other files)."""
        for whole in (False, True):
            for i, fragment in enumerate(self.fragments):
                lo, hi = int(self.starts[i]), int(self.starts[i + 1])
                local = rows[(rows >= lo) & (rows < hi)] - lo
                try:
                    if whole:
                        fragment.to_table(columns=columns)
                    elif len(local):
                        fragment.take(pa.array(local), columns=columns)
                except (pa.ArrowException, OSError):
                    return fragment.path
        return None


def check_text(batch, rows, files: FileRows) -> None:
    """Refuse string columns of a Parquet batch whose bytes are not UTF-8, naming the file, row and column.
    `rows`: the input row of each row of `batch` (an array), or the first (an int: they follow in order)."""
    for name, col in zip(batch.schema.names, batch.columns):
        if (bad := invalid_utf8(col)) is not None:
            row = int(rows[bad]) if isinstance(rows, np.ndarray) else rows + bad
            hint = " (or as binary: bytes of texts that are not UTF-8 are then read as U+FFFD)" if name == "text" \
                else ""
            raise InputError(f"{files.where(row)}: column {name!r} holds bytes that are not valid UTF-8 text; "
                             f"write the column as UTF-8{hint}")


def named(files: FileRows, row: int, convert):
    """convert(), its InputError (a null id, a ragged embedding at some row of the input) naming the file that
    holds `row`."""
    try:
        return convert()
    except InputError as e:
        raise files.naming(e, row) from None


class ArraySource(SourceBase):
    """Vectors from a numpy array or memory map, with optional ids (default: row numbers) and texts."""

    def __init__(self, vectors, ids=None, texts=None, fingerprint: dict | None = None, attributes=None):
        if not hasattr(vectors, "shape"):
            vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InputError(f"vectors must be a 2-D matrix (rows x dims); got shape {vectors.shape}")
        if vectors.dtype.kind not in "fiu":
            raise InputError(f"vectors must be numbers; got dtype {vectors.dtype}")
        if vectors.shape[1] == 0:
            raise InputError(f"vectors have 0 dims (shape {vectors.shape}); give one embedding per row")
        self.vectors, self.count, self.dim = vectors, vectors.shape[0], vectors.shape[1]
        if ids is not None and len(ids) != self.count:
            raise InputError(f"got {len(ids)} ids for {self.count} vectors; give one id per vector")
        if texts is not None and len(texts) != self.count:
            raise InputError(f"got {len(texts)} texts for {self.count} vectors; give one text per vector")
        self.ids, self.texts, self.has_text = ids, texts, texts is not None
        self._fingerprint = fingerprint
        self.attrs = None if attributes is None else as_table(attributes, self.count)
        self.attributes = None if self.attrs is None else schema_of(self.attrs.schema)

    def fingerprint(self) -> dict:
        """Count, dims and the SHA-256 of every vector, id and text (a file input: its size and mtime and the
        SHA-256 of sampled rows, so that a billion rows are not read twice)."""
        if self._fingerprint is None:
            fp = {"kind": "array", "count": self.count, "dim": self.dim, "sha256": array_digest(self.vectors)}
        else:
            fp = {**self._fingerprint, "count": self.count, "dim": self.dim,
                  "rows_sha256": array_digest(self.sample(sampled_rows(self.count)))}
        if self.ids is not None:
            fp["ids_sha256"] = values_digest(self.ids)
        if self.texts is not None:
            fp["texts_sha256"] = values_digest(self.texts)
        if self.attrs is not None:
            fp["attributes_sha256"] = digest(self.attrs)
        return fp

    def sample(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.vectors[rows], dtype=np.float32)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return np.asarray(self.vectors[lo:hi])

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        for lo in range(start, self.count, size):
            hi = min(lo + size, self.count)
            ids = as_ids(self.ids[lo:hi], lo) if self.ids is not None else pa.array(np.arange(lo, hi, dtype=np.int64))
            texts = as_texts(self.texts[lo:hi], lo) if self.texts is not None else None
            attrs = self.attrs.slice(lo, hi - lo) if self.attrs is not None else None
            yield Batch(lo, ids, self._read(lo, hi), texts, attrs)


class NpySource(ArraySource):
    """A `.npy` matrix on disk. Batches are read with plain file reads, not through a memory map, so that the
    build's resident memory does not grow with the pages of the input it has passed over."""

    def __init__(self, path: Path, ids=None, texts=None, fingerprint: dict | None = None, attributes=None):
        try:
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"cannot read {path} as a .npy matrix ({type(e).__name__}: {e}); save it with "
                             "numpy.save") from None
        if vectors.ndim != 2 or vectors.dtype.kind not in "fiu" or not vectors.flags.c_contiguous:
            raise InputError(f"{path} holds a {vectors.dtype} array of shape {vectors.shape}; "
                             "a build needs a C-ordered 2-D matrix of numbers")
        self.path, self.offset, self.dtype = Path(path), vectors.offset, vectors.dtype
        super().__init__(vectors, ids, texts, fingerprint, attributes)
        self.vectors = None  # read with plain file reads from here on, never through a map

    def sample(self, rows: np.ndarray) -> np.ndarray:
        """Read the sampled rows one by one: through a memory map, the kernel's fault-around would map (and
        count as resident) most of a large file for a sample spread over all of it."""
        row_bytes = self.dim * self.dtype.itemsize
        out = np.empty((len(rows), self.dim), dtype=self.dtype)
        buf = memoryview(out).cast("B")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for j, r in enumerate(rows):
                if os.preadv(fd, [buf[j * row_bytes:(j + 1) * row_bytes]], self.offset + int(r) * row_bytes) \
                        != row_bytes:
                    raise InputError(f"{self.path} is shorter than its header says (row {r})")
        finally:
            os.close(fd)
        return out.astype(np.float32, copy=False)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        row_bytes = self.dim * self.dtype.itemsize
        out = np.empty((hi - lo, self.dim), dtype=self.dtype)
        with open(self.path, "rb") as f:
            f.seek(self.offset + lo * row_bytes)
            if f.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise InputError(f"{self.path} is shorter than its header says (truncated at row {lo}..{hi})")
        return out


def npy_source(path: str | os.PathLike, ids=None, texts=None, attributes=None) -> NpySource:
    """A `.npy` matrix streamed from disk; ids from a list, a `.npy` or a Parquet file with column `id`."""
    path = Path(path)
    files = [path]
    if isinstance(ids, (str, os.PathLike)):
        files.append(Path(ids))
        ids = load_ids(Path(ids))
    return NpySource(path, ids, texts, {"kind": "npy", "files": _file_fingerprint(files)}, attributes)


IDS_FORMAT = "a .npy array of integers or strings, or a Parquet file with an `id` column"


def load_ids(path: Path):
    """The ids in a .npy or Parquet file (build, add and delete all read them here), or an InputError naming
    the file and what is wrong with it; a pickled .npy is refused, never unpickled."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ids file {path} does not exist; give {IDS_FORMAT}")
    if path.suffix == ".npy":
        try:
            ids = np.load(path, allow_pickle=False)
        except ValueError as e:
            why = "it holds pickled Python objects, which are never loaded" if "pickle" in str(e) else str(e)
            raise InputError(f"cannot read ids file {path}: {why}; save the ids as integers or strings "
                             "(numpy.save(path, np.asarray(ids, dtype=str)))") from None
        except (OSError, EOFError) as e:
            raise InputError(f"cannot read ids file {path} ({type(e).__name__}: {e}); give {IDS_FORMAT}") from None
        if ids.ndim != 1 or ids.dtype.kind not in "iuU":
            raise InputError(f"ids file {path} holds a {ids.dtype} array of shape {ids.shape}; give a 1-D array "
                             "of integers or strings")
        return ids
    if path.suffix == ".parquet":
        try:
            schema = pa.parquet.read_schema(path)
            if "id" not in schema.names:
                raise InputError(f"ids file {path} has no `id` column (it has {schema.names}); give {IDS_FORMAT}")
            ids = pa.parquet.read_table(path, columns=["id"]).column("id").combine_chunks()
            if (bad := invalid_utf8(ids)) is not None:
                raise InputError(f"ids file {path}, row {bad}: the id is not valid UTF-8 text; write string ids "
                                 "as UTF-8")
            return ids
        except (OSError, pa.ArrowException) as e:
            raise InputError(f"cannot read ids file {path} ({str(e).splitlines()[0]}); give {IDS_FORMAT}") from None
        except UnicodeDecodeError:
            raise InputError(f"ids file {path} holds ids that are not valid UTF-8; give {IDS_FORMAT}") from None
    raise InputError(f"ids file {path} must be .npy or .parquet; give {IDS_FORMAT}")


@contextlib.contextmanager
def parquet_errors(path: Path, what: str | None = None):
    """Errors of reading Parquet (or CSV, JSON Lines) files (damaged pages, columns whose types differ between
    files, text that is not UTF-8) as an InputError naming the file or folder and the fix, not a traceback."""
    try:
        yield
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise read_error(path, e, what) from None


def read_error(path: Path, e: Exception, what: str | None = None) -> InputError:
    what = what or f"the {FORMAT_NAMES[TEXT_FORMATS.get(Path(path).suffix.lower(), 'parquet')]} input"
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, UnicodeDecodeError):
        first = f"a text value is not valid UTF-8 ({e.reason} at byte {e.start})"
    return InputError(f"cannot read {what} {path}: {first}; repair or replace the file and run the same command "
                      "again")


class ParquetSource(SourceBase):
    """A Parquet file or folder of files with columns `id`, `embedding` and optional `text`, read in batches; or
    a CSV or JSON Lines file (or folder of them) with those columns (`open_files`)."""

    def __init__(self, path: str | os.PathLike, id_col: str = "id", vector_col: str = "embedding",
                 text_col: str = "text"):
        with parquet_errors(Path(path)):
            self._open(path, id_col, vector_col, text_col)

    def _open(self, path, id_col: str, vector_col: str, text_col: str) -> None:
        self.path = Path(path)
        self.dataset = open_files(self.path)
        self.format = file_format(self.path)
        names = self.dataset.schema.names
        for col in (id_col, vector_col):
            if col not in names:
                raise InputError(f"{path} has no column {col!r} (it has {names}); the input needs columns "
                                 f"{id_col!r} and {vector_col!r}, and optionally {text_col!r}")
        self.cols = [id_col, vector_col] + ([text_col] if text_col in names else [])
        self.has_text = text_col in names
        self.attributes = schema_of(self.dataset.schema, skip_unsupported=True)
        self.attr_cols = self.attributes.names if self.attributes is not None else []
        self.count = self.dataset.count_rows()
        self.dim = 0
        if self.count:  # from the first file with rows (a dataset's head reads ahead into other files)
            files = FileRows(self.dataset)
            first = files.fragments[files.file(0)]
            with parquet_errors(Path(first.path)):
                self.dim = named(files, 0, lambda: self._matrix(first.head(1, columns=[vector_col]).column(0), 0)
                                 ).shape[1]

    def fingerprint(self) -> dict:
        with parquet_errors(self.path):
            return self._fingerprint()

    def _take(self, rows: np.ndarray, columns: list[str]) -> pa.Table:
        """These rows of the input; a file that cannot be read is named."""
        try:
            return self.dataset.take(pa.array(rows), columns=columns)
        except (pa.ArrowException, OSError) as e:
            bad = FileRows(self.dataset).unreadable(rows, columns)
            raise read_error(Path(bad) if bad else self.path, e) from None

    def _fingerprint(self) -> dict:
        sampled = sampled_rows(self.count)
        rows = self._take(sampled, self.cols + self.attr_cols)
        check_text(rows, sampled, FileRows(self.dataset))
        h = hashlib.sha256(str(rows.schema).encode())
        for col in rows.columns:
            h.update(values_digest(col).encode())
        return {"kind": self.format, "files": _file_fingerprint(Path(f) for f in self.dataset.files),
                "count": self.count, "rows_sha256": h.hexdigest()}

    def sample(self, rows: np.ndarray) -> np.ndarray:
        with parquet_errors(self.path):
            table = self._take(rows, [self.cols[1]])
        try:
            return self._matrix(table.column(0), 0, rows)
        except InputError as e:  # name the file too
            raise FileRows(self.dataset).naming(e, getattr(e, "row", int(rows[0]) if len(rows) else 0)) from None

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        files = FileRows(self.dataset)
        with parquet_errors(self.path):
            for lo, rb in record_batches(self.dataset, self.cols + self.attr_cols, size, start):
                yield named(files, lo, lambda: self._batch(lo, rb, files))

    def _batch(self, lo: int, rb: pa.RecordBatch, files: FileRows) -> Batch:
        check_text(rb, lo, files)
        texts = as_texts(rb.column(2), lo) if self.has_text else None
        attrs = pa.Table.from_batches([rb.select(self.attr_cols)]) if self.attr_cols else None
        return Batch(lo, as_ids(rb.column(0), lo), self._matrix(rb.column(1), lo), texts, attrs)

    def _matrix(self, col, start: int, rows: np.ndarray | None = None) -> np.ndarray:
        """The embedding column as a matrix; CSV and JSON Lines may write each embedding as text."""
        if self.format != "parquet":
            col = text_embeddings(col, start, rows)
        return list_column_to_matrix(col, start, rows)


def record_batches(dataset: ds.Dataset, columns: list[str], size: int, start: int = 0
                   ) -> Iterator[tuple[int, pa.RecordBatch]]:
    """(first row, record batch of `columns`) for the rows of a Parquet dataset from row `start`, in order.
    Whole files and row groups before `start` are skipped without being read."""
    with parquet_errors(Path(dataset.files[0]).parent if len(dataset.files) > 1 else Path(dataset.files[0])):
        yield from _record_batches(dataset, columns, size, start)


def _record_batches(dataset: ds.Dataset, columns: list[str], size: int, start: int
                    ) -> Iterator[tuple[int, pa.RecordBatch]]:
    pos = 0
    for fragment in dataset.get_fragments():
        n = fragment.count_rows()
        if pos + n <= start:  # resume, or one shard of many: skip whole files without reading them
            pos += n
            continue
        pieces = [fragment]
        # ... and whole row groups of the file where reading starts (CSV and JSON Lines have none: rows are skipped)
        if pos < start and isinstance(fragment, ds.ParquetFileFragment):
            pieces = []
            for piece in fragment.split_by_row_group():
                m = piece.row_groups[0].num_rows
                if pieces or pos + m > start:
                    pieces.append(piece)
                else:
                    pos += m
        with parquet_errors(Path(fragment.path)):  # names the file of a folder that is damaged
            for piece in pieces:
                for rb in piece.to_batches(columns=columns, batch_size=size):
                    lo, pos = pos, pos + rb.num_rows
                    if pos <= start:
                        continue
                    if lo < start:
                        rb, lo = rb.slice(start - lo), start
                    yield lo, rb


class IteratorSource(SourceBase):
    """Batches from a Python iterable of (ids, vectors) or (ids, vectors, texts); read once, so not resumable."""

    def __init__(self, iterable: Iterable):
        self._it = iter(iterable)
        self._buffer: list[Batch] = []
        self._pos = 0
        self.count = None
        first = self._next()
        if first is None:
            raise InputError("the input iterator yielded no batches; there is nothing to index")
        self._buffer.append(first)
        self.dim = first.vectors.shape[1]
        self.has_text = first.texts is not None

    def fingerprint(self) -> dict:
        # An iterator is read once and cannot be compared with what an index holds: never the same input.
        return {"kind": "iterator", "nonce": uuid.uuid4().hex}

    def _next(self) -> Batch | None:
        item = next(self._it, None)
        if item is None:
            return None
        if isinstance(item, dict):
            item = (item.get("ids"), item.get("vectors", item.get("embeddings")), item.get("texts"))
        ids, vectors, texts = (tuple(item) + (None,))[:3]
        vectors = np.asarray(vectors)
        if vectors.ndim != 2:
            raise InputError(f"batch at row {self._pos}: vectors must be a 2-D matrix, got shape {vectors.shape}")
        if self._buffer or hasattr(self, "dim"):
            dim = self._buffer[0].vectors.shape[1] if self._buffer else self.dim
            if vectors.shape[1] != dim:
                raise InputError(f"batch at row {self._pos}: vectors have {vectors.shape[1]} dims but the index "
                                 f"expects {dim}; every vector must have the same length")
        n = vectors.shape[0]
        ids = as_ids(ids, self._pos) if ids is not None else pa.array(np.arange(self._pos, self._pos + n))
        if len(ids) != n:
            raise InputError(f"batch at row {self._pos}: {len(ids)} ids for {n} vectors")
        batch = Batch(self._pos, ids, vectors, as_texts(texts, self._pos) if texts is not None else None)
        self._pos += n
        return batch

    def take_sample(self, n: int) -> np.ndarray:
        """The first n rows (read ahead and kept for `batches`): an iterator cannot be sampled at random."""
        while sum(len(b.ids) for b in self._buffer) < n and (b := self._next()) is not None:
            self._buffer.append(b)
        rows = np.concatenate([np.asarray(b.vectors, dtype=np.float32) for b in self._buffer])
        return rows[:n]

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        if start:
            raise InputError("a build from a Python iterator cannot resume; pass overwrite=True to start over")
        while self._buffer:
            yield self._buffer.pop(0)
        while (b := self._next()) is not None:
            yield b
