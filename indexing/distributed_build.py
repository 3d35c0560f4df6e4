"""A build on a Ray cluster: training once on the driver, one Ray task per shard, the manifest on the driver.

Needs the `distributed` extra (from a clone of the repository: `pip install -e ".[distributed]"`). The input and
the index folder must be on storage that every node sees at the same path. The result is the same index format as
a single-machine build.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import encoder
from matryoshka.core.errors import InputError, MatryoshkaError
from matryoshka.core.progress import bar, say

from .attributes import schema_of
from .build import BuildJob, Finish, build_index, done_shards
from .folder import beside
from .inputs import open_source
from .options import BuildOptions
from .shard_api import build_shard, check_unique_ids, shard_id_keys, shard_rows
from .sources import ParquetSource, _file_fingerprint, as_texts, open_parquet
from .text_source import text_chunks

ENCODE_BLOCK_ROWS = 2048  # rows per Ray Data block: small enough to spread a single file over the actor pool


def connect(address: str | None = "auto"):
    """Import Ray and connect to the cluster at `address` ('auto': the one this node belongs to, or a local one)."""
    try:
        import ray
    except ImportError:
        raise InputError("--ray / ray= needs Ray: pip install \"ray[data]\" (or, from a clone of the repository, "
                         "pip install -e \".[distributed]\")") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(include_dashboard=False)
        else:
            try:
                ray.init(address=address, include_dashboard=False)
            except ConnectionError:
                if address != "auto":
                    raise InputError(f"cannot reach a Ray cluster at {address!r}; start one with `ray start --head` "
                                     "or pass --ray auto") from None
                ray.init(include_dashboard=False)  # no cluster running: start a local one
    return ray


def _unwrap(ray, ref):
    """ray.get, raising an engine error from a task as itself (its message names the fix), not wrapped."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, MatryoshkaError):
            raise e.cause from None
        raise


def _spec_source(spec: dict):
    return open_source(spec["path"], ids=spec.get("ids"))


def _shard_task(root: str, spec: dict, number: int, opts: BuildOptions, device: str) -> tuple[dict, np.ndarray]:
    """Run in a Ray worker: build one shard and return its metadata and sorted id keys."""
    from matryoshka.core.device import set_threads
    set_threads(opts.threads)
    meta = build_shard(root, _spec_source(spec), number, opts, device)
    return meta, shard_id_keys(root, number)


def _keys_task(root: str, number: int) -> np.ndarray:
    return shard_id_keys(root, number)


class _Encoded(ParquetSource):
    """Texts encoded by Ray Data, spooled as Parquet; identified by the original input and the model."""

    def __init__(self, path: Path, original: Path, model: str):
        super().__init__(path)
        self.model_name, self._fp = model, {"kind": "texts", "files": _file_fingerprint(
            Path(f) for f in open_parquet(original).files), "model": model}

    def fingerprint(self) -> dict:
        return self._fp


class _Encoder:
    """A Ray Data actor: loads the model once, encodes batches of texts into an `embedding` column."""

    def __init__(self, model: str, device: str):
        self.model = encoder.load_model(model, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        x = encoder.encode(self.model, as_texts(batch.column("text"), 0))
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        return batch.append_column("embedding", emb)


def _read_row_groups(items: pa.Table, columns: list[str]):
    """Ray Data UDF: the rows of the listed Parquet row groups, in blocks of at most ENCODE_BLOCK_ROWS."""
    for f, g in zip(items.column("file").to_pylist(), items.column("group").to_pylist()):
        table = pq.ParquetFile(f).read_row_group(g, columns=columns)
        for lo in range(0, table.num_rows, ENCODE_BLOCK_ROWS):
            yield table.slice(lo, ENCODE_BLOCK_ROWS)


def encode_texts(ray, path: Path, out: Path, model: str, num_gpus: float, actors: int, quiet: bool) -> Path:
    """Encode a Parquet input with texts and no embeddings through Ray Data map_batches on an actor pool;
    the rows (id, text, embedding) are streamed in input order to `out`/encoded.parquet. Workers read the
    input themselves, so the driver holds one batch at a time, never the corpus."""
    done = out / "encoded.parquet"
    if done.exists():
        return done
    out.mkdir(parents=True, exist_ok=True)
    dataset = open_parquet(path)
    has_ids, count = "id" in dataset.schema.names, dataset.count_rows()
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    # One item per row group, read by the workers (not ray.data.read_parquet: its path handling imports
    # fsspec's HTTP filesystem and fails where fsspec is installed without aiohttp).
    files = [str(Path(f).resolve()) for f in dataset.files]  # workers may run in another directory
    groups = [{"file": f, "group": g} for f in files for g in range(pq.ParquetFile(f).num_row_groups)]
    data = ray.data.from_items(groups, override_num_blocks=len(groups)).map_batches(
        _read_row_groups, fn_kwargs={"columns": ["id", "text"] if has_ids else ["text"]}, batch_size=1,
        batch_format="pyarrow", num_cpus=0)  # I/O only: the encoder pool may hold every CPU
    data = data.map_batches(_Encoder, fn_constructor_args=(model, "gpu" if num_gpus else "cpu"),
                            batch_format="pyarrow", batch_size=256, concurrency=actors, num_gpus=num_gpus or None)
    tmp, writer, row = out / "encoded.parquet.tmp", None, 0
    with bar(count, "encode", quiet) as pbar:
        for rb in data.iter_batches(batch_format="pyarrow", batch_size=4096):
            if not has_ids:  # row numbers, as a single-machine build assigns them
                rb = rb.append_column("id", pa.array(np.arange(row, row + rb.num_rows, dtype=np.int64)))
            rb = rb.select(["id", "text", "embedding"])
            writer = writer or pq.ParquetWriter(tmp, rb.schema)
            writer.write_table(rb)
            row += rb.num_rows
            pbar.update(rb.num_rows)
    if writer is None:
        raise InputError(f"{path} holds no rows; there is nothing to index")
    writer.close()
    os.replace(tmp, done)
    return done


def build_distributed(out: str | os.PathLike, data: str | os.PathLike, *, ids: str | None = None,
                      model: str | None = None, options: BuildOptions | None = None, address: str | None = "auto",
                      num_gpus: float = 0.0, encode_actors: int = 2, finish: Finish | None = None) -> Path:
    """Build an index in `out` from a `.npy` or Parquet path with one Ray task per shard.

    Training runs once here (the driver); each task reads its own rows of the input and writes its shard
    into `out`; ids are checked for duplicates across shards before the manifest is written. A Parquet input
    with texts and no embeddings is first encoded with `model` by Ray Data (an actor pool, `num_gpus` per
    actor). Resumes like a single-machine build: finished shards are kept.
    """
    opts = options or BuildOptions()
    path = Path(data)
    if not isinstance(data, (str, os.PathLike)) or not path.exists():
        raise InputError(f"a distributed build reads a .npy or Parquet path that every node sees; got {data!r}")
    spec = {"path": str(path.resolve()), "ids": str(Path(ids).resolve()) if ids else None}
    # The local readers' checks, on the driver before any work on the cluster: every file's footer, columns,
    # types and embedding length (the rows' values are checked by the same pipeline in the shard tasks)
    dataset = open_parquet(path) if path.suffix != ".npy" else None
    staging = beside(Path(out).resolve(), "encoded")
    text_only = dataset is not None and "embedding" not in dataset.schema.names and "text" in dataset.schema.names
    if text_only:
        if not model:
            raise InputError(f"{path} has texts but no `embedding` column; pass --model / model= to encode them")
        extra = schema_of(dataset.schema, skip_unsupported=True)
        if extra is not None:
            raise InputError(f"{path} has attribute columns {extra.names}: a Ray build encodes a text-only Parquet "
                             "without them; add an `embedding` column, or build without ray=")
        if not (staging / "encoded.parquet").exists():  # texts and ids as a local build reads them: UTF-8, strings
            for _ in text_chunks(dataset, columns=("text", "id") if "id" in dataset.schema.names else ("text",)):
                pass
    else:
        source = open_source(path, ids=ids)
    ray = connect(address)
    if text_only:
        encoded = encode_texts(ray, path, staging, model, num_gpus, encode_actors, opts.quiet)
        spec = {"path": str(encoded), "ids": None}
        source = _Encoded(encoded, path, model)
    task = ray.remote(_shard_task).options(num_cpus=1, num_gpus=num_gpus or 0, max_retries=2)

    def add(job: BuildJob) -> list[dict]:
        root, src, o, state = job.root, job.source, job.opts, job.state
        done = {m["number"]: m for m in done_shards(root)}
        plan = shard_rows(src, o.shard_size)
        todo = [i for i in range(len(plan)) if i not in done]
        if done:
            say(f"resuming: {len(done)} shard(s) complete, {len(todo)} to build", o.quiet)
        dev = "gpu" if num_gpus else "cpu"
        refs = {i: task.remote(str(root), spec, i, o, dev) for i in todo}
        refs.update({i: ray.remote(_keys_task).remote(str(root), i) for i in done})
        metas, keys, seconds = dict(done), {}, dict(state.add_seconds)
        with bar(src.count, "add", o.quiet) as pbar:
            pending = {r: i for i, r in refs.items()}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                got = _unwrap(ray, ready[0])
                if i in done:
                    keys[i] = got
                else:
                    meta, keys[i] = got
                    for k, v in meta.pop("seconds").items():
                        seconds[k] = seconds.get(k, 0.0) + v
                    metas[i] = meta
                pbar.update(metas[i]["count"])
        shards = [metas[i] for i in range(len(plan))]
        check_unique_ids(root, shards, [keys[i] for i in range(len(plan))])
        state.add_seconds, state.engine = seconds, "ray"
        return shards

    root = build_index(out, source, opts, model_name=model, add=add, finish=finish)
    if text_only:
        shutil.rmtree(staging, ignore_errors=True)
    return root

