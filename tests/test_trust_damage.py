"""A store file damaged under an open index: every read path refuses the search by naming the file, never
answers from zeros and never dies of SIGBUS; the shards left whole keep answering."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from matryoshka import indexing
from matryoshka.core.errors import StoreDamaged
from matryoshka.storage.row_reader import FileRows

N, DIM = 600, 24

# Each case opens the index, truncates one store file of shard 1, then searches twice: a query near shard 1's
# rows (refused) and one filtered to shard 0's rows (answered). A process killed by SIGBUS exits -7.
WORKER = textwrap.dedent("""
    import os, sys, json
    import numpy as np
    from matryoshka import retrieval
    from matryoshka.core.errors import StoreDamaged
    path, store, opts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    x = np.load(os.path.join(path, "..", "x.npy"))
    if opts.get("memory_budget") == "codes":  # the codes in RAM, every other store read from SSD
        with retrieval.open_index(path) as ix:
            opts["memory_budget"] = ix.info()["stores"]["codes"]["bytes"]
    index = retrieval.open_index(path, **opts)
    before = index.search_batch(x[:4], k=5, rerank=False, where="low").ids
    victim = os.path.join(path, "shards", "00001", store)
    os.truncate(victim, os.path.getsize(victim) // 3)
    try:
        got = index.search_batch(x[400:404], k=5, k1=200, nprobe=64, rerank=False)
        print("ANSWERED", got.ids)
    except StoreDamaged as e:
        assert victim in str(e) or os.path.realpath(victim) in str(e), str(e)
        print("REFUSED", e)
    whole = index.search_batch(x[:4], k=5, rerank=False, where="low")
    print("WHOLE", whole.ids == before)
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    x = np.random.default_rng(5).standard_normal((N, DIM)).astype(np.float32)
    np.save(root / "x.npy", x)
    return indexing.build(root / "idx", x, ids=[f"d{i}" for i in range(N)], texts=[f"doc {i}" for i in range(N)],
                          attributes={"low": np.arange(N) < 300}, shard_size=300, index_dim=16, quiet=True)


def _copy(built, tmp_path):
    import shutil
    shutil.copy(built.parent / "x.npy", tmp_path / "x.npy")
    return shutil.copytree(built, tmp_path / "idx")


SSD = {"memory_budget": "codes"}  # codes in RAM, int8 and full read from SSD
CASES = [("full.f16.npy", {}), ("short.i8.npy", {}), ("docs.utf8.bin", {}), ("docs.offsets.npy", {}),
         ("full.f16.npy", {**SSD, "ssd_reads": {"method": "pread"}}),
         ("full.f16.npy", {**SSD, "ssd_reads": {"method": "willneed"}}),
         ("short.i8.npy", {**SSD, "ssd_reads": {"method": "mmap"}}),
         ("full.f16.npy", {**SSD, "ssd_reads": {"method": "pread", "direct": True}})]


@pytest.mark.parametrize("store,opts", CASES, ids=lambda v: v if isinstance(v, str) else "-".join(
    map(str, v.get("ssd_reads", {"maps": 1}).values())))
def test_a_truncated_store_refuses_by_name_and_the_rest_still_answers(built, tmp_path, store, opts):
    import json
    path = _copy(built, tmp_path)
    if not any(p.name == store for p in (path / "shards" / "00001").iterdir()):
        pytest.skip(f"no {store} in this layout")
    out = subprocess.run([sys.executable, "-c", WORKER, str(path), store, json.dumps(opts)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])  # -7 would be SIGBUS
    assert "REFUSED" in out.stdout and "ANSWERED" not in out.stdout, out.stdout
    assert "WHOLE True" in out.stdout, out.stdout


@pytest.mark.parametrize("method", ["pread", "willneed", "mmap"])
def test_file_rows_never_return_rows_past_a_truncated_end(tmp_path, method):
    a = np.arange(4000 * 8, dtype=np.float32).reshape(4000, 8)
    np.save(tmp_path / "m.npy", a)
    offset = np.load(tmp_path / "m.npy", mmap_mode="r").offset
    reader = FileRows(tmp_path / "m.npy", offset, len(a), 8, np.float32, method=method)
    try:
        assert np.array_equal(reader.read(np.array([1, 3999])), a[[1, 3999]])
        os.truncate(tmp_path / "m.npy", offset + 100 * 32)
        with pytest.raises(StoreDamaged, match="m.npy"):
            reader.read(np.array([1, 3999]))
    finally:
        reader.close()
