"""Benchmarks: per-stage quality and speed, the peers, and the compression frontier."""
