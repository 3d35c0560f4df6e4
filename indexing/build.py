"""The build: check the folder -> train once -> write every shard -> write the manifest.

Memory stays flat in the corpus size: the sample, one batch and one shard's codes are all it holds.
Each shard is renamed into place when complete and the manifest is written last, so a killed build
resumes from its last complete shard and ends with the same index as an uninterrupted one.
"""
from __future__ import annotations

import errno
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import faiss

from matryoshka.core import encoder, layout
from matryoshka.core.device import check_faiss_install, resolve_device, set_threads
from matryoshka.core.errors import BuildRefused, InputError
from matryoshka.core.progress import bar, say
from matryoshka.core.timing import StageTimer
from matryoshka.storage.manifest import new_manifest, write_manifest

from . import ivf, sizing
from .attributes import describe
from .folder import BuildLock, beside, clear, prepare_beside, prepare_folder, recover_swap, swap_in
from .ids import DuplicateGuard
from .options import IDENTITY, BuildOptions
from .pipeline import Pipeline
from .shard_api import id_type, shard_ids, shard_rows, written_id
from .sources import Source
from .training import BuildState, train


@dataclass
class BuildJob:
    """A build in progress, as handed to the step that writes the shards."""

    root: Path
    source: Source
    opts: BuildOptions
    device: str
    model_name: str | None
    identity: dict
    state: BuildState | None = None  # set once training is done (or found done)


Finish = Callable[[Path, BuildOptions], None]
AddShards = Callable[[BuildJob], list[dict]]  # writes every shard not yet complete; returns all shards' metadata


def identity(opts: BuildOptions, source: Source, model_name: str | None) -> dict:
    """What decides the index: the options in IDENTITY, the input's fingerprint and the model."""
    return {"options": {k: getattr(opts, k) for k in IDENTITY}, "source": source.fingerprint(),
            "model": model_name}


def build_index(out: str | os.PathLike, source: Source, options: BuildOptions | None = None,
                model_name: str | None = None, add: AddShards | None = None, finish: Finish | None = None) -> Path:
    """Build (or resume building) an index in folder `out` from a source (see indexing.sources).

    `add` writes the shards once training is done: the default streams every batch in this process
    (`add_all`); a distributed engine passes its own. `finish(folder, options)` runs on the complete index
    before it is swapped in (and on an index found complete): `indexing.build` measures its operating point.
    """
    def finished(folder: Path) -> Path:
        if finish is not None:
            finish(folder, opts)
        return folder

    opts = (options or BuildOptions()).check()
    check_faiss_install()
    device = resolve_device(opts.device)
    set_threads(opts.threads)
    if source.count == 0:
        raise InputError("the input holds no vectors; there is nothing to index")
    if opts.lexical and not source.has_text:
        raise InputError("lexical=True indexes the documents' texts, and this input has none: give texts= (or a "
                         "`text` column), or leave lexical out")
    if not opts.select or device == "gpu":  # otherwise training measures the code (indexing.selection)
        opts = opts.for_device(device, min(opts.index_dim, source.dim))
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise BuildRefused(f"{root} is a file, not a folder; pass --out / out= naming a new or empty folder")
    recover_swap(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = BuildLock(root)
    add = add or add_all
    try:
        model_name = model_name or source.model_name
        ident = identity(opts, source, model_name)
        status = prepare_folder(root, ident, opts.overwrite)
        if status == "complete":
            say(f"{root} already holds this index, complete; nothing to do (overwrite=True / --overwrite "
                "rebuilds it)", opts.quiet)
            return finished(root)
        if status != "replace":
            _build_into(BuildJob(root, source, opts, device, model_name, ident), status, add)
            return finished(root)
        # Build beside the old index and swap it in at the end, so searchers never see a half-written one.
        work = beside(root, "new")
        work.mkdir(exist_ok=True)
        if prepare_beside(work, ident) == "fresh":
            clear(work)
        _build_into(BuildJob(work, source, opts, device, model_name, ident),
                    "resume" if (work / layout.BUILD_DIR).exists() else "fresh", add)
        swap_in(finished(work), root)
        return root
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise BuildRefused(f"the disk of {root} filled up during the build ({e.strerror}); the index is left "
                               "unfinished, never half-written: free space and re-run the same command to resume "
                               "from the last complete shard") from None
        raise
    finally:
        lock.release()


def _build_into(job: BuildJob, status: str, add: AddShards) -> None:
    root, source = job.root, job.source
    if status == "fresh":  # record what is being built before anything else is written
        (root / layout.BUILD_DIR).mkdir()
        BuildState(job.identity).save(root)
    source.prepare(root / layout.BUILD_DIR, job.opts.quiet)
    state = BuildState.load(root)
    if not (state.trained and (root / layout.TRAINED).exists()):
        if job.model_name:
            model = source.model or encoder.load_model(job.model_name, "cpu")
            state.model = encoder.fingerprint(model, job.model_name)
            if state.model["dim"] != source.dim:
                raise InputError(f"model {job.model_name!r} makes {state.model['dim']}-dim vectors but the input "
                                 f"has {source.dim} dims; name the model that made these embeddings")
        if source.count is not None:
            _check_disk(root, source, job.opts)
        state = train(root, source, job.opts, job.device, state)
    job.state = state
    shards = add(job)
    write_manifest(root, _manifest(job, shards))
    shutil.rmtree(root / layout.BUILD_DIR, ignore_errors=True)


def done_shards(root: Path) -> list[dict]:
    """Metadata of the shards already complete in `root` (an interrupted shard's folder is removed)."""
    shards_dir = root / layout.SHARDS
    metas = []
    if shards_dir.exists():
        for p in sorted(shards_dir.iterdir()):
            if p.name.startswith(".tmp-"):
                shutil.rmtree(p)  # an interrupted shard: it is rewritten from its first row
            elif (p / layout.SHARD_META).exists():
                metas.append(layout.read_json(p / layout.SHARD_META, "shard metadata"))
    return metas


def _check_disk(root: Path, source: Source, opts: BuildOptions) -> None:
    dim = min(opts.index_dim, source.dim)
    factory, _ = ivf.plan_factory(source.count, dim, opts.pq_bytes, opts.fast_scan, opts.nlist)
    est = sizing.estimate(source.count, source.dim, dim, factory, opts.shard_size)
    free = shutil.disk_usage(root).free
    if est["disk_total"] * 1.05 > free:
        raise BuildRefused(f"the index needs about {sizing.human(est['disk_total'])} but only {sizing.human(free)} "
                           f"is free on the disk of {root}; free space or build elsewhere")


def add_all(job: BuildJob) -> list[dict]:
    """Stream every batch through the pipeline into shards, in order, after those already complete."""
    root, opts = job.root, job.opts
    shards = done_shards(root)
    guard = DuplicateGuard(lambda v: written_id(root, v))
    id_arrow_type = None
    for meta in shards:
        ids = shard_ids(root, meta["number"])
        guard.add_existing(ids)
        id_arrow_type = ids.type
    start = sum(m["count"] for m in shards)
    if shards:
        say(f"resuming after {len(shards)} complete shard(s), at row {start:,}", opts.quiet)
    timer = StageTimer(job.state.add_seconds)
    pipe = Pipeline(root, job.state, opts, job.device, job.source.has_text, timer, id_arrow_type,
                    job.source.attributes)
    with bar(job.source.count, "add", opts.quiet, initial=start) as pbar:
        if job.source.count is None:  # an iterator is read once, in the batches it gives
            shards += pipe.fill_shards(job.source.batches(opts.batch_rows, start), guard, len(shards), start, pbar)
        for lo, hi in shard_rows(job.source, opts.shard_size)[len(shards):] if job.source.count else []:
            # batches start at every shard's first row, so a resumed build reads (and computes) exactly
            # what an uninterrupted one does: BLAS sums in another order for differently cut batches
            shards += pipe.fill_shards(job.source.batches(opts.batch_rows, lo), guard, len(shards), lo, pbar, hi)
    if not shards:
        raise InputError("the input holds no vectors; there is nothing to index")
    job.state.add_seconds = dict(timer)
    return shards


def _manifest(job: BuildJob, shards: list[dict]) -> dict:
    state, n = job.state, sum(s["count"] for s in shards)
    add_total = sum(state.add_seconds.values())
    # timings go to the build log, not the manifest: the same input and options give the same index, byte for byte
    layout.write_json_atomic(job.root / layout.BUILD_LOG, {
        "seconds": {"train": state.train_seconds, **state.add_seconds},
        "vectors_per_second": n / add_total if add_total else None})
    build = {"identity": state.identity, "options": asdict(job.opts), "device": job.device, "notes": state.notes,
             "count": n, "train_rows": state.train_rows, "train_first_rows": state.train_first_rows,
             "faiss_version": faiss.__version__, "engine": state.engine, "selection": state.selection}
    nlist = faiss.read_index(str(job.root / layout.TRAINED)).nlist
    return new_manifest(job.root, metric=job.opts.metric, full_dim=state.full_dim, index_dim=state.index_dim,
                        factory=state.factory, nlist=nlist, transform_selection=state.transform_choice,
                        model=state.model, id_type=id_type(job.root, shards[0]) if shards else "string",
                        shards=shards, build=build, attributes=describe(job.source.attributes))
