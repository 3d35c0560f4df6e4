"""A store's rows held whole in one torch tensor, in global row order: in GPU memory (tier "gpu") or in pinned
host memory ("pinned"), so that re-scoring on a GPU gathers its candidates with no per-candidate host round trip
(`rerank.device_rescore`). Placed by `tiers.choose` under a GPU memory budget."""
from __future__ import annotations

import numpy as np
import torch

from .row_store import RowStore, check_mapped

LOAD_ROWS = 1 << 18  # rows read from the store and copied to the tensor at once


def torch_device(device: str | torch.device) -> torch.device:
    """A torch device from one of ours: "gpu" is "cuda"; torch names ("cpu", "cuda:1") pass."""
    return torch.device("cuda" if device == "gpu" else device)


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (what the GPU and pinned tiers need)."""
    return torch.cuda.is_available()


class DeviceRows:
    """The rows of `store` (mapped or in RAM, not on SSD) copied into one tensor on `device`, or into pinned host
    memory with `pinned` (needs CUDA). Global row ids map to tensor rows shard by shard, as in `RowStore`."""

    def __init__(self, store: RowStore, device: str | torch.device = "cuda", pinned: bool = False):
        if store.readers is not None:
            raise ValueError("a store read from SSD cannot be held on a device: place it in RAM first")
        if pinned and not cuda_available():
            raise RuntimeError("pinned host memory needs CUDA, which torch does not see here; hold the rows in "
                               "plain RAM (device 'cpu', pinned=False)")
        self.device = torch.device("cpu") if pinned else torch_device(device)
        self.tier = "pinned" if pinned else "gpu" if self.device.type == "cuda" else "ram"
        self.width = store.width
        counts = np.array([len(a) for a in store.arrays], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        self.rows = torch.empty((int(offsets[-1]), store.width), dtype=_dtype(store.dtype), device=self.device,
                                pin_memory=pinned)
        slots = store.slots or [None] * len(store.arrays)
        for arr, sl, at in zip(store.arrays, slots, offsets.tolist()):
            check_mapped(arr)
            for lo in range(0, len(arr), LOAD_ROWS):
                hi = min(lo + LOAD_ROWS, len(arr))
                block = np.asarray(arr[lo:hi] if sl is None else arr[sl[lo:hi]])  # in row order
                self.rows[at + lo:at + hi].copy_(torch.from_numpy(np.ascontiguousarray(block)))
        # gathered as whole words, not bytes: torch's index_select on int8 rows was 4x slower on a CPU
        row_bytes = store.width * self.rows.element_size()
        word = next(w for w in (torch.int64, torch.int32, torch.int16, torch.uint8) if row_bytes % w.itemsize == 0)
        self.words = self.rows.view(word)
        self.starts = torch.as_tensor(store.starts, device=self.device)
        self.offsets = torch.as_tensor(offsets[:-1], device=self.device)
        # rows of one run from the first start (every build's): a row's position is a subtraction
        self.contiguous = bool(len(counts) and (np.diff(store.starts) == counts[:-1]).all())

    @property
    def nbytes(self) -> int:
        return self.rows.numel() * self.rows.element_size()

    def positions(self, rows: torch.Tensor) -> torch.Tensor:
        """Tensor rows of global rows (on this holder's device); -1 (no candidate) gets row 0."""
        rows = rows.to(self.device, torch.int64)
        if not len(self.starts):
            return torch.zeros_like(rows)
        if self.contiguous:
            pos = rows - self.starts[0]
        else:
            s = (torch.searchsorted(self.starts, rows, right=True) - 1).clamp_(min=0)
            pos = rows - self.starts[s] + self.offsets[s]
        return torch.where(rows >= 0, pos, torch.zeros_like(pos))

    def take(self, rows: torch.Tensor | np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
        """The rows of global ids `rows` (any shape; -1 gets an arbitrary row), shape (*rows.shape, width), on
        `device` (default: where they are held). A pinned holder gathers into pinned memory and copies it to the
        device in one transfer."""
        rows = torch.as_tensor(rows)
        pos = self.positions(rows).reshape(-1)
        if self.tier == "pinned":
            out = torch.empty((len(pos), self.words.shape[1]), dtype=self.words.dtype, pin_memory=True)
            torch.index_select(self.words, 0, pos, out=out)
        else:
            out = self.words.index_select(0, pos)
        out = out.view(self.rows.dtype).reshape(*rows.shape, self.width)
        return out if device is None else out.to(torch_device(device), non_blocking=True)


def _dtype(dtype) -> torch.dtype:
    return torch.from_numpy(np.zeros(0, dtype)).dtype
