"""Append rows to a `.npy` file without knowing the final row count up front."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_HEADER_BYTES = 128  # room for any 2-D shape; numpy wants a multiple of 64


def _header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    body = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    pad = _HEADER_BYTES - 10 - len(body) - 1
    assert pad >= 0
    return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + body.encode() + b" " * pad + b"\n"


class NpyAppender:
    """Streams rows of a fixed width and dtype into a `.npy` file; `close()` writes the final header."""

    def __init__(self, path: Path, width: int, dtype: np.dtype | str):
        self.path, self.width, self.dtype, self.rows = Path(path), int(width), np.dtype(dtype), 0
        self._f = open(self.path, "wb")
        self._f.write(_header(self.dtype, (0, self.width)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        assert block.ndim == 2 and block.shape[1] == self.width
        self._f.write(block.data)
        self.rows += block.shape[0]

    def close(self) -> None:
        self._f.seek(0)
        self._f.write(_header(self.dtype, (self.rows, self.width)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
