"""Crash safety: builds SIGKILLed at named points and at random moments resume to the identical index."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import index_files

from matryoshka import retrieval
from matryoshka.core import layout
from matryoshka.core.errors import BuildRefused, IndexFormatError

WORKER = Path(__file__).with_name("build_worker.py")


def start(vectors: Path, out: Path, crash_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(layout.CRASH_ENV, None)
    if crash_at:
        env[layout.CRASH_ENV] = crash_at
    return subprocess.Popen([sys.executable, str(WORKER), str(vectors), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen) -> int:
    out, err = p.communicate(timeout=300)
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"build failed ({p.returncode}):\n{err}")
    return p.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory, small_data):
    docs, queries = small_data
    tmp = tmp_path_factory.mktemp("resume")
    np.save(tmp / "v.npy", docs)
    assert finish(start(tmp / "v.npy", tmp / "ref")) == 0
    return tmp, retrieval.open_index(tmp / "ref").search_batch(queries, k=10), queries


def same_results(out: Path, reference) -> None:
    """The index at `out` is the uninterrupted build's, byte for byte, and so are its default searches."""
    tmp, ref, queries = reference
    with retrieval.open_index(out) as index:
        r = index.search_batch(queries, k=10)
    np.testing.assert_array_equal(r.rows, ref.rows)
    np.testing.assert_array_equal(r.scores, ref.scores)
    assert index_files(out) == index_files(tmp / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("point", ["training", "mid_shard:1", "between_shards:0", "between_shards:1", "manifest"])
def test_killed_build_resumes_to_the_identical_index(reference, point):
    tmp = reference[0]
    out = tmp / point.replace(":", "-")
    assert finish(start(tmp / "v.npy", out, crash_at=point)) == -signal.SIGKILL
    with pytest.raises(IndexFormatError, match="re-run the same build command"):
        retrieval.open_index(out)
    if point.startswith("mid_shard"):
        assert (out / layout.SHARDS / ".tmp-00001").exists()  # the half-written shard is not in place
        assert not (out / layout.SHARDS / "00001").exists()
    assert finish(start(tmp / "v.npy", out)) == 0
    same_results(out, reference)
    assert not (out / layout.BUILD_DIR).exists()
    assert not list((out / layout.SHARDS).glob(".tmp-*"))


def test_two_builds_into_one_folder_are_refused(reference, small_data, tmp_path):
    from matryoshka import indexing
    out = tmp_path / "locked"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl,sys,time; f=open(sys.argv[1],'a+'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write('4242'); f.flush(); print('held', flush=True); "
                               "time.sleep(60)", str(out / layout.LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BuildRefused, match="another build is writing"):
            indexing.build(out, small_data[0], quiet=True)
    finally:
        holder.kill()
        holder.wait()
    assert [p.name for p in out.iterdir()] == [layout.LOCK]


def test_foreign_folder_and_other_settings_are_refused(reference, small_data, tmp_path):
    from matryoshka import indexing
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(BuildRefused, match="holds no matryoshka index"):
        indexing.build(foreign, small_data[0], quiet=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    ref = reference[0] / "ref"
    before = (ref / layout.MANIFEST).read_bytes()
    with pytest.raises(BuildRefused, match="other settings"):
        indexing.build(ref, str(reference[0] / "v.npy"), index_dim=16, quiet=True)
    assert (ref / layout.MANIFEST).read_bytes() == before
    same_results(ref, reference)


def test_free_disk_is_checked_before_anything_is_written(tmp_path, small_data):
    from matryoshka import indexing
    from matryoshka.benchmarks.synthetic import Synthetic
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        docs = Synthetic(dim=256, clusters=16).documents(8000)  # ~4 MiB of float16 full vectors alone
        with pytest.raises(BuildRefused, match="free"):
            indexing.build(mnt / "idx", docs, index_dim=32, quiet=True)
        assert not (mnt / "idx" / layout.SHARDS).exists()
    finally:
        subprocess.run(["umount", str(mnt)])


def test_a_disk_that_fills_up_mid_build_ends_in_a_clear_error_and_a_resumable_build(tmp_path):
    from matryoshka import indexing
    from matryoshka.benchmarks.synthetic import Synthetic
    mnt = tmp_path / "filling-disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        docs = Synthetic(dim=32, clusters=16).documents(2000)
        texts = [f"document {i} " + "x" * 3000 for i in range(2000)]  # ~6 MB of text: not in the up-front estimate
        opts = dict(index_dim=16, pq_bytes=4, fast_scan=True, shard_size=500, quiet=True)
        with pytest.raises(BuildRefused, match="filled up.*re-run the same command"):
            indexing.build(mnt / "idx", docs, texts=texts, **opts)
        with pytest.raises(IndexFormatError, match="not finished"):
            retrieval.open_index(mnt / "idx")
        assert not list((mnt / "idx" / layout.SHARDS).glob(".tmp-*"))  # the broken shard was removed
        subprocess.run(["mount", "-o", "remount,size=40M", str(mnt)], check=True)
        indexing.build(mnt / "idx", docs, texts=texts, **opts)
        r = retrieval.open_index(mnt / "idx").search_batch(docs[:20], k=1, rerank=False)
        assert list(r.rows[:, 0]) == list(range(20)) and r.texts[3][0].startswith("document 3 ")
    finally:
        subprocess.run(["umount", str(mnt)])


@pytest.mark.slow
def test_text_encoding_killed_midway_resumes_from_its_checkpoint(tmp_path):
    """Parquet texts are encoded in checkpointed chunks (one per row group here): a build killed after the
    third chunk keeps what it encoded and resumes to the index an uninterrupted build writes, byte for byte."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from matryoshka.indexing.stdlib_docs import stdlib_passages
    from matryoshka.core.encoder import DEFAULT_MODEL
    ids, texts = stdlib_passages(limit=150)
    pq.write_table(pa.table({"id": ids, "text": texts}), tmp_path / "t.parquet", row_group_size=25)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop(layout.CRASH_ENV, None)

    def build(out, crash_at=None):
        cmd = [sys.executable, "-m", "matryoshka.retrieval.cli", "build", str(tmp_path / "t.parquet"),
               "--out", str(out), "--model", DEFAULT_MODEL, "--quiet", "--no-select", "--no-tune"]
        return subprocess.run(cmd, env={**env, **({layout.CRASH_ENV: crash_at} if crash_at else {})},
                              capture_output=True, text=True, timeout=300)

    killed = build(tmp_path / "idx", "encode:2")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    spool = next((tmp_path / "idx" / layout.BUILD_DIR).rglob("encoded.rows"))
    assert spool.read_text() == "75"  # three chunks of 25 survived the kill
    assert build(tmp_path / "idx").returncode == 0
    assert build(tmp_path / "ref").returncode == 0
    got, want = (json.loads((p / layout.MANIFEST).read_text())["shards"] for p in (tmp_path / "idx", tmp_path / "ref"))
    assert [s["files"] for s in got] == [s["files"] for s in want]
