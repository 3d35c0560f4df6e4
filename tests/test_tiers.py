"""Stores placed under a memory budget, read from SSD with many reads in flight: the same answers as the memory
maps, read from files evicted from the page cache, and every store's cost shown in `info()`."""
import gc
import json

import faiss
import numpy as np
import pytest

from matryoshka.core.errors import InputError
from matryoshka.storage import row_reader, tiers
from matryoshka.storage.manifest import Manifest
from matryoshka.storage.row_reader import FileRows, evict
from matryoshka.retrieval import open_index

from conftest import FIXED

METHODS = [dict(method="pread"), dict(method="pread", direct=True), dict(method="willneed"), dict(method="mmap")]
if row_reader.uring_available():
    METHODS.append(dict(method="uring", depth=8))


def _evict_all(root) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            evict(p)


@pytest.mark.parametrize("width,dtype", [(96, np.float16), (32, np.int8), (1000, np.float32), (7, np.int8)])
@pytest.mark.parametrize("opts", METHODS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_file_rows_read_what_numpy_reads(tmp_path, width, dtype, opts):
    """Rows straddling pages, neighbours sharing one, the first and the last row of the file."""
    a = (np.random.default_rng(width).standard_normal((3001, width)) * 50).astype(dtype)
    np.save(tmp_path / "m.npy", a)
    offset = np.load(tmp_path / "m.npy", mmap_mode="r").offset
    evict(tmp_path / "m.npy")
    reader = FileRows(tmp_path / "m.npy", offset, len(a), width, dtype, **opts)
    rows = np.unique(np.r_[0, 1, 2, 500, 501, 1777, np.random.default_rng(0).integers(0, len(a), 300), len(a) - 1])
    try:
        assert np.array_equal(reader.read(rows), a[rows])
        assert reader.read(rows[:0]).shape == (0, width)
        assert reader.stats.rows == len(rows)
        assert 0 < reader.stats.reads <= reader.stats.pages
    finally:
        reader.close()


def test_neighbouring_rows_share_one_read():
    first, pages, pos = row_reader.extents(np.array([0, 1, 2, 3]), 128, 1024)
    assert first.tolist() == [0] and pages.tolist() == [2] and pos.tolist() == [128, 1152, 2176, 3200]
    first, pages, _ = row_reader.extents(np.array([0, 100]), 0, 256)  # rows 25 pages apart: two reads
    assert first.tolist() == [0, 6] and pages.tolist() == [1, 1]


def test_tiers_fill_the_budget_in_cascade_order():
    sizes = {"codes": 10, "int8": 30, "full": 100, "texts": 5}
    assert tiers.choose(sizes, None) == {"codes": "ram", "int8": "page cache", "full": "page cache",
                                         "texts": "page cache"}
    assert tiers.choose(sizes, 10) == {"codes": "ram", "int8": "ssd", "full": "ssd", "texts": "page cache"}
    assert tiers.choose(sizes, 45) == {"codes": "ram", "int8": "ram", "full": "ssd", "texts": "ram"}
    assert tiers.choose(sizes, 145) == {"codes": "ram", "int8": "ram", "full": "ram", "texts": "ram"}
    with pytest.raises(InputError, match="below the first-pass codes"):
        tiers.choose(sizes, 9)


@pytest.mark.parametrize("text,expected", [("512", 512), ("2K", 2048), ("1.5G", 3 << 29), ("24 GiB", 24 << 30),
                                           (4096, 4096), ("3mb", 3 << 20)])
def test_budget_sizes(text, expected):
    assert tiers.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1G", 0, True, "1.2.3G"])
def test_bad_budgets_are_refused(bad):
    with pytest.raises(InputError, match="budget"):
        tiers.parse_bytes(bad)


@pytest.mark.parametrize("bad,match", [(dict(method="fast"), "unknown"), (dict(depth=0), "depth"),
                                       (dict(direct=True, method="mmap"), "O_DIRECT"), (dict(colour=1), "no option"),
                                       ("pread", "takes a dict")])
def test_bad_ssd_reads_are_refused(small_index, bad, match):
    with pytest.raises(InputError, match=match):
        open_index(small_index, memory_budget="1G", ssd_reads=bad)


def _budget(root, keep: tuple) -> int:
    with open_index(root) as ix:
        stores = ix.info()["stores"]
    return sum(stores[s]["bytes"] for s in ("codes", *keep))


@pytest.mark.parametrize("keep", [(), ("int8",), ("int8", "full", "texts")], ids=["codes", "int8", "all"])
@pytest.mark.parametrize("opts", METHODS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_cold_stores_answer_as_warm_ones(small_index, small_data, keep, opts):
    _, queries = small_data
    with open_index(small_index) as warm:
        want = warm.search_batch(queries, 10, **FIXED)
        deep_want = warm.search_batch(queries[:5], 10, nprobe=64, k1=1000, k2=400)
    _evict_all(small_index)
    with open_index(small_index, memory_budget=_budget(small_index, keep), ssd_reads=opts) as cold:
        got = cold.search_batch(queries, 10, **FIXED)
        deep_got = cold.search_batch(queries[:5], 10, nprobe=64, k1=1000, k2=400)
        info = cold.info()
        plan = cold.explain(queries, 10, **FIXED)
    on_ssd = len(keep) < 3  # chunks of a quarter batch, two at once: the same answers
    assert (plan.in_flight, plan.chunk) == ((2, 16) if on_ssd else (1, 1024)), plan.explain()
    assert np.array_equal(got.rows, want.rows) and np.array_equal(got.scores, want.scores)
    assert got.ids == want.ids and got.texts == want.texts
    assert np.array_equal(deep_got.rows, deep_want.rows) and np.array_equal(deep_got.scores, deep_want.scores)
    placed = {s: v["tier"] for s, v in info["stores"].items()}
    for store in ("int8", "full"):
        assert placed[store] == ("ram" if store in keep else "ssd")
        if store not in keep:
            reads = info["stores"][store]["reads"]
            assert reads["rows"] > 0 and 0 < reads["reads"] <= reads["pages"]
        else:
            assert "reads" not in info["stores"][store]
    assert info["resident_bytes"] == sum(info["stores"][s]["bytes"] for s in ("codes", *keep))
    assert info["memory_budget"] >= info["resident_bytes"]


def test_info_counts_every_store(small_index):
    with open_index(small_index) as ix:
        info = ix.info()
    stores = info["stores"]
    assert set(stores) == {"codes", "int8", "full", "texts"}
    assert stores["int8"]["bytes"] >= info["count"] * info["index_dim"]
    assert stores["full"]["bytes"] >= info["count"] * info["full_dim"] * 2
    assert stores["texts"]["bytes"] > 0
    assert {v["tier"] for s, v in stores.items() if s != "codes"} == {"page cache"}
    assert info["resident_bytes"] == stores["codes"]["bytes"] and info["memory_budget"] is None


def test_a_store_read_into_ram_leaves_the_page_cache(small_index):
    gc.collect()  # indexes opened by earlier tests map the same files
    with open_index(small_index, memory_budget="1G") as ix:
        stores = ix.info()["stores"]
    assert all(v["tier"] == "ram" for v in stores.values())
    assert stores["full"]["page_cached"] == 0.0  # copied into memory, not also kept in the cache


def test_plan_size_places_the_stores_of_a_billion_vectors_under_a_budget(capsys):
    from matryoshka.retrieval import cli
    args = ["plan-size", "--n", str(10**9), "--full-dim", "1024", "--json"]
    assert cli.main([*args, "--memory-budget", "400G"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["tiers"] == {"codes": "ram", "int8": "ram", "full": "ssd", "texts": "ram"}  # 256 GB int8 fits
    assert cli.main([*args, "--memory-budget", "64G"]) == 0
    assert json.loads(capsys.readouterr().out)["tiers"]["int8"] == "ssd"
    assert cli.main([*args, "--memory-budget", "8G"]) == 2
    assert "below the first-pass codes" in capsys.readouterr().err


def test_a_failed_read_raises_its_own_error_and_bad_rows_are_refused(tmp_path):
    a = np.arange(400 * 300, dtype=np.int32).reshape(400, 300)
    np.save(tmp_path / "m.npy", a)
    offset = np.load(tmp_path / "m.npy", mmap_mode="r").offset
    reader = FileRows(tmp_path / "m.npy", offset, len(a), 300, np.int32, method="pread", depth=4)
    with pytest.raises(ValueError, match="sorted"):
        reader.read(np.array([5, 2]))
    with pytest.raises(ValueError, match="within"):
        reader.read(np.array([0, 400]))
    import os
    os.close(reader.fd)  # every read now fails (EBADF): the error is the read's, not a buffer still in use
    with pytest.raises(OSError) as e:
        reader.read(np.arange(0, 400, 3))
    assert not isinstance(e.value, BufferError)
    reader.fd = -1


def test_a_point_tuned_with_stores_on_ssd_prices_reads_and_is_kept_for_that_placement(tmp_path, small_data):
    from matryoshka import indexing
    from matryoshka.retrieval import tuning
    docs, queries = small_data
    root = indexing.build(tmp_path / "idx", docs, index_dim=32, pq_bytes=8, shard_size=1000, quiet=True,
                          select=False)
    budget = _budget(root, ())
    with open_index(root) as warm:
        default = warm.params
        p = warm.params.updated(k=10, nprobe=8, k1=200, k2=50)
        warm_ms = tuning.Pricer(warm.tunable()).ms(queries, p)
    with open_index(root, memory_budget=budget) as cold:
        assert tuning.Pricer(cold.tunable()).ms(queries, p) > warm_ms  # each int8 and full row is a device read
        point = cold.tune(0.9, queries, n_queries=50)
        assert (cold.params.nprobe, cold.params.k1, cold.params.k2) == (point.nprobe, point.k1, point.k2)
    with open_index(root, memory_budget=budget) as again:
        assert (again.params.k1, again.params.k2) == (point.k1, point.k2)
        info = again.info()
        assert set(info["operating_points"]) == {"int8=ssd,full=ssd"}
    with open_index(root) as warm:
        assert warm.params == default  # the default point is the page-cached one, untouched
    # a build given the budget measures that placement's point itself (and no page-cached default)
    again = indexing.build(tmp_path / "budgeted", docs, index_dim=32, pq_bytes=8, shard_size=1000, quiet=True,
                           select=False, memory_budget=budget)
    with open_index(again, memory_budget=budget) as built:
        assert set(built.manifest.operating_points) == {"int8=ssd,full=ssd"}
        assert built.manifest.operating_point is None
        assert built.params.k1 == built.manifest.operating_points["int8=ssd,full=ssd"]["k1"]


def test_stores_in_ivf_list_order_answer_the_same_with_fewer_device_reads(tmp_path):
    """row_order="lists": the int8 and full stores hold each IVF list's rows together. Searches (warm, from SSD)
    and changes (delete, compact, add) answer exactly as with row order; a single query from SSD reads fewer
    pages, since the candidates of one probed list share them."""
    from matryoshka import indexing
    from matryoshka.benchmarks.synthetic import Synthetic
    syn = Synthetic(dim=96, clusters=64, seed=1)
    docs, queries = syn.documents(12000), syn.queries(20)
    opts = dict(index_dim=32, pq_bytes=8, shard_size=5000, quiet=True, tune=False, select=False, nlist=128)
    roots = {order: indexing.build(tmp_path / order, docs, ids=[f"d{i}" for i in range(12000)],
                                   texts=[f"t{i}" for i in range(12000)], row_order=order, **opts)
             for order in ("input", "lists")}
    p = dict(k=10, nprobe=4, k1=200, k2=50)
    estimate = {}  # before opening, a budget's codes count the slots a list-ordered shard holds in RAM
    for order, root in roots.items():
        manifest = Manifest.from_dict(json.loads((root / "manifest.json").read_text()))
        estimate[order] = tiers.store_sizes(manifest, faiss.read_index(str(root / "trained.faiss")))["codes"]
    slot_files = sum((f.stat().st_size for f in roots["lists"].rglob("slots.u32.npy")))
    assert estimate["lists"] - estimate["input"] == slot_files > 4 * 12000
    from matryoshka.benchmarks.beyond_ram import truth_step  # positions in list-ordered stores map back to rows
    assert np.array_equal(truth_step(roots["lists"], queries), truth_step(roots["input"], queries))

    def same(a, b):
        assert a.ids == b.ids and np.array_equal(a.scores, b.scores)
    with open_index(roots["input"]) as rows, open_index(roots["lists"]) as lists:
        same(rows.search_batch(queries, **p), lists.search_batch(queries, **p))
        assert lists.info()["stores"]["codes"]["bytes"] > rows.info()["stores"]["codes"]["bytes"]  # + 4 B per row
    budget = _budget(roots["lists"], ())
    reads = {}
    for order, root in roots.items():
        with open_index(root, memory_budget=budget) as ix:
            before = ix.info()["stores"]["int8"]["reads"]["pages"]
            for q in queries:
                got = ix.search_batch(q[None, :], **p)
            reads[order] = ix.info()["stores"]["int8"]["reads"]["pages"] - before
            with open_index(roots["input"]) as warm:
                same(got, warm.search_batch(queries[-1:], **p))
    assert reads["lists"] < 0.5 * reads["input"], reads  # pages read from SSD
    for root in roots.values():  # changes keep the order and the answers
        indexing.delete(root, [f"d{i}" for i in range(0, 6000, 3)], quiet=True)
        indexing.compact(root, min_dead=0.1, quiet=True)
        indexing.add(root, docs[:5] + 0.01, ids=[f"n{i}" for i in range(5)], texts=["x"] * 5, quiet=True)
    with open_index(roots["input"]) as rows, open_index(roots["lists"], verify=True) as lists:
        same(rows.search_batch(queries, **p), lists.search_batch(queries, **p))
        assert all(s.slots is not None for s in lists.backend.shards)
