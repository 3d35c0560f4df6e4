"""The cascade on torch: re-scoring with torch on the CPU gives today's numpy results at a fixed setting, end to
end; a GPU memory budget without CUDA falls back to RAM and says so; info and explain name each stage's device.
GPU runs skip cleanly without one."""
import numpy as np
import pytest

from matryoshka import retrieval
from matryoshka.core.errors import InputError
from matryoshka.storage import tiers
from matryoshka.storage.device_store import cuda_available

from conftest import FIXED


@pytest.mark.parametrize("setting", [FIXED, dict(FIXED, full_dims=32), dict(FIXED, int8=False),
                                     dict(FIXED, full=False)])
def test_torch_on_the_cpu_gives_the_numpy_results(small_index, small_data, setting):
    _, queries = small_data
    with retrieval.open_index(small_index) as numpy_ix, \
            retrieval.open_index(small_index, rescore_device="cpu") as torch_ix:
        a, b = numpy_ix.search_batch(queries, k=10, **setting), torch_ix.search_batch(queries, k=10, **setting)
    assert np.array_equal(a.rows, b.rows)
    for stage in a.stage_scores:
        np.testing.assert_allclose(a.stage_scores[stage], b.stage_scores[stage], rtol=1e-5, atol=1e-5)


def test_filtered_and_exhaustive_searches_agree_on_torch(small_index, small_data):
    _, queries = small_data
    with retrieval.open_index(small_index) as numpy_ix, \
            retrieval.open_index(small_index, rescore_device="cpu") as torch_ix:
        for k1 in (200, 10**6):  # the cascade, then every row scored
            a, b = (ix.search_batch(queries[:20], k=10, nprobe=16, k1=k1, k2=50) for ix in (numpy_ix, torch_ix))
            assert np.array_equal(a.rows, b.rows)


def test_each_stage_says_where_it_runs(small_index):
    with retrieval.open_index(small_index, rescore_device="cpu") as ix:
        stores = ix.info()["stores"]
        assert stores["int8"]["device"] == stores["full"]["device"] == "torch on cpu"
        assert stores["codes"]["device"] == "faiss on the CPU"
        text = ix.explain(1, **FIXED).explain()
        assert "exact int8 scores of the 200 candidates, torch on cpu" in text
    with retrieval.open_index(small_index) as ix:
        assert ix.info()["stores"]["int8"]["device"] == "numpy on the CPU"
        assert "torch" not in ix.explain(1, **FIXED).explain()


@pytest.mark.skipif(cuda_available(), reason="checks the fallback where torch sees no CUDA")
def test_a_gpu_budget_without_cuda_holds_int8_in_ram_and_says_so(small_index, small_data):
    with pytest.warns(UserWarning, match="torch sees no CUDA"):
        ix = retrieval.open_index(small_index, gpu_memory_budget="1G")
    with ix:
        assert ix.tiers["int8"] == tiers.RAM and ix.info()["gpu_bytes"] == 0
        assert ix.search_batch(small_data[1][:5], k=10, **FIXED).rows.shape == (5, 10)


def test_bad_device_options_are_refused_by_name(small_index):
    with pytest.raises(InputError, match="rescore_device"):
        retrieval.open_index(small_index, rescore_device="tpu")
    with pytest.raises(InputError, match="gpu_memory_budget"):
        retrieval.open_index(small_index, gpu_memory_budget="lots")


@pytest.mark.gpu
@pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device torch sees")
def test_the_int8_store_in_gpu_memory_gives_the_cpu_results(small_index, small_data):
    _, queries = small_data
    with retrieval.open_index(small_index) as cpu, \
            retrieval.open_index(small_index, gpu_memory_budget="1G", rescore_device="cuda") as gpu:
        assert gpu.tiers["int8"] == tiers.GPU and gpu.info()["gpu_bytes"] > 0
        a, b = cpu.search_batch(queries, k=10, **FIXED), gpu.search_batch(queries, k=10, **FIXED)
    assert (a.rows == b.rows).mean() > 0.99  # float sums in another order may swap exact ties
