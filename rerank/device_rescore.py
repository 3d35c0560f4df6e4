"""Stages 2 and 3 on torch tensors on a device ("cpu", "cuda" or our "gpu"): the int8 and full re-scoring and the
cut of `rerank.rescore`, with its results (the same candidates in the same order, scores equal to float32
rounding).

Candidate rows are gathered where they live and reach the device in one copy per block of queries, never one
per candidate: int8 rows from a `DeviceRows` (GPU or pinned memory) are gathered on the device, other rows on
the host (RAM, page cache or SSD, as `rescore` reads them). Scores stay on the device; `host` brings them back.
"""
from __future__ import annotations

import numpy as np
import torch

from matryoshka.core.codec import Int8Codec
from matryoshka.storage.device_store import DeviceRows, torch_device
from matryoshka.storage.row_store import RowStore

from .rescore import CHUNK_BYTES, GATHER_BYTES

DEVICE_CHUNK_BYTES = 1 << 30  # float32 candidates scored at once on a GPU: a few large kernels
TRANSFER_BYTES = 256 << 20  # stored rows gathered on the host and copied to a GPU at once
Array = np.ndarray | torch.Tensor
Device = str | torch.device


def int8_scores(q_short: Array, cand: Array, store: RowStore | DeviceRows, codec: Int8Codec, metric: str,
                device: Device = "cpu") -> torch.Tensor:
    """Score candidates (global rows, -1 for none) against their int8 codes; -inf for none."""
    dev = torch_device(device)
    scale, offset = (torch.as_tensor(a, device=dev) for a in (codec.scale, codec.offset))
    if metric == "l2":
        return _rescore(q_short, cand, store, lambda x, q: _minus_sq_dist(x.mul_(scale).add_(offset), q), False, dev)

    def ip(x, q):  # the scales folded into the query, as `Int8Codec.inner_products` does
        return _dot(x, q * scale) + (q @ offset)[:, None]
    return _rescore(q_short, cand, store, ip, False, dev)


def full_scores(q: Array, cand: Array, store: RowStore, metric: str, dims: int | None = None,
                device: Device = "cpu") -> torch.Tensor:
    """Score candidates against their full vectors, or their first `dims` dims; -inf for none."""
    dev = torch_device(device)
    q = _on(q, dev, torch.float32)
    if dims is not None:
        q = q[:, :dims]
        if metric == "cosine":
            q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def score(x, qc):
        if dims is not None and metric == "cosine":
            x = x.div_(x.norm(dim=-1, keepdim=True).clamp_min_(1e-12))
        return _minus_sq_dist(x, qc) if metric == "l2" else _dot(x, qc)
    return _rescore(q, cand, store, score, True, dev, dims)


def keep(cand: Array, stages: dict[str, Array], key: str, depth: int,
         device: Device | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`rescore.keep` on tensors: sort by one stage's score (stable: ties keep their order) and keep the best
    `depth`, carrying every stage's scores; -1 where that score is not finite. On `device`, default `cand`'s."""
    c = torch.as_tensor(cand, device=None if device is None else torch_device(device))
    stages = {s: torch.as_tensor(v, device=c.device) for s, v in stages.items()}
    order = torch.argsort(-stages[key], dim=1, stable=True)[:, :depth]
    stages = {s: torch.gather(v, 1, order) for s, v in stages.items()}
    return torch.gather(c, 1, order).masked_fill_(~torch.isfinite(stages[key]), -1), stages


def host(t: Array) -> np.ndarray:
    """A tensor (or array) as a numpy array in host memory."""
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def _on(a: Array, dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(a).to(dev, dtype)


def _rescore(q: Array, cand: Array, store: RowStore | DeviceRows, score, in_order: bool, dev: torch.device,
             cols: int | None = None) -> torch.Tensor:
    """Scores of `cand` by `score(rows, queries)`, a chunk of queries at a time; `score` gets the rows as float32
    in a buffer of its own to change (a new tensor per chunk cost more in page faults than the scoring on a CPU).
    Rows a `DeviceRows` holds are gathered per chunk where they live; a `RowStore`'s are gathered on the host for
    a block of chunks (only their first `cols` columns) and copied to `dev` at once."""
    q, c = _on(q, dev, torch.float32), _on(cand, dev, torch.int64)
    nq, k = c.shape
    out = torch.full((nq, k), float("-inf"), dtype=torch.float32, device=dev)
    width = store.width if cols is None else min(cols, store.width)
    step = max(1, (CHUNK_BYTES if dev.type == "cpu" else DEVICE_CHUNK_BYTES) // max(1, k * width * 4))
    on_host = isinstance(store, RowStore)
    block = step
    if on_host and (dev.type != "cpu" or len(store.starts) > 1):  # as `rescore`: one pass over the shards a block
        block = max(1, (GATHER_BYTES if dev.type == "cpu" else TRANSFER_BYTES)
                    // max(1, k * width * store.dtype.itemsize) // step) * step
    g = host(cand) if on_host else None
    buf = torch.empty((min(step, nq), k, width), dtype=torch.float32, device=dev)
    for glo in range(0, nq, block):
        ghi = min(glo + block, nq)
        if on_host:
            if not (g[glo:ghi] >= 0).any():
                continue
            rows = store.candidates(g[glo:ghi], in_order)
            rows = torch.from_numpy(rows if cols is None else rows[..., :cols]).to(dev, non_blocking=True)
        for lo in range(glo, ghi, step):
            hi = min(lo + step, ghi)
            r = rows[lo - glo:hi - glo] if on_host else store.take(c[lo:hi], dev)
            out[lo:hi] = score(buf[:hi - lo].copy_(r), q[lo:hi]).masked_fill_(c[lo:hi] < 0, float("-inf"))
    return out


def _dot(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """(n, k, d) . (n, d) -> (n, k), as one batched product of (1, d) by (d, k): on a CPU 8x faster than (k, d)
    by (d, 1)."""
    return torch.bmm(q[:, None, :], x.transpose(1, 2))[:, 0]


def _minus_sq_dist(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Minus the squared distances of (n, k, d) rows to (n, d) queries; `x` is overwritten."""
    return -x.sub_(q[:, None, :]).square_().sum(-1)
