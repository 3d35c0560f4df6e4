"""The build pipeline: sample -> fit shortening + int8 -> train IVF -> stream batches into shards -> manifest.

Memory stays flat in the corpus size: the sample, one batch and one shard's codes are all it holds.
Each shard is renamed into place when complete and the manifest is written last, so a killed build
resumes from its last complete shard and ends with the same index as an uninterrupted one.
"""
from __future__ import annotations

import errno
import io
import os
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from matryoshka.core import encoder, layout

from . import ivf, sizing
from matryoshka.core.device import check_faiss_install, resolve_device, set_threads
from matryoshka.core.errors import BuildRefused, InputError
from .folder import STATE, BuildLock, beside, clear, prepare_beside, prepare_folder, recover_swap, swap_in
from .ids import DuplicateGuard, hash_ids, id_kind
from matryoshka.core.codec import Int8Codec
from matryoshka.core.progress import bar, say
from .shard_writer import ShardWriter
from .sources import Batch, IteratorSource
from .transform import ShortTransform, fit_transform
from matryoshka.core.vectors import as_matrix, check_metric, normalize

ITERATOR_TRAIN_ROWS = 131072  # rows read ahead to train on when the input is a Python iterator


@dataclass
class BuildOptions:
    """Settings of a build. Those in IDENTITY decide the index; the rest only decide how it is made."""

    index_dim: int = 256
    transform: str = "auto"
    metric: str = "cosine"
    pq_bytes: int = 32
    fast_scan: bool = False
    nlist: int | None = None
    shard_size: int = 1_000_000
    train_size: int | None = None
    seed: int = 0
    batch_rows: int = 16384
    device: str = "auto"
    threads: int | None = None
    quiet: bool = False
    overwrite: bool = False


IDENTITY = ("index_dim", "transform", "metric", "pq_bytes", "fast_scan", "nlist", "shard_size", "train_size", "seed")


class _Timer(defaultdict):
    def __init__(self):
        super().__init__(float)

    def lap(self, name: str, t0: float) -> float:
        t = time.perf_counter()
        self[name] += t - t0
        return t


def _identity(opts: BuildOptions, source, model_name: str | None) -> dict:
    return {"options": {k: getattr(opts, k) for k in IDENTITY}, "source": source.fingerprint(),
            "model": model_name}


def _sample_rows(source, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(source, IteratorSource):
        x = source.take_sample(n)
        return np.arange(len(x)), x
    rows = np.sort(np.random.default_rng(seed).choice(source.count, size=n, replace=False))
    return rows, source.sample(rows)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _train(root: Path, source, opts: BuildOptions, device: str, identity: dict, model_fp: dict | None) -> dict:
    """Fit the transform, the int8 codec and the IVF on a sample; save them and the build state."""
    t0 = time.perf_counter()
    dim = min(opts.index_dim, source.dim)
    if source.count is None:  # an iterator: its size is unknown, so plan from the rows the sample holds
        rows, sample = _sample_rows(source, opts.train_size or ITERATOR_TRAIN_ROWS, opts.seed)
        factory, notes = ivf.plan_factory(len(sample), dim, opts.pq_bytes, opts.fast_scan, opts.nlist)
    else:
        factory, notes = ivf.plan_factory(source.count, dim, opts.pq_bytes, opts.fast_scan, opts.nlist)
        nlist, code = int(factory.split(",")[0][3:]), factory.split(",")[1]
        rows, sample = _sample_rows(source, min(source.count, opts.train_size or ivf.train_size(
            source.count, nlist, code)), opts.seed)
        if nlist > 1 and len(sample) < nlist * ivf.MIN_POINTS_PER_LIST or len(sample) < ivf.min_train_points(code):
            factory, more = ivf.plan_factory(len(sample), dim, opts.pq_bytes, opts.fast_scan, opts.nlist)
            notes = [f"a training sample of {len(sample)} vectors is too small for the plan above"] + more
    sample = as_matrix(sample, source.dim, "training sample", rows)
    sample = normalize(sample, opts.metric, "training sample", rows, inplace=sample.flags.writeable)
    say(f"training {factory} on {len(sample):,} vectors ({device})", opts.quiet)
    transform, choice = fit_transform(opts.transform, sample, dim, opts.metric)
    short = transform.apply(sample)
    codec = Int8Codec.fit(short)
    layout.crash_point("training")
    index = ivf.train(factory, short, opts.metric, device)
    buf = io.BytesIO()
    np.savez(buf, **transform.to_arrays(), int8_offset=codec.offset, int8_scale=codec.scale)
    _atomic_bytes(root / layout.TRANSFORM, buf.getvalue())
    _atomic_bytes(root / layout.TRAINED, ivf.serialize(index).tobytes())
    state = {"identity": identity, "factory": factory, "notes": notes, "transform_choice": choice,
             "full_dim": source.dim, "index_dim": dim, "train_rows": len(sample), "model": model_fp,
             "train_seconds": time.perf_counter() - t0}
    layout.write_json_atomic(root / layout.BUILD_DIR / STATE, state)
    return state


def _done_shards(root: Path) -> list[dict]:
    shards_dir = root / layout.SHARDS
    metas = []
    if shards_dir.exists():
        for p in sorted(shards_dir.iterdir()):
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p)  # an interrupted shard: it is rewritten from its first row
            elif (p / layout.SHARD_META).exists():
                metas.append(layout.read_json(p / layout.SHARD_META, "shard metadata"))
    return metas


def _check_disk(root: Path, source, state: dict, opts: BuildOptions) -> None:
    if source.count is None:
        return
    est = sizing.estimate(source.count, state["full_dim"], state["index_dim"], state["factory"], opts.shard_size)
    free = shutil.disk_usage(root).free
    if est["disk_total"] * 1.05 > free:
        raise BuildRefused(f"the index needs about {sizing.human(est['disk_total'])} but only {sizing.human(free)} "
                           f"is free on the disk of {root}; free space or build elsewhere")


def build_index(out: str | os.PathLike, source, options: BuildOptions | None = None,
                model_name: str | None = None, add=None) -> Path:
    """Build (or resume building) an index in folder `out` from a source (see indexing.sources).

    `add(root, source, opts, device, state) -> shard metadata list` writes the shards once training is done;
    the default streams every batch in this process (`_add_all`), a distributed engine passes its own.
    """
    opts = options or BuildOptions()
    check_faiss_install()
    check_metric(opts.metric)
    if opts.shard_size < 1 or opts.batch_rows < 1:
        raise InputError("shard_size and batch_rows must be positive")
    device = resolve_device(opts.device)
    set_threads(opts.threads)
    if source.count == 0:
        raise InputError("the input holds no vectors; there is nothing to index")
    root = Path(out)
    recover_swap(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = BuildLock(root)
    try:
        model_name = model_name or getattr(source, "model_name", None)
        identity = _identity(opts, source, model_name)
        status = prepare_folder(root, identity, opts.overwrite)
        if status == "complete":
            say(f"{root} already holds this index, complete; nothing to do", opts.quiet)
            return root
        if status != "replace":
            _build_into(root, status, source, opts, device, identity, model_name, add or _add_all)
            return root
        # Build beside the old index and swap it in at the end, so searchers never see a half-written one.
        work = beside(root, "new")
        work.mkdir(exist_ok=True)
        if prepare_beside(work, identity) == "fresh":
            clear(work)
        _build_into(work, "resume" if (work / layout.BUILD_DIR).exists() else "fresh", source, opts, device,
                    identity, model_name, add or _add_all)
        swap_in(work, root)
        return root
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BuildRefused(f"the disk of {root} filled up during the build ({e.strerror}); the index is left "
                               "unfinished, never half-written: free space and re-run the same command to resume "
                               "from the last complete shard") from None
        raise
    finally:
        lock.release()


def _build_into(root: Path, status: str, source, opts: BuildOptions, device: str, identity: dict,
                model_name: str | None, add) -> None:
    state_path = root / layout.BUILD_DIR / STATE
    if status == "fresh":  # record what is being built before anything else is written
        (root / layout.BUILD_DIR).mkdir()
        layout.write_json_atomic(state_path, {"identity": identity})
    if hasattr(source, "prepare"):
        source.prepare(root / layout.BUILD_DIR, opts.quiet)
    state = layout.read_json(state_path, "build state")
    if not ("factory" in state and (root / layout.TRAINED).exists()):
        model_fp = None
        if model_name:
            model = getattr(source, "model", None) or encoder.load_model(model_name, "cpu")
            model_fp = encoder.fingerprint(model, model_name)
            if model_fp["dim"] != source.dim:
                raise InputError(f"model {model_name!r} makes {model_fp['dim']}-dim vectors but the input has "
                                 f"{source.dim} dims; name the model that made these embeddings")
        if source.count is not None:
            dim = min(opts.index_dim, source.dim)
            factory, _ = ivf.plan_factory(source.count, dim, opts.pq_bytes, opts.fast_scan, opts.nlist)
            _check_disk(root, source, {"full_dim": source.dim, "index_dim": dim, "factory": factory}, opts)
        state = _train(root, source, opts, device, identity, model_fp)
    shards = add(root, source, opts, device, state)
    _write_manifest(root, opts, state, shards, device)
    shutil.rmtree(root / layout.BUILD_DIR, ignore_errors=True)


class _Pipeline:
    """The per-batch work of every build: validate -> normalize -> transform -> int8, with the trained state."""

    def __init__(self, root: Path, state: dict, opts: BuildOptions, timer: _Timer, id_type=None):
        with np.load(root / layout.TRANSFORM) as a:
            self.transform = ShortTransform.from_arrays(a)
            self.codec = Int8Codec(a["int8_offset"], a["int8_scale"])
        self.trained = np.frombuffer((root / layout.TRAINED).read_bytes(), dtype=np.uint8)
        self.state, self.opts, self.timer, self.id_type = state, opts, timer, id_type

    def prepare(self, batch: Batch, guard: DuplicateGuard):
        """(ids, normalized vectors, short vectors, int8 codes) of a batch, or an InputError naming the row."""
        t = time.perf_counter()
        ids = batch.ids
        if self.id_type is None:
            self.id_type = ids.type
        elif id_kind(ids) != id_kind(pa.array([], self.id_type)):
            raise InputError(f"rows {batch.start}..: ids are {id_kind(ids)}s but earlier rows had "
                             f"{id_kind(pa.array([], self.id_type))}s; use one id type for the whole corpus")
        x = as_matrix(batch.vectors, self.state["full_dim"], "vectors", batch.start, ids)
        x = normalize(x, self.opts.metric, "vectors", batch.start, ids)
        guard.check(ids, batch.start)
        t = self.timer.lap("validate", t)
        short = self.transform.apply(x)
        t = self.timer.lap("transform", t)
        codes = self.codec.encode(short)
        self.timer.lap("int8", t)
        return ids, x, short, codes


def _fill_shards(root: Path, batches, pipe: _Pipeline, guard: DuplicateGuard, number: int, start: int,
                 has_text: bool, device: str, pbar, stop: int | None = None) -> list[dict]:
    """Write the rows of `batches` (the first at row `start`, the first row of shard `number`) into shards
    number, number + 1, ... until the batches end or row `stop`; return the finished shards' metadata."""
    opts, timer, shards, writer = pipe.opts, pipe.timer, [], None
    t = time.perf_counter()
    try:
        for batch in batches:
            t = timer.lap("read", t)
            if stop is not None and batch.start + len(batch.ids) > stop:
                keep = max(stop - batch.start, 0)
                batch = Batch(batch.start, batch.ids[:keep], batch.vectors[:keep],
                              batch.texts[:keep] if batch.texts is not None else None)
            if not len(batch.ids):
                break
            ids, x, short, codes = pipe.prepare(batch, guard)
            lo = 0
            while lo < len(ids):
                if writer is None:
                    writer = ShardWriter(root, number + len(shards), start + lo, pipe.trained,
                                         pipe.state["full_dim"], pipe.state["index_dim"], has_text, device,
                                         opts.shard_size, timer)
                take = min(len(ids) - lo, opts.shard_size - writer.count)
                sl = slice(lo, lo + take)
                writer.add(ids[sl], x[sl], short[sl], codes[sl], batch.texts[sl] if batch.texts else None)
                layout.crash_point("mid_shard", writer.number)
                lo += take
                if writer.count == opts.shard_size:
                    shards.append(_finish_shard(writer, pipe.id_type, guard, opts, timer))
                    writer = None
            start += len(ids)
            pbar.update(len(ids))
            if stop is not None and start >= stop:
                break
            t = time.perf_counter()
        if writer is not None and writer.count:
            shards.append(_finish_shard(writer, pipe.id_type, guard, opts, timer))
            writer = None
    finally:
        if writer is not None:
            writer.abandon()
    return shards


def _add_all(root: Path, source, opts: BuildOptions, device: str, state: dict) -> list[dict]:
    """Stream every batch through the pipeline into shards, in order, after those already complete."""
    shards = _done_shards(root)
    guard = DuplicateGuard(lambda v: any(v in set(pq.read_table(p).column("id").to_pylist())
                                         for p in (root / layout.SHARDS).glob(f"[0-9]*/{layout.IDS_FILE}")))
    id_type = None
    for meta in shards:
        ids = pq.read_table(root / layout.SHARDS / layout.shard_name(meta["number"]) / layout.IDS_FILE).column("id")
        guard.add_existing(ids.combine_chunks())
        id_type = ids.type
    start = sum(m["count"] for m in shards)
    if shards:
        say(f"resuming after {len(shards)} complete shard(s), at row {start:,}", opts.quiet)
    timer = _Timer()
    timer.update(state.get("add_seconds", {}))
    pipe = _Pipeline(root, state, opts, timer, id_type)
    with bar(source.count, "add", opts.quiet, initial=start) as pbar:
        shards += _fill_shards(root, source.batches(opts.batch_rows, start), pipe, guard, len(shards), start,
                               source.has_text, device, pbar)
    if not shards:
        raise InputError("the input holds no vectors; there is nothing to index")
    state["add_seconds"] = dict(timer)
    return shards


def read_state(root: Path) -> dict:
    """The build state a trained folder holds (written by training, before any shard)."""
    state = layout.read_json(root / layout.BUILD_DIR / STATE, "build state")
    if "factory" not in state or not (root / layout.TRAINED).exists():
        raise BuildRefused(f"{root} holds no trained quantizer yet; train first (the driver of a build does)")
    return state


def shard_rows(source, shard_size: int) -> list[tuple[int, int]]:
    """[lo, hi) rows of every shard of a source of known size: shard i holds rows i*shard_size onwards."""
    if source.count is None:
        raise InputError("a build by shards needs an input of known size (a .npy or Parquet path), not an iterator")
    return [(lo, min(lo + shard_size, source.count)) for lo in range(0, source.count, shard_size)]


def build_shard(root: str | os.PathLike, source, number: int, options: BuildOptions, device: str = "cpu") -> dict:
    """Build shard `number` alone (rows number*shard_size onwards) into a trained index folder.

    Engine-independent: any scheduler may run one call per shard, in any order, on any machine that sees the
    folder. Ids are checked for duplicates within the shard only; `check_unique_ids` checks across shards.
    Returns the shard's metadata, with the seconds spent per step under "seconds".
    """
    root = Path(root)
    opts = options
    state = read_state(root)
    lo, hi = shard_rows(source, opts.shard_size)[number]
    timer = _Timer()
    pipe = _Pipeline(root, state, opts, timer)
    guard = DuplicateGuard(lambda v: False)  # no other shard's ids are looked at here
    with bar(hi - lo, f"shard {layout.shard_name(number)}", True) as pbar:
        metas = _fill_shards(root, source.batches(opts.batch_rows, lo), pipe, guard, number, lo, source.has_text,
                             device, pbar, stop=hi)
    if len(metas) != 1 or metas[0]["count"] != hi - lo:
        got = sum(m["count"] for m in metas)
        raise InputError(f"shard {number}: the input gave {got} rows where {hi - lo} were expected (rows {lo}..{hi}); "
                         "was the input changed during the build?")
    return {**metas[0], "seconds": dict(timer)}


def check_unique_ids(root: Path, shards: list[dict], keys: list[np.ndarray]) -> None:
    """Refuse ids used twice across shards, given each shard's sorted id keys (`indexing.ids.hash_ids`)."""
    kinds = {layout.shard_name(m["number"]): _id_type(root, m) for m in shards}
    if len(set(kinds.values())) > 1:
        raise InputError(f"ids are integers in some shards and strings in others ({kinds}); use one id type for the "
                         "whole corpus")
    if not keys:
        return
    allk = np.concatenate(keys)
    owner = np.repeat(np.arange(len(keys)), [len(k) for k in keys])
    order = np.argsort(allk, kind="stable")
    sk = allk[order]
    for j in np.flatnonzero(sk[1:] == sk[:-1]):
        a, b = int(owner[order[j]]), int(owner[order[j + 1]])
        found = [_rows_with_key(root, shards[s], sk[j]) for s in sorted({a, b})]
        rows = [r for f in found for r in f]  # (global row, id) pairs holding this key
        for x in range(len(rows)):
            for y in range(x + 1, len(rows)):
                if rows[x][1] == rows[y][1]:
                    raise InputError(f"duplicate id {rows[x][1]!r} at rows {rows[x][0]} and {rows[y][0]}; ids must "
                                     "be unique (the shards are kept; fix the input and build again)")


def _rows_with_key(root: Path, meta: dict, key) -> list[tuple[int, object]]:
    ids = pq.read_table(root / layout.SHARDS / layout.shard_name(meta["number"]) / layout.IDS_FILE).column("id")
    ids = ids.combine_chunks()
    pos = np.flatnonzero(hash_ids(ids) == key)
    return [(meta["id_start"] + int(p), ids[int(p)].as_py()) for p in pos]


def shard_id_keys(root: str | os.PathLike, number: int) -> np.ndarray:
    """The sorted 64-bit id keys of a finished shard (8 bytes per id), for `check_unique_ids`."""
    path = Path(root) / layout.SHARDS / layout.shard_name(number) / layout.IDS_FILE
    return np.sort(hash_ids(pq.read_table(path).column("id").combine_chunks()))


def _finish_shard(writer: ShardWriter, id_type, guard: DuplicateGuard, opts: BuildOptions, timer: _Timer) -> dict:
    t = time.perf_counter()
    meta = writer.finish(id_type)
    timer.lap("finish_shard", t)
    layout.crash_point("between_shards", meta["number"])
    guard.written()
    say(f"shard {layout.shard_name(meta['number'])}: {meta['count']:,} vectors written "
        f"(rows {meta['id_start']:,}..{meta['id_start'] + meta['count'] - 1:,})", opts.quiet)
    return meta


def _write_manifest(root: Path, opts: BuildOptions, state: dict, shards: list[dict], device: str) -> None:
    n = sum(s["count"] for s in shards)
    trained = faiss.read_index(str(root / layout.TRAINED))
    add_seconds = state.get("add_seconds", {})
    add_total = sum(add_seconds.values())
    manifest = {
        "format_version": layout.FORMAT_VERSION,
        "metric": opts.metric,
        "full_dim": state["full_dim"],
        "index_dim": state["index_dim"],
        "count": n,
        "id_type": "int" if shards and _id_type(root, shards[0]) == "int" else "string",
        "transform": {"kind": state["transform_choice"]["chosen"], "file": layout.TRANSFORM,
                      "selection": state["transform_choice"]},
        "int8": {"file": layout.TRANSFORM, "clip_quantile": 1e-4},
        "factory": state["factory"],
        "nlist": trained.nlist,
        "trained": {"file": layout.TRAINED, **layout.file_record(root / layout.TRAINED)},
        "transform_file": layout.file_record(root / layout.TRANSFORM),
        "model": state["model"],
        "has_text": bool(shards and layout.DOC_BYTES in shards[0]["files"]),
        "shards": [{**{k: s[k] for k in ("number", "count", "id_start", "files")},
                    "ids_are_rows": s.get("ids_are_rows", False)} for s in shards],
        "build": {"identity": state["identity"], "options": asdict(opts), "device": device,
                  "notes": state["notes"], "train_rows": state["train_rows"],
                  "seconds": {"train": state["train_seconds"], **add_seconds},
                  "vectors_per_second": n / add_total if add_total else None,
                  "faiss_version": faiss.__version__, "engine": state.get("engine", "local")},
    }
    layout.write_json_atomic(root / layout.MANIFEST, manifest)


def _id_type(root: Path, shard: dict) -> str:
    schema = pq.read_schema(root / layout.SHARDS / layout.shard_name(shard["number"]) / layout.IDS_FILE)
    return "int" if pa.types.is_integer(schema.field("id").type) else "string"
