"""Hostile input files and options through the real `matryoshka` command (a subprocess, as a user runs it).

Every case must end with exit 2 and the engine's one-line error naming the file (or the option) and the fix,
never a Python traceback; and nothing already written may be lost: an index that `add`, `delete` or
`build --overwrite` refused to change still opens and searches identically, and a refused build leaves no
index claiming to be complete.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matryoshka.core import layout

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
N, D = 300, 32
FAST = ("--index-dim", 16, "--no-tune", "--no-select", "--quiet")
MAX_ID = 2**63 - 1
MARKER = "unpickled-marker"  # created by the pickled ids file if anything ever unpickles it


def run(*args):
    return subprocess.run([sys.executable, "-m", "matryoshka.retrieval.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=300)


def vectors(n=N, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def embeddings(x):
    return pa.array(list(x), pa.list_(pa.float32()))


class Unpickled:
    """An object whose unpickling leaves a folder behind: proof that the ids file was (never) unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.makedirs, (self.path,)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bad files, each next to the good ones it spoils."""
    tmp = tmp_path_factory.mktemp("bad")
    np.save(tmp / "v.npy", vectors(N, 0))
    np.save(tmp / "more.npy", vectors(20, 1))
    # 1. a text column whose bytes are not UTF-8, declared as string
    raw = pa.array([f"doc {i}".encode() for i in range(N)], pa.binary()).to_pylist()
    raw[123] = b"caf\xff\xfe"
    text = pa.array(raw, pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": np.arange(1000, 1000 + N), "embedding": embeddings(vectors(N, 2)),
                             "text": text}), tmp / "bad-utf8.parquet")
    pq.write_table(pa.table({"text": text}), tmp / "bad-utf8-texts.parquet")
    # 2. a folder of three files whose middle one has a damaged data page (its footer is intact)
    # 3. a folder of integer ids whose middle file has string ids
    for folder in ("corrupt", "mixed-ids"):
        (tmp / folder).mkdir()
        for k in range(3):
            ids = np.arange(2000 + 100 * k, 2100 + 100 * k)
            pq.write_table(pa.table({"id": [f"s{i}" for i in ids] if folder == "mixed-ids" and k == 1 else ids,
                                     "embedding": embeddings(vectors(100, 10 + k))}),
                           tmp / folder / f"part-{k}.parquet")
    damaged = tmp / "corrupt" / "part-1.parquet"
    column = pq.ParquetFile(damaged).metadata.row_group(0).column(1)  # the embedding values
    page = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(damaged.read_bytes())
    data[page:page + 64] = b"\xff" * 64  # the page header: the reader cannot tell where the page ends
    damaged.write_bytes(bytes(data))
    # 4. ids pickled into a .npy (loading it would run code: here, create MARKER)
    np.save(tmp / "pickled.npy", np.array([Unpickled(str(tmp / MARKER))] + list(range(1, N)), dtype=object),
            allow_pickle=True)
    assert b"makedirs" in (tmp / "pickled.npy").read_bytes()  # the payload is really in the file
    # 5. an ids Parquet without an `id` column
    pq.write_table(pa.table({"key": np.arange(N)}), tmp / "no-id-column.parquet")
    return tmp


@pytest.fixture(scope="module")
def index(files):
    """The index every refused change is tried on: integer ids, the largest 10 below 2^63-1."""
    np.save(files / "index-ids.npy", np.arange(MAX_ID - 10 - N + 1, MAX_ID - 10 + 1, dtype=np.int64))
    p = run("build", files / "v.npy", "--ids", files / "index-ids.npy", "--out", files / "idx", *FAST)
    assert p.returncode == 0, p.stderr
    return files / "idx"


def snapshot(root: Path):
    """What an index is: its manifest's bytes and its answers to a few queries."""
    from matryoshka import retrieval
    with retrieval.open_index(root, device="cpu") as index:
        r = index.search_batch(vectors(5, 99), k=10)
        return (root / layout.MANIFEST).read_bytes(), r.rows.tolist(), [list(map(str, i)) for i in r.ids], \
            index.manifest.shards


def check_refused(p, *says):
    assert p.returncode == 2, f"exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    assert "Traceback" not in p.stderr, p.stderr
    for s in says:
        assert s in p.stderr, f"{s!r} not in: {p.stderr}"


# (case, argv from (bad files folder, output folder), what stderr names)
BUILDS = [
    ("utf8-text", lambda f, o: ["build", f / "bad-utf8.parquet", "--out", o],
     ["bad-utf8.parquet", "row 123", "'text'", "UTF-8"]),
    ("corrupt-page", lambda f, o: ["build", f / "corrupt", "--out", o], ["part-1.parquet"]),
    ("mixed-ids", lambda f, o: ["build", f / "mixed-ids", "--out", o], ["part-1.parquet", "'id'", "string"]),
    ("pickled-ids", lambda f, o: ["build", f / "v.npy", "--ids", f / "pickled.npy", "--out", o],
     ["pickled.npy", "pickled"]),
    ("ids-no-id-column", lambda f, o: ["build", f / "v.npy", "--ids", f / "no-id-column.parquet", "--out", o],
     ["no-id-column.parquet", "no `id` column"]),
    ("ids-missing", lambda f, o: ["build", f / "v.npy", "--ids", f / "missing.npy", "--out", o],
     ["missing.npy", "does not exist"]),
    ("threads-negative", lambda f, o: ["build", f / "v.npy", "--out", o, "--threads", -2], ["--threads", "at least 1"]),
    ("threads-zero", lambda f, o: ["build", f / "v.npy", "--out", o, "--threads", 0], ["--threads", "at least 1"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, argv, says", BUILDS, ids=[c[0] for c in BUILDS])
def test_a_refused_build_exits_2_naming_the_file_and_leaves_no_index(files, tmp_path, case, argv, says):
    out = tmp_path / "out"
    check_refused(run(*argv(files, out), *FAST), *says)
    assert not (out / layout.MANIFEST).exists()  # nothing claims to be a complete index
    assert not (files / MARKER).exists()  # the pickled ids were never loaded


class StubModel:
    """Stands in for a sentence-transformers model: the texts are refused before any is encoded, and loading a
    real model (10 s of imports in a subprocess) would be most of this file's time."""

    def get_sentence_embedding_dimension(self):
        return D

    def encode(self, texts, **kwargs):
        raise AssertionError("texts that are not UTF-8 were passed on to the model")


def test_a_text_only_parquet_with_bad_utf8_is_refused_naming_the_row(files, tmp_path, monkeypatch, capsys):
    from matryoshka.core import encoder
    from matryoshka.retrieval.cli import main
    monkeypatch.setattr(encoder, "load_model", lambda name, device="cpu": StubModel())
    code = main(["build", str(files / "bad-utf8-texts.parquet"), "--out", str(tmp_path / "out"), "--model",
                 "stub", *map(str, FAST)])  # in this process: an exception escaping main fails the test
    err = capsys.readouterr().err
    assert code == 2 and "bad-utf8-texts.parquet, row 123" in err and "UTF-8" in err, err
    assert not (tmp_path / "out" / layout.MANIFEST).exists()


@pytest.mark.slow
def test_a_refused_overwrite_keeps_the_old_index(files, index):
    before = snapshot(index)
    check_refused(run("build", files / "corrupt", "--out", index, "--overwrite", *FAST), "part-1.parquet")
    assert snapshot(index) == before


# (case, argv from (bad files folder, index folder), what stderr names). An add reads its input and --ids with
# the build's readers (indexing.inputs.open_source), so the cases of build that differ only in the file are not
# repeated here: each add pays for importing torch (set_threads) before it reads anything.
CHANGES = [
    # the index keeps no texts: the file's `text` column is refused before any of it is read
    ("add-utf8-text", lambda f, i: ["add", i, f / "bad-utf8.parquet", "--quiet"],
     ["built without texts", "`text` column"]),
    ("add-corrupt-page", lambda f, i: ["add", i, f / "corrupt", "--quiet"], ["part-1.parquet"]),
    ("add-ids-no-id-column", lambda f, i: ["add", i, f / "more.npy", "--ids", f / "no-id-column.parquet", "--quiet"],
     ["no-id-column.parquet", "no `id` column"]),
    ("add-ids-missing", lambda f, i: ["add", i, f / "more.npy", "--ids", f / "missing.parquet", "--quiet"],
     ["missing.parquet", "does not exist"]),
    ("add-threads-negative", lambda f, i: ["add", i, f / "more.npy", "--threads", -2, "--quiet"],
     ["--threads", "at least 1"]),
    ("delete-pickled-ids", lambda f, i: ["delete", i, "--ids", f / "pickled.npy", "--quiet"],
     ["pickled.npy", "pickled"]),
    ("delete-ids-no-id-column", lambda f, i: ["delete", i, "--ids", f / "no-id-column.parquet", "--quiet"],
     ["no-id-column.parquet", "no `id` column"]),
    ("delete-ids-missing", lambda f, i: ["delete", i, "--ids", f / "missing.npy", "--quiet"],
     ["missing.npy", "does not exist"]),
    ("search-threads-zero", lambda f, i: ["search", i, "--queries", f / "none.parquet", "--threads", 0],
     ["--threads", "at least 1"]),
    ("tune-threads-negative", lambda f, i: ["tune", i, "--threads", -2], ["--threads", "at least 1"]),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, argv, says", CHANGES, ids=[c[0] for c in CHANGES])
def test_a_refused_change_exits_2_and_leaves_the_index_as_it_was(files, index, case, argv, says):
    before = snapshot(index)
    check_refused(run(*argv(files, index)), *says)
    assert snapshot(index) == before
    assert not (files / MARKER).exists()


def test_automatic_ids_that_would_pass_2_63_are_refused_before_anything_is_written(files, index):
    before = snapshot(index)
    shards = sorted(p.name for p in (index / layout.SHARDS).iterdir())
    check_refused(run("add", index, files / "more.npy", "--quiet"), "2^63-1", "give ids explicitly")
    assert snapshot(index) == before and sorted(p.name for p in (index / layout.SHARDS).iterdir()) == shards


@pytest.mark.parametrize("bad", [True, False, 1.5, "2", 0, -1, np.int64(0)])
def test_set_threads_refuses_what_is_not_a_positive_integer_by_name(bad):
    from matryoshka.core.device import set_threads
    from matryoshka.core.errors import InputError
    with pytest.raises(InputError, match="threads"):
        set_threads(bad)


def test_set_threads_refuses_a_bad_environment_value_by_name(monkeypatch):
    from matryoshka.core.device import set_threads
    from matryoshka.core.errors import InputError
    for bad in ("-2", "many"):
        monkeypatch.setenv("MATRYOSHKA_THREADS", bad)
        with pytest.raises(InputError, match="MATRYOSHKA_THREADS"):
            set_threads()
    monkeypatch.setenv("MATRYOSHKA_THREADS", "1")
    assert set_threads() == 1
