"""Deleted rows: one bitmap per shard (bit r set: row r is dead), written as a new file by each generation
that changes it, and the live-row bitmap over global rows that faiss's `IDSelectorBitmap` reads."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError


def write_dead(shard_dir: Path, generation: int, dead: np.ndarray) -> dict:
    """Write a shard's dead rows (a bool mask) as `dead.g{generation}.bits`, durably; its manifest record."""
    path = shard_dir / layout.dead_name(generation)
    layout.write_atomic(path, np.packbits(dead, bitorder="little").tobytes())
    return {"file": path.name, "count": int(dead.sum()), **layout.file_record(path)}


def dead_rows(data: bytes, rows: int, rec: dict, path: Path) -> np.ndarray:
    """The bool mask of dead rows in a bitmap file's bytes (already checked against its record)."""
    dead = np.unpackbits(np.frombuffer(data, np.uint8), count=rows, bitorder="little").astype(bool)
    if len(data) != (rows + 7) // 8 or int(dead.sum()) != rec["count"]:
        raise IndexFormatError(f"{path}: holds {int(dead.sum())} deleted rows of {rows}, the manifest says "
                               f"{rec['count']}; the file is damaged: restore the index from a copy")
    return dead


def rows_bitmap(rows: np.ndarray, size: int) -> np.ndarray:
    """Packed bits over global rows [0, size), set for `rows` (what faiss's IDSelectorBitmap reads)."""
    bits = np.zeros((size + 7) // 8, dtype=np.uint8)
    np.bitwise_or.at(bits, rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8))
    return bits


def live_bitmap(spans: list[tuple[int, np.ndarray]], size: int) -> np.ndarray:
    """Packed bits over global rows [0, size), set for every row not dead in `spans` ((first row, dead mask))."""
    bits = np.full((size + 7) // 8, 0xFF, dtype=np.uint8)
    for start, dead in spans:
        rows = np.flatnonzero(dead) + start
        np.bitwise_and.at(bits, rows >> 3, ~np.left_shift(1, rows & 7).astype(np.uint8))
    return bits
