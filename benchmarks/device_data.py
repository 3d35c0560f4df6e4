"""Vectors made on a device with torch, so that nothing large travels to a GPU machine, and the exact top-k against
them computed there (a matrix product and a top-k per block of documents)."""
from __future__ import annotations

import torch

CHUNK_ROWS = 1 << 20  # rows made at once
BLOCK_SCORES = 1 << 29  # query x document scores held at once (2 GiB of float32)


def clustered(n: int, dim: int, device: str | torch.device, stream: int = 1, seed: int = 0, clusters: int = 1024,
              decay: float = 0.7, noise: float = 0.5) -> torch.Tensor:
    """n float32 vectors shaped like `benchmarks.synthetic.Synthetic`'s: cluster centres (one set per `seed`) with
    a decaying spectrum (std of dim j is (1 + j)^-decay, Matryoshka-like) plus noise. Streams 1 (documents) and 2
    (queries) draw different rows around the same centres."""
    std = (1.0 + torch.arange(dim, device=device, dtype=torch.float32)) ** -decay
    g = torch.Generator(device=device).manual_seed(seed)
    centres = torch.randn((clusters, dim), generator=g, device=device) * std
    g.manual_seed(seed * 1000 + stream)
    out = torch.empty((n, dim), device=device)
    for lo in range(0, n, CHUNK_ROWS):
        m = min(CHUNK_ROWS, n - lo)
        label = torch.randint(0, clusters, (m,), generator=g, device=device)
        out[lo:lo + m] = centres[label] + noise * torch.randn((m, dim), generator=g, device=device) * std
    return out


def exact_topk(q: torch.Tensor, docs: torch.Tensor, k: int, metric: str = "cosine") -> torch.Tensor:
    """The rows (nq, k) of the k most similar documents of each query, exact, on the tensors' device: cosine and
    ip by inner product (cosine of unit vectors), l2 by the least squared distance."""
    q = q.float()
    if metric == "cosine":
        q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    block = max(1, BLOCK_SCORES // max(1, len(q)))
    best_s = torch.empty((len(q), 0), device=q.device)
    best_r = torch.empty((len(q), 0), dtype=torch.int64, device=q.device)
    for lo in range(0, len(docs), block):
        d = docs[lo:lo + block].float()
        if metric == "cosine":
            d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
        s = q @ d.T
        if metric == "l2":
            s = 2 * s - (d * d).sum(1)[None, :]  # |q|^2 is the same for every document of a query
        s, r = s.topk(min(k, s.shape[1]), dim=1)
        best_s, at = torch.cat([best_s, s], 1), torch.cat([best_r, r + lo], 1)
        best_s, top = best_s.topk(min(k, best_s.shape[1]), dim=1)
        best_r = at.gather(1, top)
    return best_r
