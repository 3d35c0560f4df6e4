"""Re-scoring stages: exact int8 and full-dim scores of candidates, then a cross-encoder."""
