"""Living indexes: add, delete, upsert and compact as atomic generations, without retraining."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FIXED

from matryoshka import indexing
from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import BuildRefused, IndexFormatError, InputError
from matryoshka.retrieval.cli import main

WORKER = Path(__file__).with_name("change_worker.py")


@pytest.fixture
def index(tmp_path, small_index):
    """A copy of the 3,000-document index (ids doc-0.., texts, 3 shards) to change."""
    shutil.copytree(small_index, tmp_path / "idx")
    return tmp_path / "idx"


def new_docs(small_data, n=600, seed=7):
    """Documents like the index's (near copies of its first n), with new ids."""
    docs, _ = small_data
    x = docs[:n] + 0.05 * np.random.default_rng(seed).standard_normal((n, docs.shape[1])).astype(np.float32)
    return x, [f"new-{i}" for i in range(n)]


def top1(index, x):
    return [row[0] for row in index.search_batch(x, k=10, **FIXED).ids]


def test_added_documents_are_found_and_the_old_handle_keeps_its_generation(index, small_data):
    x, ids = new_docs(small_data)
    before = retrieval.open_index(index)
    rec = indexing.add(index, x, ids=ids, texts=[f"new text {i}" for i in ids], quiet=True)
    assert rec["added"] == 600 and rec["generation"] == 2 and rec["warning"] is None
    after = retrieval.open_index(index)
    assert (after.generation, after.live, after.count) == (2, 3600, 3600)
    assert top1(after, x[:50]) == ids[:50]
    hits = after.search(x[3], k=1)
    assert (hits[0].id, hits[0].text) == ("new-3", "new text new-3")
    assert "new-3" not in top1(before, x[:50])  # the handle opened before the add answers from generation 1
    assert before.reload() and top1(before, x[:50]) == ids[:50]
    assert not before.reload()


def test_colliding_ids_are_refused_and_upsert_replaces_them(index, small_data):
    docs, _ = small_data
    shards = sorted(os.listdir(index / layout.SHARDS))
    moved = docs[[10, 11]][::-1].copy()  # doc-10 gets doc-11's vector and the other way round
    with pytest.raises(InputError, match=r"2 id\(s\) .* already in the index \('doc-10', 'doc-11'\).*upsert"):
        indexing.add(index, moved, ids=["doc-10", "doc-11"], texts=["a", "b"], quiet=True)
    assert sorted(os.listdir(index / layout.SHARDS)) == shards  # nothing written, nothing left behind
    assert retrieval.open_index(index).generation == 1
    rec = indexing.add(index, moved, ids=["doc-10", "doc-11"], texts=["a", "b"], upsert=True, quiet=True)
    assert (rec["added"], rec["replaced"]) == (2, 2)
    after = retrieval.open_index(index)
    assert (after.live, after.count, after.info()["dead"]) == (3000, 3002, 2)
    assert top1(after, docs[[10, 11]]) == ["doc-11", "doc-10"]
    assert after.search(docs[11], k=1)[0].text == "a"


def test_bad_adds_are_refused_clearly(index, tmp_path, small_data):
    docs, _ = small_data
    with pytest.raises(InputError, match="input has 50-dim vectors but the index holds 96-dim"):
        indexing.add(index, np.ones((3, 50), np.float32), ids=["a", "b", "c"], texts=["a"] * 3, quiet=True)
    with pytest.raises(InputError, match="ids are strings: give ids="):
        indexing.add(index, docs[:3], texts=["a"] * 3, quiet=True)
    with pytest.raises(InputError, match="stores the documents' texts"):
        indexing.add(index, docs[:3], ids=["a", "b", "c"], quiet=True)
    with pytest.raises(InputError, match="ids are ints but the index's .* are strings"):
        indexing.add(index, docs[:3], ids=[1, 2, 3], texts=["a"] * 3, quiet=True)
    with pytest.raises(InputError, match="duplicate id 'a'"):
        indexing.add(index, docs[:3], ids=["a", "b", "a"], texts=["a"] * 3, quiet=True)
    with pytest.raises(InputError, match="no index at .*does not exist"):
        indexing.add(tmp_path / "missing", docs[:3], quiet=True)
    with pytest.raises(InputError, match="no index at .*does not exist"):
        indexing.delete(tmp_path / "missing", ["a"])
    assert retrieval.open_index(index).generation == 1


def test_deleted_documents_never_appear_and_k_live_hits_still_come_back(index, small_data):
    docs, _ = small_data
    ix = retrieval.open_index(index)
    q = docs[:1]
    near = ix.search_batch(q, k=300, nprobe=16, k1=300, k2=300).ids[0]  # its 300 nearest, itself first
    gone = near[:250]
    with pytest.raises(InputError, match=r"2 of the 252 ids are not in the index \('nope', 'never'\)"):
        indexing.delete(index, gone + ["nope", "never"])
    assert retrieval.open_index(index).generation == 1  # nothing deleted
    rec = indexing.delete(index, gone + ["nope"], missing_ok=True, quiet=True)
    assert (rec["deleted"], rec["unknown"]) == (250, 1)
    ix = retrieval.open_index(index)
    res = ix.search_batch(q, k=10, nprobe=16, k1=50, k2=50)
    assert len(res.ids[0]) == 10 and not set(res.ids[0]) & set(gone)  # post-filtering k1=50 would leave none
    assert len(set(res.ids[0]) & set(near[250:260])) >= 8  # the next nearest, found through the selector
    for row in ix.search_batch(docs[:300], k=10, **FIXED).ids:
        assert not set(row) & set(gone)
    info = ix.info()
    assert (info["live"], info["dead"], info["generation"]) == (2750, 250, 2)
    assert sum(s["dead"] for s in info["shards"]) == 250
    out = json.loads(_cli(["info", str(index), "--json"]))
    assert out["dead"] == 250
    with pytest.raises(InputError, match="not in the index"):
        indexing.delete(index, gone[:1])  # already deleted
    assert indexing.delete(index, near[260], quiet=True)["deleted"] == 1  # one id, not its characters


def _cli(argv):
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


def test_compaction_equals_a_fresh_build_of_the_live_documents(index, tmp_path, small_data):
    docs, queries = small_data
    fresh = tmp_path / "fresh"
    shutil.copytree(index, fresh)
    dead = sorted(random.Random(3).sample(range(3000), 900))
    live = np.setdiff1d(np.arange(3000), dead)
    indexing.delete(index, [f"doc-{i}" for i in dead], quiet=True)
    before = retrieval.open_index(index).search_batch(queries, k=10, **FIXED)
    rec = indexing.compact(index, quiet=True)
    assert rec["rewritten"] == [0, 1, 2] and rec["removed_rows"] == 900
    compacted = retrieval.open_index(index)
    assert (compacted.count, compacted.live, compacted.info()["dead"]) == (2100, 2100, 0)
    # the old shards stay for one generation (readers elsewhere may still map them), then go
    assert sorted(os.listdir(index / layout.SHARDS)) == ["00000", "00001", "00002", "00003", "00004", "00005"]
    # The same trained quantizer with only the live documents, through the public API: delete all, compact
    # (every shard dropped), add the live ones.
    indexing.delete(fresh, [f"doc-{i}" for i in range(3000)], quiet=True)
    assert indexing.compact(fresh, quiet=True)["into"] == []
    empty = retrieval.open_index(fresh)
    assert empty.live == 0 and (empty.search_batch(queries[:3], k=5).rows == -1).all()
    indexing.add(fresh, docs[live], ids=[f"doc-{i}" for i in live], texts=[f"text of document {i}" for i in live],
                 quiet=True)
    a = compacted.search_batch(queries, k=10, **FIXED)
    b = retrieval.open_index(fresh).search_batch(queries, k=10, **FIXED)
    assert a.ids == b.ids and a.texts == b.texts
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.ids == before.ids  # compaction changes no result
    assert indexing.compact(index, quiet=True)["rewritten"] == []  # nothing left to compact
    indexing.delete(index, ["doc-1" if 1 in live else "doc-2"], quiet=True)
    assert sorted(os.listdir(index / layout.SHARDS)) == ["00003", "00004", "00005"]


def test_integer_ids_continue_and_cli_changes(tmp_path, small_data):
    docs, _ = small_data
    indexing.build(tmp_path / "ints", docs[:1000], index_dim=32, pq_bytes=8, shard_size=600, tune=False, quiet=True)
    np.save(tmp_path / "more.npy", docs[1000:1100])
    out = json.loads(_cli(["add", str(tmp_path / "ints"), str(tmp_path / "more.npy"), "--quiet"]))
    assert out["added"] == 100
    ix = retrieval.open_index(tmp_path / "ints")
    assert top1(ix, docs[1000:1005]) == [1000, 1001, 1002, 1003, 1004]  # numbered after the largest id
    (tmp_path / "ids.txt").write_text("1000\n1001\n5\n")
    out = json.loads(_cli(["delete", str(tmp_path / "ints"), "--ids", str(tmp_path / "ids.txt"), "--quiet"]))
    assert out["deleted"] == 3
    assert main(["delete", str(tmp_path / "ints"), "--ids", "5", "--quiet"]) == 2  # already deleted: an error
    out = json.loads(_cli(["compact", str(tmp_path / "ints"), "--min-dead", "0.001", "--quiet"]))
    assert out["removed_rows"] == 3
    ix = retrieval.open_index(tmp_path / "ints")
    assert ix.live == 1097 and 1000 not in top1(ix, docs[1000:1001])
    assert "generation 4" in _cli(["info", str(tmp_path / "ints")])


def test_drift_is_measured_and_warned(index, small_data):
    x, ids = new_docs(small_data, 300)
    texts = [f"t{i}" for i in ids]
    rec = indexing.add(index, x, ids=ids, texts=texts, quiet=True)
    assert rec["warning"] is None and rec["drift"]["rows"] == 300
    ref = retrieval.open_index(index).manifest.drift_reference
    assert 0.8 < rec["drift"]["centroid_distance"] / ref["centroid_distance"] < 1.2
    far = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)  # another distribution
    with pytest.warns(UserWarning, match="differ from those the index was trained on.*rebuild"):
        rec = indexing.add(index, far, ids=[f"far-{i}" for i in range(300)], texts=texts, quiet=True)
    assert rec["drift"]["centroid_distance"] > 1.25 * ref["centroid_distance"]
    assert retrieval.open_index(index).manifest.changes[-1]["warning"] == rec["warning"]


def test_an_index_of_format_1_opens_and_takes_changes(index, small_data):
    m = json.loads((index / layout.MANIFEST).read_text())
    for key in ("generation", "next_shard", "next_row", "dead"):
        m.pop(key)
    (index / layout.MANIFEST).write_text(json.dumps({**m, "format_version": 1}))
    assert retrieval.open_index(index).generation == 1
    indexing.delete(index, ["doc-1"], quiet=True)
    m = json.loads((index / layout.MANIFEST).read_text())
    assert (m["format_version"], m["generation"], m["dead"]) == (layout.FORMAT_VERSION, 2, 1)


# -- kills ---------------------------------------------------------------------------------------------------

def run_worker(index: Path, args: list[str], crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(layout.CRASH_ENV, None)
    if crash_at:
        env[layout.CRASH_ENV] = crash_at
    return subprocess.Popen([sys.executable, str(WORKER), str(index), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> int:
    _, err = p.communicate(timeout=300)
    assert p.returncode in (0, -signal.SIGKILL), err
    return p.returncode


@pytest.fixture(scope="module")
def changes(tmp_path_factory, small_index, small_data):
    """Inputs of an add, a delete and a compaction, and the results after each one run uninterrupted."""
    tmp = tmp_path_factory.mktemp("changes")
    x, ids = new_docs(small_data, 1500)
    np.save(tmp / "x.npy", x)
    np.save(tmp / "ids.npy", np.array(ids))
    np.save(tmp / "dead.npy", np.array([f"doc-{i}" for i in range(0, 3000, 2)] + ids[:100]))
    ops = {"add": ["add", str(tmp / "x.npy"), str(tmp / "ids.npy")], "delete": ["delete", str(tmp / "dead.npy")],
           "compact": ["compact", "0.3"]}
    ref = tmp / "ref"
    shutil.copytree(small_index, ref)
    results, seconds = {}, {}
    for name, args in ops.items():
        t = time.monotonic()
        assert finish(run_worker(ref, args)) == 0
        seconds[name] = time.monotonic() - t
        results[name] = state(ref, small_data)
    return ops, results, seconds


def state(index: Path, small_data):
    _, queries = small_data
    ix = retrieval.open_index(index)
    r = ix.search_batch(queries, k=10, **FIXED)
    return ix.generation, ix.live, r.ids, r.scores


POINTS = [("add", "mid_shard:4"), ("add", "between_shards:3"), ("add", "manifest"), ("add", "committed"),
          ("delete", "tombstone:1"), ("delete", "manifest"), ("compact", "compacted:1"), ("compact", "committed")]


@pytest.mark.slow
@pytest.mark.parametrize("op,point", POINTS)
def test_a_change_killed_at_any_point_leaves_a_valid_index_and_reruns_to_the_same_end(
        op, point, changes, small_index, small_data, tmp_path):
    ops, results, _ = changes
    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    names = list(ops)
    for prior in names[:names.index(op)]:
        assert finish(run_worker(index, ops[prior])) == 0
    before = state(index, small_data)
    assert finish(run_worker(index, ops[op], crash_at=point)) == -signal.SIGKILL
    now = state(index, small_data)  # it opens, whole: the previous generation, or the next once committed
    assert now[0] == before[0] + (point == "committed")
    assert finish(run_worker(index, ops[op])) == 0
    end, want = state(index, small_data), results[op]
    assert end[:3] == want[:3]
    np.testing.assert_array_equal(end[3], want[3])
    assert retrieval.open_index(index, verify=True).live == want[1]
    m = retrieval.open_index(index).manifest
    named = {layout.shard_name(s.number) for s in m.shards} | {r for r in m.retained if "/" not in r}
    assert set(os.listdir(index / layout.SHARDS)) == named  # nothing half-written, or superseded twice, is left


@pytest.mark.slow
def test_random_kills_during_changes_end_like_uninterrupted_ones(changes, small_index, small_data, tmp_path):
    ops, results, seconds = changes
    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    rng = random.Random(7)
    killed = 0
    for op in ops:
        for _ in range(3):  # most of a worker's time is its start: kill in the last half
            p = run_worker(index, ops[op])
            time.sleep(rng.uniform(0.5, 1.0) * seconds[op])
            p.send_signal(signal.SIGKILL)
            killed += finish(p) != 0
            state(index, small_data)  # whatever the moment, the index opens
        assert finish(run_worker(index, ops[op])) == 0
        end = state(index, small_data)
        assert end[:3] == results[op][:3]
    assert killed >= 3


def test_a_reader_opening_during_changes_sees_one_generation(index, small_data, tmp_path):
    """A reader stopped between reading its generation's codes and mapping its stores, while a compaction and
    a delete commit and remove the shards it was opening, opens the newest generation instead, whole."""
    docs, queries = small_data
    indexing.delete(index, [f"doc-{i}" for i in range(0, 3000, 3)], quiet=True)
    reader = ("import sys, json, retrieval; import numpy as np\n"
              "ix = retrieval.open_index(sys.argv[1]); q = np.load(sys.argv[2])\n"
              f"print(json.dumps([ix.generation, ix.search_batch(q, k=10, **{FIXED!r}).ids]))")
    np.save(tmp_path / "q.npy", queries)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), layout.STOP_ENV: "open-stores:2"}
    p = subprocess.Popen([sys.executable, "-c", reader, str(index), str(tmp_path / "q.npy")], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _state(p.pid) != "T":
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.05)
    indexing.compact(index, quiet=True)  # shards 0-2, which the reader was opening, are superseded...
    indexing.delete(index, ["doc-1"], quiet=True)  # ... and removed by the next change
    assert not (index / layout.SHARDS / "00002").exists()
    g4 = retrieval.open_index(index).search_batch(queries, k=10, **FIXED).ids
    os.kill(p.pid, signal.SIGCONT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    generation, ids = json.loads(out)
    assert (generation, ids) == (4, g4)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_change_refuses_a_locked_or_damaged_index(index):
    import fcntl
    with open(index / layout.LOCK, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(BuildRefused, match="another build is writing"):
            indexing.delete(index, ["doc-1"])
    with pytest.raises(IndexFormatError):
        (index / layout.MANIFEST).write_text("{}")
        indexing.delete(index, ["doc-1"])


def test_many_small_adds_fill_one_tail_shard_and_every_document_stays_found(index, small_data):
    x, ids = new_docs(small_data, n=500)
    texts = [f"new text {i}" for i in ids]
    for lo in range(0, 500, 10):  # fifty adds of ten
        indexing.add(index, x[lo:lo + 10], ids=ids[lo:lo + 10], texts=texts[lo:lo + 10], quiet=True)
    m = json.loads((index / layout.MANIFEST).read_text())
    assert [s["count"] for s in m["shards"]] == [1000, 1000, 1000, 500]  # one tail shard, not fifty
    after = retrieval.open_index(index)
    assert after.live == 3500 and top1(after, x[::25]) == ids[::25]
    assert after.search(x[77], k=1)[0].text == "new text new-77"


def test_compaction_merges_small_shards_side_by_side(index, small_data):
    docs, _ = small_data
    indexing.delete(index, [f"doc-{i}" for i in range(700)] + [f"doc-{i}" for i in range(1000, 1700)], quiet=True)
    rec = indexing.compact(index, quiet=True)
    m = json.loads((index / layout.MANIFEST).read_text())
    assert rec["rewritten"] == [0, 1] and [s["count"] for s in m["shards"]] == [1000, 600]  # 300 + 300 live
    live = np.r_[700:1000, 1700:3000]
    assert top1(retrieval.open_index(index), docs[live[::40]]) == [f"doc-{i}" for i in live[::40]]


def test_documents_are_read_back_by_id_and_by_row_across_shards_and_changes(index, small_data):
    """`Index.get` and `Index.records`: ids across three shards, in the order asked, missing and deleted ones left
    out; text, attributes (a column added later reads as absent for earlier rows) and the stored vector."""
    docs, _ = small_data
    indexing.delete(index, ["doc-5"], quiet=True)
    x, ids = new_docs(small_data, n=3)
    indexing.add(index, x, ids=ids, texts=["a", "b", "c"], attributes={"lang": ["en", None, "fr"]}, quiet=True)
    handle = retrieval.open_index(index)
    got = handle.get(["doc-2999", "nope", "doc-5", "new-2", "doc-1000", "new-1"], vectors=True)
    assert [r.id for r in got] == ["doc-2999", "new-2", "doc-1000", "new-1"]
    assert [r.text for r in got] == ["text of document 2999", "c", "text of document 1000", "b"]
    assert [r.attributes for r in got] == [{}, {"lang": "fr"}, {}, {}]
    np.testing.assert_allclose(got[0].vector, docs[2999] / np.linalg.norm(docs[2999]), atol=2e-3)  # float16 store
    hit = handle.search(x[2], k=1, **FIXED)[0]
    assert handle.records([hit.row, hit.row])[0].id == "new-2"
    assert handle.get([]) == [] and handle.get(["doc-5"]) == []
    assert [r.id for r in handle.get(where="lang IS NOT NULL")] == ["new-0", "new-2"]  # by condition, row order
    assert [r.id for r in handle.get(["new-2", "new-1", "doc-7"], where="lang = 'fr' OR lang IS NULL")] == \
        ["new-2", "new-1", "doc-7"]
    assert [r.id for r in handle.get(where="lang IS NULL", limit=2)] == ["doc-0", "doc-1"]
    with pytest.raises(InputError, match="get takes ids, a where condition, or both"):
        handle.get()
    with pytest.raises(InputError, match="hold no document"):
        handle.records([10**9])
    with pytest.raises(InputError, match="ids are strings but ints were given"):
        handle.get([1, 2])


def test_vectors_given_as_a_list_of_rows_build_like_an_array(tmp_path, small_data):
    docs, _ = small_data
    rows = docs[:200].tolist()  # what embedding APIs return
    a = indexing.build(tmp_path / "a", rows, quiet=True)
    b = indexing.build(tmp_path / "b", docs[:200], quiet=True)
    assert retrieval.open_index(a).get([7])[0].row == 7
    from conftest import index_files
    assert index_files(a) == index_files(b)
    with pytest.raises(InputError, match="all of one length"):
        indexing.build(tmp_path / "c", [[1.0, 2.0], [3.0]], quiet=True)
    with pytest.raises(InputError, match="built from vectors without a model, so it cannot encode texts"):
        indexing.add(a, ["a text to encode"], ids=[10**6], quiet=True)
