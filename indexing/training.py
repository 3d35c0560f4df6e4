"""Training, once per build: sample the input, fit the shortening and the int8 codec, train the IVF."""
from __future__ import annotations

import logging

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from matryoshka.core import layout
from matryoshka.core.codec import Codec, Int8Codec
from matryoshka.core.errors import BuildRefused
from matryoshka.core.progress import say
from matryoshka.core.vectors import as_matrix, normalize

from . import ivf, selection
from .options import BuildOptions
from .sources import Source
from .transform import fit_transform

ITERATOR_TRAIN_ROWS = 131072  # rows read ahead to train on when the input is a Python iterator


@dataclass
class BuildState:
    """What an unfinished build has decided so far, kept in .build/state.json so that a killed build resumes.

    Before training only `identity` is set; training sets the rest; adding shards fills `add_seconds`."""

    identity: dict
    factory: str | None = None
    notes: list[str] = field(default_factory=list)
    transform_choice: dict = field(default_factory=dict)
    selection: dict | None = None  # what indexing.selection measured, and why it chose the factory
    full_dim: int = 0
    index_dim: int = 0
    train_rows: int = 0
    train_first_rows: bool = False  # the sample is the first rows (an iterator), not drawn at random
    model: dict | None = None
    train_seconds: float = 0.0
    add_seconds: dict[str, float] = field(default_factory=dict)
    engine: str = "local"

    @property
    def trained(self) -> bool:
        return self.factory is not None

    def save(self, root: Path) -> None:
        layout.write_json_atomic(root / layout.BUILD_DIR / layout.BUILD_STATE, asdict(self))

    @classmethod
    def load(cls, root: Path) -> "BuildState":
        d = layout.read_json(root / layout.BUILD_DIR / layout.BUILD_STATE, "build state")
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def read_trained_state(root: Path) -> BuildState:
    """The build state a trained folder holds (written by training, before any shard)."""
    state = BuildState.load(root)
    if not state.trained or not (root / layout.TRAINED).exists():
        raise BuildRefused(f"{root} holds no trained quantizer yet; train first (the driver of a build does)")
    return state


def sample_rows(count: int, n: int, seed: int) -> np.ndarray:
    """The rows a training sample of `n` takes from `count` rows (sorted), for a seed."""
    return np.sort(np.random.default_rng(seed).choice(count, size=n, replace=False))


def _sample_rows(source: Source, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if source.count is None:
        x = source.take_sample(n)
        return np.arange(len(x)), x
    rows = sample_rows(source.count, n, seed)
    return rows, source.sample(rows)


def train(root: Path, source: Source, opts: BuildOptions, device: str, state: BuildState) -> BuildState:
    """Fit the transform, the int8 codec and the IVF on a sample; save them and the build state."""
    t0 = time.perf_counter()
    dim = min(opts.index_dim, source.dim)
    fast_scan = opts.for_device(device, dim).fast_scan  # the rule, where selection measures nothing
    count = source.count if source.count is not None else opts.expected_count
    if count is None:  # an iterator of unknown size: plan from the rows the sample holds
        rows, sample = _sample_rows(source, opts.train_size or ITERATOR_TRAIN_ROWS, opts.seed)
        factory, notes = ivf.plan_factory(len(sample), dim, opts.pq_bytes, fast_scan, opts.nlist)
        if opts.nlist is None:
            notes = notes + [f"the input is an iterator of unknown size: the partition was planned for the "
                             f"{len(sample):,} rows read ahead; give expected_count= (or nlist=) for a larger one"]
    else:  # an iterator with expected_count= is planned for that size, and trained on its first rows
        factory, notes = ivf.plan_factory(count, dim, opts.pq_bytes, fast_scan, opts.nlist)
        nlist, code = layout.parse_factory(factory)
        rows, sample = _sample_rows(source, min(count, opts.train_size or ivf.train_size(
            count, nlist, code, selecting=opts.select and opts.nlist is None)), opts.seed)
        if nlist > 1 and len(sample) < nlist * ivf.MIN_POINTS_PER_LIST or len(sample) < ivf.min_train_points(code):
            factory, more = ivf.plan_factory(len(sample), dim, opts.pq_bytes, fast_scan, opts.nlist)
            notes = [f"a training sample of {len(sample)} vectors is too small for the plan above"] + more
    sample = as_matrix(sample, source.dim, "training sample", rows)
    sample = normalize(sample, opts.metric, "training sample", rows, inplace=sample.flags.writeable)
    transform, choice = fit_transform(opts.transform, sample, dim, opts.metric)
    short = transform.apply(sample)
    chosen = None
    if opts.select and not factory.endswith(",Flat"):
        say(f"measuring partitions and codes on {len(sample):,} sample vectors", opts.quiet)
        chosen = selection.select(sample, short, count or len(sample), opts.metric, opts.pq_bytes, device,
                                  opts.nlist, opts.fast_scan, opts.seed, opts.target_recall, opts.rotation)
    if chosen is not None:
        factory = chosen.factory
        rotation = chosen.rotation
    else:  # the rule of thumb, or a plan given (--plan-from): a learned rotation only when asked for
        rotation = selection.learn_opq(short, layout.parse_factory(factory)[1]) if opts.rotation == "opq" and \
            not factory.endswith(",Flat") else None
    if rotation is not None:
        transform, short = transform.rotated(rotation), short @ rotation
    say(f"training {factory} on {len(sample):,} vectors ({device})", opts.quiet)
    for note in notes:
        say(f"note: {note}", opts.quiet, logging.WARNING)
    codec = Codec(transform, Int8Codec.fit(short))
    layout.crash_point("training")
    index = ivf.train(factory, short, opts.metric, device)
    layout.write_atomic(root / layout.TRANSFORM, codec.to_bytes())
    layout.write_atomic(root / layout.TRAINED, ivf.serialize(index).tobytes())
    state.factory, state.notes, state.transform_choice = factory, notes, choice
    state.selection = chosen.to_dict() if chosen is not None else None
    state.full_dim, state.index_dim, state.train_rows = source.dim, dim, len(sample)
    state.train_first_rows = source.count is None
    state.train_seconds = time.perf_counter() - t0
    state.save(root)
    return state
