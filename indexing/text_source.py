"""Texts encoded with a sentence-transformers model, spooled to a resumable memory-mapped file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from matryoshka.core import encoder
from matryoshka.core.errors import InputError
from matryoshka.core.layout import crash_point
from matryoshka.core.progress import bar

from .attributes import as_table, digest, schema_of
from .ids import as_ids
from .sources import (ArraySource, Batch, FileRows, SourceBase, _file_fingerprint, as_texts, check_text, named,
                      open_files, record_batches, values_digest)

SPOOL = "encoded.f32.npy"
SPOOL_DONE = "encoded.rows"
CHUNK_ROWS = 2048  # rows encoded between two progress checkpoints


class TextSource(SourceBase):
    """Encodes every text once (`prepare`), then reads like an ArraySource over the spooled vectors."""

    def __init__(self, texts, ids=None, model: str = encoder.DEFAULT_MODEL, device: str = "cpu",
                 encode_batch: int = 64, attributes=None):
        self.texts = as_texts(texts, 0)
        if not self.texts:
            raise InputError("no texts were given; there is nothing to index")
        self.ids, self.count = ids, len(self.texts)
        self.attrs = None if attributes is None else as_table(attributes, self.count)
        self.attributes = None if self.attrs is None else schema_of(self.attrs.schema)
        self._load_model(model, device, encode_batch)

    def _load_model(self, model: str, device: str, encode_batch: int) -> None:
        self.has_text, self.model_name, self.device, self.encode_batch = True, model, device, encode_batch
        self.model = encoder.load_model(model, device)
        self.dim = encoder.model_dim(self.model)
        self._spool: np.ndarray | None = None  # the encoded vectors, once `prepare` ran

    def fingerprint(self) -> dict:
        fp = {"kind": "texts", "count": self.count, "sha256": values_digest(self.texts), "model": self.model_name}
        if self.ids is not None:
            fp["ids_sha256"] = values_digest(self.ids)
        if self.attrs is not None:
            fp["attributes_sha256"] = digest(self.attrs)
        return fp

    def _chunks(self, start: int) -> Iterator[tuple[int, list[str]]]:
        """(first row, texts) from row `start` on, CHUNK_ROWS at a time."""
        for lo in range(start, self.count, CHUNK_ROWS):
            yield lo, self.texts[lo:lo + CHUNK_ROWS]

    def prepare(self, workdir: Path, quiet: bool = False) -> None:
        """Encode all texts into workdir, continuing from the last checkpoint of an interrupted build."""
        workdir.mkdir(parents=True, exist_ok=True)
        spool, done_file = workdir / SPOOL, workdir / SPOOL_DONE
        done = int(done_file.read_text()) if done_file.exists() and spool.exists() else 0
        mode = "r+" if done else "w+"
        out = np.lib.format.open_memmap(spool, mode=mode, dtype=np.float32, shape=(self.count, self.dim))
        with bar(self.count, "encode", quiet, initial=done) as pbar:
            for i, (lo, texts) in enumerate(self._chunks(done)):
                hi = lo + len(texts)
                out[lo:hi] = encoder.encode(self.model, texts, self.encode_batch)
                out.flush()
                done_file.write_text(str(hi))
                pbar.update(hi - lo)
                crash_point("encode", i)
        del out
        self._spool = np.load(spool, mmap_mode="r")

    def sample(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._spool[rows], dtype=np.float32)

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        return ArraySource(self._spool, self.ids, self.texts, attributes=self.attrs).batches(size, start)


class ParquetTextSource(TextSource):
    """Texts (and ids, when the files have an `id` column) read from Parquet in batches: neither the texts nor
    their vectors are ever held whole, so a text corpus builds out of core like a vector one."""

    def __init__(self, path: str | os.PathLike, model: str = encoder.DEFAULT_MODEL, device: str = "cpu",
                 encode_batch: int = 64):
        self.dataset = open_files(path)  # Parquet, CSV or JSON Lines
        names = self.dataset.schema.names
        others = sorted(set(names) - {"text", "id"})
        if others and "id" not in names:
            raise InputError(f"{path} has columns {others} besides `text` and no `id` column; ids are read from a "
                             "column named `id` (rename yours), or are the row numbers when `text` is the only "
                             "column")
        self.cols = ["text"] + (["id"] if "id" in names else [])
        self.attributes = schema_of(self.dataset.schema, skip_unsupported=True)  # the other columns
        self.attr_cols = self.attributes.names if self.attributes is not None else []
        self.count, self.ids = self.dataset.count_rows(), None
        if not self.count:
            raise InputError(f"{path} holds no rows; there is nothing to index")
        self._load_model(model, device, encode_batch)

    def fingerprint(self) -> dict:
        return {"kind": "texts", "files": _file_fingerprint(Path(f) for f in self.dataset.files),
                "model": self.model_name, "attributes": self.attr_cols}

    def _chunks(self, start: int) -> Iterator[tuple[int, list[str]]]:
        return text_chunks(self.dataset, start)

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        files = FileRows(self.dataset)
        for lo, rb in record_batches(self.dataset, self.cols + self.attr_cols, size, start):
            yield named(files, lo, lambda: self._batch(lo, rb, files))

    def _batch(self, lo: int, rb: pa.RecordBatch, files: FileRows) -> Batch:
        check_text(rb, lo, files)
        hi = lo + rb.num_rows
        ids = as_ids(rb.column(1), lo) if len(self.cols) > 1 else pa.array(np.arange(lo, hi, dtype=np.int64))
        attrs = pa.Table.from_batches([rb.select(self.attr_cols)]) if self.attr_cols else None
        return Batch(lo, ids, np.asarray(self._spool[lo:hi]), as_texts(rb.column(0), lo), attrs)


def text_chunks(dataset, start: int = 0, columns: tuple[str, ...] = ("text",)) -> Iterator[tuple[int, list[str]]]:
    """(first row, texts) of a Parquet dataset's `text` column from row `start`, CHUNK_ROWS at a time. The read
    `columns` (text first) are refused, naming the file and row, where their bytes are not UTF-8 or a text is no
    string; a damaged file is named."""
    files = FileRows(dataset)
    for lo, rb in record_batches(dataset, list(columns), CHUNK_ROWS, start):
        check_text(rb, lo, files)
        yield lo, named(files, lo, lambda: as_texts(rb.column(0), lo))
