"""A build run as its own process, so that tests can SIGKILL it: python build_worker.py VECTORS.npy OUT."""
import sys

import indexing

if __name__ == "__main__":
    indexing.build(sys.argv[2], sys.argv[1], index_dim=32, pq_bytes=8, fast_scan=True, shard_size=1000,
                   batch_rows=250, quiet=True)
