"""Benchmarks: per-stage quality and speed, the peers, and the compression frontier."""
import matryoshka  # noqa: F401  (sets OpenMP's wait policy before faiss and torch load)
