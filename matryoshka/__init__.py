"""Matryoshka retrieval: the shared core and the storage layer that the build (indexing) and the search
(retrieval, rerank) pipelines both stand on."""
import os

# faiss and torch each load their own OpenMP runtime. By default the idle threads of one spin after every
# parallel region and take the cores the other needs next: searches in batches of 10 queries ran 7-10x slower
# on 2 cores (`python -m benchmarks.search_speed ... --batches 1,10,100,1000`, README). The runtimes read this
# when they load, so it is set before faiss or torch is imported; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
