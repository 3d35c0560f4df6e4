"""A change to an index run as its own process, so that tests can SIGKILL it:
python change_worker.py INDEX add VECTORS.npy IDS.npy | delete IDS.npy | compact MIN_DEAD."""
import sys

import numpy as np

from matryoshka import indexing
if __name__ == "__main__":
    index, op = sys.argv[1], sys.argv[2]
    if op == "add":
        ids = np.load(sys.argv[4]).tolist()
        indexing.add(index, np.load(sys.argv[3]), ids=ids, texts=[f"text of {i}" for i in ids], quiet=True)
    elif op == "delete":
        indexing.delete(index, np.load(sys.argv[3]).tolist(), quiet=True)
    else:
        indexing.compact(index, min_dead=float(sys.argv[3]), quiet=True)
