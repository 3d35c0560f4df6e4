"""Names of the files in an index folder, the manifest, and checksums.

    my-index/
      manifest.json            written last, atomically; each change (add, delete, compact) writes the next
                               generation of it, and every file it names is never rewritten in place
      transform.npz            shortening transform + int8 scales
      trained.faiss            trained, empty IVF index shared by every shard
      shards/00000/            one folder per shard, renamed into place when complete
        shard.json             counts, id range, checksums of the files below
        index.faiss  ids.parquet  short.i8.npy  full.f16.npy  [docs.offsets.npy docs.utf8.bin] [attrs.parquet]
        dead.g7.bits           rows deleted as of generation 7 (a bitmap); absent while none are
      build-log.json           seconds per build step (a log: the only file two builds of one input differ in)
      .build/                  state of an unfinished build (removed when it completes)
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from .errors import IndexFormatError

FORMAT_VERSION = 2  # 2: generations, tombstones, shards numbered with gaps (compaction)
MANIFEST = "manifest.json"
TRANSFORM = "transform.npz"
TRAINED = "trained.faiss"
SHARDS = "shards"
SHARD_META = "shard.json"
BUILD_DIR = ".build"
BUILD_STATE = "state.json"  # in BUILD_DIR: what an unfinished build is building, and its trained state
LOCK = ".lock"
BUILD_LOG = "build-log.json"  # how long the build took, per step: not part of the index (its bytes vary by run)

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.parquet"
SHORT_FILE = "short.i8.npy"
FULL_FILE = "full.f16.npy"
SLOTS_FILE = "slots.u32.npy"  # where each row's int8 and full vectors sit, when they are stored in IVF-list order
DOC_OFFSETS = "docs.offsets.npy"
DOC_BYTES = "docs.utf8.bin"
ATTR_FILE = "attrs.parquet"  # attribute columns of the shard's rows, when the index has any


CRASH_ENV = "MATRYOSHKA_CRASH_AT"  # fault injection for the kill-and-resume tests: "point" or "point:n"
STOP_ENV = "MATRYOSHKA_STOP_AT"  # the same points, stopped (SIGSTOP) so that a test can act, then SIGCONT


def crash_point(name: str, n: int = 0) -> None:
    """SIGKILL, or SIGSTOP, this process at a named point when the environment asks for it (tests only)."""
    for env, sig in ((CRASH_ENV, signal.SIGKILL), (STOP_ENV, signal.SIGSTOP)):
        want = os.environ.get(env)
        if want and want in (name, f"{name}:{n}"):
            os.kill(os.getpid(), sig)


def shard_name(i: int) -> str:
    return f"{i:05d}"


def shard_dir(i: int) -> str:
    """The folder of shard `i`, relative to the index folder."""
    return f"{SHARDS}/{shard_name(i)}"


def dead_name(generation: int) -> str:
    """The tombstone bitmap of a shard as of `generation`: a new file per generation, never one rewritten."""
    return f"dead.g{generation}.bits"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    with open(path, "rb") as f:
        return sha256_stream(f, chunk)


def sha256_stream(f, chunk: int = 1 << 22) -> str:
    """SHA-256 hex digest of what is left to read in an open binary file."""
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, rename it over `path` and fsync the folder: a
    reader finds the old file or the new one whole, after a crash too."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    if path.name == MANIFEST:
        crash_point("manifest")
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON atomically (`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def parse_factory(factory: str) -> tuple[int, str]:
    """(nlist, code) of an index's IVF factory string: 'IVF4096,PQ32' -> (4096, 'PQ32'),
    'IVF65536_HNSW32,PQ64x4fs' -> (65536, 'PQ64x4fs')."""
    head, _, code = factory.partition(",")
    return int(head.removeprefix("IVF").partition("_")[0]), code


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{what} {path} is missing") from None
    return parse_json(data, path, what)


def parse_json(data: bytes, path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `data` (read from `path`), or an error that says the file is damaged."""
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{what} {path} is not valid JSON ({e}); the file is damaged: rebuild the "
                               "index") from None
    if not isinstance(obj, dict):
        raise IndexFormatError(f"{what} {path} does not hold a JSON object; the file is damaged: rebuild the index")
    return obj
