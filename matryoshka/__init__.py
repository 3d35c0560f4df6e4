"""Matryoshka retrieval, one installed root: `matryoshka.indexing` (the build), `matryoshka.retrieval` (the
search), `matryoshka.rerank` (re-scoring stages), `matryoshka.benchmarks`, and below them the shared core and
storage layer (`matryoshka.core`, `matryoshka.storage`). The four named first (and `matryoshka.integrations`) are
folders at the top of the repository, mapped in by setuptools' package-dir (see docs/development.md)."""
import os

# faiss and torch each load their own OpenMP runtime. By default the idle threads of one spin after every
# parallel region and take the cores the other needs next: searches in batches of 10 queries ran 7-10x slower
# on 2 cores (`python -m matryoshka.benchmarks.search_speed ... --batches 1,10,100,1000`, docs/operations.md).
# The runtimes read this when they load, so it is set before faiss or torch is imported; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
