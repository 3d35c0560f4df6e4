"""Picking the reader (`sources.Source`) for whatever a user hands to a build."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from matryoshka.core.errors import InputError

from .sources import TEXT_FORMATS, ArraySource, IteratorSource, ParquetSource, Source, npy_source, open_files
from .text_source import ParquetTextSource, TextSource


def open_source(data, ids=None, texts=None, model: str | None = None, device: str = "cpu",
                attributes=None) -> Source:
    """Pick the reader for `data`: a Parquet, CSV or JSON Lines file (or a folder of them), a .npy path, an array,
    a list of texts, or an iterator.

    A file input without an `embedding` column is encoded from its `text` column with `model`; its columns
    other than id, embedding and text are its attributes. Other inputs take `attributes` (a pyarrow Table or a
    dict of arrays, one row per vector).
    """
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise InputError(f"input {path} does not exist")
        if path.suffix == ".npy":
            return npy_source(path, ids, texts, attributes)
        if path.suffix == ".parquet" or path.suffix.lower() in TEXT_FORMATS or path.is_dir():
            if attributes is not None:
                raise InputError(f"{path} is a file input: its columns besides id, embedding and text are the "
                                 "attributes; add them there instead of attributes=")
            names = open_files(path).schema.names
            if "embedding" not in names and "text" in names:
                if not model:
                    raise InputError(f"{path} has texts but no `embedding` column; pass --model / model= to "
                                     "encode them")
                return ParquetTextSource(path, model, device)
            return ParquetSource(path)
        hint = " (JSON Lines: one object per line, named .jsonl)" if path.suffix.lower() == ".json" else ""
        raise InputError(f"input {path} must be a .npy, .parquet, .csv or .jsonl file, or a folder of Parquet, CSV "
                         f"or JSON Lines files{hint}")
    if isinstance(data, np.ndarray) or hasattr(data, "__array__"):
        return ArraySource(np.asarray(data) if not isinstance(data, np.ndarray) else data, ids, texts,
                           attributes=attributes)
    if isinstance(data, (list, tuple)) and data and all(isinstance(t, str) for t in data):
        if not model:
            raise InputError("texts need a model to encode them; pass model= (e.g. 'all-MiniLM-L6-v2')")
        return TextSource(data, ids, model, device, attributes=attributes)
    if isinstance(data, (list, tuple)) and not data:
        raise InputError("the input holds no vectors; there is nothing to index")
    if isinstance(data, (list, tuple)) and all(np.ndim(r) == 1 for r in data):  # rows, as embedding APIs give them
        try:
            matrix = np.asarray(data, dtype=np.float32)
        except (ValueError, TypeError) as e:
            raise InputError(f"vectors given as a list of rows must be numbers, all of one length ({e})") from None
        return ArraySource(matrix, ids, texts, attributes=attributes)
    if hasattr(data, "__iter__"):
        if attributes is not None:
            raise InputError("attributes= goes with arrays, .npy files and texts; for an iterator input write the "
                             "batches to Parquet with the attribute columns")
        return IteratorSource(data)
    raise InputError(f"cannot build from {type(data).__name__}; give a path, an array, texts or an iterator")
