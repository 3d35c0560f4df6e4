"""A build run as its own process, so that tests can SIGKILL it: python build_worker.py VECTORS.npy OUT."""
import sys

from matryoshka import indexing
if __name__ == "__main__":
    # the default command (plan and operating point measured), cut into small shards and batches to kill between
    indexing.build(sys.argv[2], sys.argv[1], shard_size=1000, batch_rows=250, quiet=True)
