"""Texts encoded with a sentence-transformers model, spooled to a resumable memory-mapped file."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np

from . import encoder
from .errors import InputError
from .progress import bar
from .sources import ArraySource, Batch, as_texts

SPOOL = "encoded.f32.npy"
SPOOL_DONE = "encoded.rows"
CHUNK_ROWS = 2048  # rows encoded between two progress checkpoints


class TextSource:
    """Encodes every text once (`prepare`), then reads like an ArraySource over the spooled vectors."""

    def __init__(self, texts, ids=None, model: str = encoder.DEFAULT_MODEL, device: str = "cpu",
                 encode_batch: int = 64):
        self.texts = as_texts(texts, 0)
        if not self.texts:
            raise InputError("no texts were given; there is nothing to index")
        self.ids, self.count, self.has_text = ids, len(self.texts), True
        self.model_name, self.device, self.encode_batch = model, device, encode_batch
        self.model = encoder.load_model(model, device)
        self.dim = encoder.model_dim(self.model)
        self._inner: ArraySource | None = None

    def fingerprint(self) -> dict:
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode())
            h.update(b"\0")
        return {"kind": "texts", "count": self.count, "sha256": h.hexdigest(), "model": self.model_name}

    def prepare(self, workdir: Path, quiet: bool = False) -> None:
        """Encode all texts into workdir, continuing from the last checkpoint of an interrupted build."""
        workdir.mkdir(parents=True, exist_ok=True)
        spool, done_file = workdir / SPOOL, workdir / SPOOL_DONE
        done = int(done_file.read_text()) if done_file.exists() and spool.exists() else 0
        mode = "r+" if done else "w+"
        out = np.lib.format.open_memmap(spool, mode=mode, dtype=np.float32, shape=(self.count, self.dim))
        with bar(self.count, "encode", quiet, initial=done) as pbar:
            for lo in range(done, self.count, CHUNK_ROWS):
                hi = min(lo + CHUNK_ROWS, self.count)
                out[lo:hi] = encoder.encode(self.model, self.texts[lo:hi], self.encode_batch)
                out.flush()
                done_file.write_text(str(hi))
                pbar.update(hi - lo)
        del out
        self._inner = ArraySource(np.load(spool, mmap_mode="r"), self.ids, self.texts)

    def sample(self, rows: np.ndarray) -> np.ndarray:
        return self._inner.sample(rows)

    def batches(self, size: int, start: int = 0) -> Iterator[Batch]:
        return self._inner.batches(size, start)
