"""Re-scoring stages: exact int8 and full-dim scores of candidates, then a cross-encoder."""
import matryoshka  # noqa: F401  (sets OpenMP's wait policy before faiss and torch load)
