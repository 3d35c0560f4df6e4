"""Re-scoring on torch tensors (`rerank.device_rescore`) against today's numpy path (`rerank.rescore`), the int8
store held on a device (`storage.device_store`) and its GPU tier (`storage.tiers`). CUDA tests skip without one."""
import numpy as np
import pytest
import torch

from matryoshka.core.codec import Int8Codec
from matryoshka.core.errors import InputError
from matryoshka.rerank import device_rescore as dev
from matryoshka.rerank import rescore as ref
from matryoshka.storage import tiers
from matryoshka.storage.device_store import DeviceRows
from matryoshka.storage.row_store import RowStore

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
SHORT, FULL, N = 32, 96, 3000
SHARDS = [(0, 1200), (1200, 1000), (5000, 800)]  # (first global row, rows): the last one after a gap


def _store(rows: np.ndarray, slots: bool = False) -> RowStore:
    """`rows` (global row order, the gap left out) as a RowStore of SHARDS; with `slots`, each shard's rows are
    stored in another order (row i at slot order[i]), as a list-ordered shard stores them."""
    arrays, sl, at = [], [], 0
    for _, count in SHARDS:
        part = rows[at:at + count]
        at += count
        order = np.random.default_rng(count).permutation(count) if slots else None
        stored = part.copy()
        if order is not None:
            stored[order] = part
        arrays.append(stored)
        sl.append(order)
    return RowStore(np.array([s for s, _ in SHARDS]), arrays, rows.shape[1], rows.dtype, slots=sl if slots else None)


def _global(local: np.ndarray) -> np.ndarray:
    """Global rows of positions 0..N-1 (-1 stays -1)."""
    starts = np.array([s for s, _ in SHARDS])
    first = np.cumsum([0] + [c for _, c in SHARDS])[:-1]
    s = np.searchsorted(first, local, side="right") - 1
    return np.where(local >= 0, local - first[s] + starts[s], -1)


def _data(exact: bool):
    """Stores, codec, queries and candidates. `exact`: small integers and a power-of-two scale, so that every
    score is exact in float32 on both paths and equal scores are true ties; else realistic floats."""
    rng = np.random.default_rng(7)
    if exact:
        full = rng.integers(-4, 5, (N, FULL)).astype(np.float16)
        codec = Int8Codec(np.zeros(SHORT, np.float32), np.full(SHORT, 0.5, np.float32))
        codes = rng.integers(-6, 7, (N, SHORT)).astype(np.int8)
        x = rng.integers(-3, 4, (20, FULL)).astype(np.float32)
    else:
        full = rng.standard_normal((N, FULL)).astype(np.float16)
        codec = Int8Codec.fit(full[:, :SHORT].astype(np.float32))
        codes = codec.encode(full[:, :SHORT].astype(np.float32))
        x = rng.standard_normal((20, FULL)).astype(np.float32)
    cand = rng.integers(0, N, (20, 120))
    cand[:, -5:] = cand[:, :5]  # the same row twice in a list: a tie on every metric
    cand[rng.random(cand.shape) < 0.1] = -1
    cand[3] = -1  # a query with no candidate at all
    stores = ref.Stores(_store(codes), _store(full), codec, "ip")
    return stores, x, x[:, :SHORT].copy(), _global(cand)


def _cascade(stores, x, short, cand, metric, dims, keep, int8_scores, full_scores):
    """The int8 stage, its cut to 30, the full stage and the cut to 10, carrying every stage's scores."""
    stages = {"int8": int8_scores(short, cand, stores.short, stores.int8, metric)}
    cand, stages = keep(cand, stages, "int8", 30)
    stages["full"] = full_scores(x, cand, stores.full, metric, dims)
    return keep(cand, stages, "full", 10)


def _on(device, int8_rows=None):
    def int8(q, c, store, codec, metric):
        return dev.int8_scores(q, c, int8_rows or store, codec, metric, device)
    return (lambda c, s, key, depth: dev.keep(c, s, key, depth, device), int8,
            lambda q, c, store, metric, dims: dev.full_scores(q, c, store, metric, dims, device))


def _assert_same(device, exact, metric, dims, holder=False):
    stores, x, short, cand = _data(exact)
    want_c, want_s = _cascade(stores, x, short, cand, metric, dims, ref.keep, ref.int8_scores, ref.full_scores)
    rows = DeviceRows(stores.short, device) if holder else None
    got_c, got_s = _cascade(stores, x, short, cand, metric, dims, *_on(device, rows))
    assert got_c.device.type == torch.device(device).type
    assert np.array_equal(dev.host(got_c), want_c)
    assert (want_c == -1).any() and (want_c[3] == -1).all()
    for key in ("int8", "full"):
        if exact and not (metric == "cosine" and dims):
            assert np.array_equal(dev.host(got_s[key]), want_s[key]), key
        else:
            np.testing.assert_allclose(dev.host(got_s[key]), want_s[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exact", [True, False], ids=["integers", "floats"])
@pytest.mark.parametrize("dims", [None, 48])
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_torch_on_the_cpu_gives_the_numpy_cascade(metric, dims, exact):
    _assert_same("cpu", exact, metric, dims)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_int8_rows_held_in_a_tensor_give_the_same_cascade(metric):
    _assert_same("cpu", True, metric, None, holder=True)


def test_keep_breaks_ties_by_position_and_drops_what_scored_nothing():
    cand = np.array([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]])
    s = np.array([[1, 3, 3, -np.inf, 3, 0], [-np.inf] * 6], np.float32)
    stages = {"int8": s, "first_pass": np.arange(12, dtype=np.float32).reshape(2, 6)}
    want_c, want_s = ref.keep(cand.copy(), stages, "int8", 5)
    got_c, got_s = dev.keep(cand, stages, "int8", 5)
    assert dev.host(got_c).tolist() == want_c.tolist() == [[11, 12, 14, 10, 15], [-1] * 5]
    assert all(np.array_equal(dev.host(got_s[k]), want_s[k]) for k in stages)


def test_the_scores_of_an_empty_batch_and_of_no_candidates():
    stores, x, short, _ = _data(True)
    assert dev.int8_scores(short[:0], np.zeros((0, 5), np.int64), stores.short, stores.int8, "ip").shape == (0, 5)
    none = dev.full_scores(x[:2], np.full((2, 4), -1), stores.full, "l2")
    assert torch.isneginf(none).all() and none.shape == (2, 4)


@pytest.mark.parametrize("width", [SHORT, 6, 7])  # gathered as int64, int16 and uint8 words
@pytest.mark.parametrize("slots", [False, True])
def test_a_holder_gives_the_rows_the_store_gives(slots, width):
    rows = np.random.default_rng(1).integers(-127, 128, (N, width)).astype(np.int8)
    store = _store(rows, slots)
    held = DeviceRows(store, "cpu")
    cand = _global(np.random.default_rng(2).integers(-1, N, (7, 40)))
    got = dev.host(held.take(cand))
    want = store.candidates(cand)
    assert np.array_equal(got[cand >= 0], want[cand >= 0]) and got.shape == (7, 40, width)
    assert held.tier == "ram" and held.nbytes == N * width and not held.contiguous


def test_a_holder_of_shards_without_gaps_finds_rows_by_subtraction():
    rows = np.random.default_rng(3).integers(-127, 128, (N, 8)).astype(np.int8)
    store = RowStore(np.array([100, 1300]), [rows[:1200], rows[1200:]], 8, np.int8)
    held = DeviceRows(store, "cpu")
    cand = np.array([[100, 1299, 1300, 100 + N - 1, -1]])
    assert held.contiguous
    assert np.array_equal(dev.host(held.take(cand))[0, :4], rows[[0, 1199, 1200, N - 1]])


def test_a_holder_refuses_a_store_on_ssd():
    store = _store(np.zeros((N, 4), np.int8))
    store.readers = [object()] * len(SHARDS)
    with pytest.raises(ValueError, match="SSD"):
        DeviceRows(store, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: pinned memory works")
def test_pinned_rows_without_cuda_are_refused_naming_plain_ram():
    with pytest.raises(RuntimeError, match="plain RAM"):
        DeviceRows(_store(np.zeros((N, 4), np.int8)), pinned=True)


SIZES = {"codes": 10, "int8": 30, "full": 100, "texts": 5}


def test_the_int8_store_goes_to_the_gpu_when_it_fits_and_frees_the_host_budget():
    assert tiers.choose(SIZES, None, 30, cuda=True) == {"codes": "ram", "int8": "gpu", "full": "page cache",
                                                        "texts": "page cache"}
    # off the host budget: the full vectors fit in RAM where, with the int8 store, they would not
    assert tiers.choose(SIZES, 115, 30, cuda=True) == {"codes": "ram", "int8": "gpu", "full": "ram",
                                                       "texts": "ram"}
    assert tiers.choose(SIZES, 115)["full"] == "ssd"


def test_an_int8_store_too_big_for_the_gpu_is_pinned_where_host_memory_holds_it():
    assert tiers.choose(SIZES, None, 29, cuda=True)["int8"] == "pinned"
    assert tiers.choose(SIZES, 45, 29, cuda=True) == {"codes": "ram", "int8": "pinned", "full": "ssd",
                                                      "texts": "ram"}
    assert tiers.choose(SIZES, 20, 29, cuda=True)["int8"] == "ssd"  # not in the host budget either


def test_without_cuda_a_gpu_budget_falls_back_to_plain_ram():
    assert tiers.choose(SIZES, None, 1 << 30, cuda=False)["int8"] == "ram"
    assert tiers.choose(SIZES, 45, 29, cuda=False)["int8"] == "ram"
    assert tiers.choose(SIZES, 20, 1 << 30, cuda=False)["int8"] == "ssd"
    assert "plain RAM" in tiers.NO_CUDA
    assert tiers.choose(SIZES, 45) == tiers.choose(SIZES, 45, None, cuda=True)  # no GPU budget: no GPU tier
    with pytest.raises(InputError, match="below the first-pass codes"):
        tiers.choose(SIZES, 9, 1 << 30, cuda=True)


@needs_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_the_cascade_on_cuda_gives_the_numpy_cascade(metric):
    _assert_same("cuda", True, metric, None)
    _assert_same("cuda", True, metric, None, holder=True)
    _assert_same("cuda", False, metric, 48)


@needs_cuda
@pytest.mark.gpu
def test_pinned_and_gpu_holders_give_the_rows_on_the_gpu():
    rows = np.random.default_rng(1).integers(-127, 128, (N, SHORT)).astype(np.int8)
    store = _store(rows, True)
    cand = _global(np.random.default_rng(2).integers(0, N, (7, 40)))
    for held in (DeviceRows(store, "cuda"), DeviceRows(store, pinned=True)):
        got = held.take(cand, "cuda")
        assert got.device.type == "cuda" and np.array_equal(dev.host(got), store.candidates(cand))
    assert held.tier == "pinned" and held.rows.is_pinned()
