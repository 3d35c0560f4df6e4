"""The manifest: written last by a build, read and checked field by field before anything trusts it.

A manifest edited by hand, damaged on disk or written by another tool must be refused with the field that
is wrong, never half-read into a KeyError or, worse, into silently wrong search results.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from matryoshka.core import layout
from matryoshka.core.codec import CLIP_QUANTILE
from matryoshka.core.errors import IndexFormatError

from .pinned import PinnedFolder

METRICS = ("cosine", "ip", "l2")
STORE_FILES = (layout.INDEX_FILE, layout.IDS_FILE, layout.SHORT_FILE, layout.FULL_FILE)
TEXT_FILES = (layout.DOC_OFFSETS, layout.DOC_BYTES)
LEXICAL_DIR = "lexical"  # a shard's BM25 index (storage.lexical), when the manifest says "lexical": true
LEXICAL_META = f"{LEXICAL_DIR}/meta.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Bad(Exception):
    """A field of the manifest that is missing or of the wrong kind (turned into an IndexFormatError)."""


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise _Bad(f"{where} is not an object")
    if key not in obj:
        raise _Bad(f"{where} lacks {key!r}")
    return obj[key]


def _int(obj: Any, key: str, where: str, low: int = 0) -> int:
    v = _get(obj, key, where)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise _Bad(f"{where}.{key} is {v!r}, expected an integer >= {low}")
    return v


def _of(obj: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    v = _get(obj, key, where)
    if not isinstance(v, kind):
        raise _Bad(f"{where}.{key} is {type(v).__name__}, expected {getattr(kind, '__name__', kind)}")
    return v


def _file_record(rec: Any, where: str) -> None:
    _int(rec, "bytes", where)
    if not _SHA256.fullmatch(str(_get(rec, "sha256", where))):
        raise _Bad(f"{where}.sha256 is not a SHA-256 hex digest")


_DEAD_FILE = re.compile(r"dead\.g[0-9]+\.bits")


def _shards(m: dict) -> None:
    """Shards in increasing number and row order. Format 1: numbered 0, 1, ... over contiguous rows. Format 2
    also allows the gaps that compaction leaves (a rewritten shard takes a new number and new rows)."""
    shards = _of(m, "shards", "manifest", list)
    want = set(STORE_FILES) | (set(TEXT_FILES) if m["has_text"] else set())
    # a shard written before the index had attributes has none: it reads every column as null
    may = ({layout.ATTR_FILE} if m.get("attributes") else set()) | {layout.SLOTS_FILE}  # slots: IVF-list order
    v1 = m.get("format_version", layout.FORMAT_VERSION) < 2
    end, number, dead = 0, -1, 0
    for i, s in enumerate(shards):
        where = f"shards[{i}]"
        if v1 and _int(s, "number", where) != i:
            raise _Bad(f"{where}.number is {s['number']}, expected {i} (shards are numbered in order)")
        if _int(s, "number", where) <= number:
            raise _Bad(f"{where}.number is {s['number']}, not above the shard before it ({number})")
        number = s["number"]
        if v1 and _int(s, "id_start", where) != end:
            raise _Bad(f"{where}.id_start is {s['id_start']}, expected {end} (the rows of the shards before it)")
        if _int(s, "id_start", where) < end:
            raise _Bad(f"{where}.id_start is {s['id_start']}, inside the rows of the shard before it (< {end})")
        end = s["id_start"] + _int(s, "count", where)
        if not isinstance(s.get("ids_are_rows", False), bool):
            raise _Bad(f"{where}.ids_are_rows is {s['ids_are_rows']!r}, expected true or false")
        files = _of(s, "files", where, dict)
        lexical = {n for n in files if m.get("lexical") and n.startswith(LEXICAL_DIR + "/")}
        if not want <= set(files) - lexical <= want | may or (m.get("lexical") and LEXICAL_META not in lexical):
            raise _Bad(f"{where}.files names {sorted(files)}, expected {sorted(want)}" +
                       (f" and perhaps {sorted(may)}" if may else "") +
                       (f" and the lexical index ({LEXICAL_META}, ...)" if m.get("lexical") else ""))
        for name, rec in files.items():
            _file_record(rec, f"{where}.files[{name!r}]")
        if s.get("dead") is not None:
            if v1:
                raise _Bad(f"{where}.dead: tombstones need format 2")
            rec = s["dead"]
            _file_record(rec, f"{where}.dead")
            if not _DEAD_FILE.fullmatch(str(_get(rec, "file", f"{where}.dead"))):
                raise _Bad(f"{where}.dead.file is {rec['file']!r}, expected dead.g<generation>.bits")
            if _int(rec, "count", f"{where}.dead") > s["count"]:
                raise _Bad(f"{where}.dead.count is {rec['count']}, more than the shard's {s['count']} rows")
            dead += rec["count"]
    if sum(s["count"] for s in shards) != m["count"]:
        raise _Bad(f"the shards hold {sum(s['count'] for s in shards)} rows but count is {m['count']}")
    if not v1:  # format 2
        _int(m, "generation", "manifest", 1)
        if m.get("next_id") is not None:
            _int(m, "next_id", "manifest")
        if not all(isinstance(r, str) for r in m.get("retained", [])):
            raise _Bad("retained holds something other than file names")
        if _int(m, "next_shard", "manifest") <= number or _int(m, "next_row", "manifest") < end:
            raise _Bad(f"next_shard {m['next_shard']} / next_row {m['next_row']} are not past the last shard "
                       f"({number}, row {end})")
        if _int(m, "dead", "manifest") != dead:
            raise _Bad(f"dead is {m['dead']} but the shards' tombstones hold {dead}")


def check_manifest(m: dict) -> None:
    """Raise `_Bad` naming the first field the engine cannot trust."""
    if _of(m, "metric", "manifest", str) not in METRICS:
        raise _Bad(f"metric is {m['metric']!r}, expected one of {', '.join(METRICS)}")
    full, short = _int(m, "full_dim", "manifest", 1), _int(m, "index_dim", "manifest", 1)
    if short > full:
        raise _Bad(f"index_dim {short} is larger than full_dim {full}")
    _int(m, "count", "manifest")
    _of(m, "factory", "manifest", str)
    _of(m, "has_text", "manifest", bool)
    _file_record(_get(m, "trained", "manifest"), "trained")
    _file_record(_get(m, "transform_file", "manifest"), "transform_file")
    _of(_get(m, "transform", "manifest"), "selection", "transform", dict)
    model = _get(m, "model", "manifest")
    if model is not None:
        _of(model, "name", "model", str)
        _int(model, "dim", "model", 1)
        probe = _of(model, "probe", "model", list)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in probe):
            raise _Bad("model.probe holds something other than numbers")
    attributes = m.get("attributes", {})
    if not isinstance(attributes, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in attributes.items()):
        raise _Bad(f"attributes is {attributes!r}, expected an object of column names to type names")
    _shards(m)
    point = m.get("operating_point")
    if point is not None:
        for key in ("nprobe", "k1", "k2"):
            _int(point, key, "operating_point", 1)


def read_manifest(folder: PinnedFolder) -> dict:
    """The manifest of a complete index, checked, with errors that say how to get a good one."""
    root, path = folder.path(), folder.path(layout.MANIFEST)
    try:
        data = folder.read_bytes(layout.MANIFEST)
    except FileNotFoundError:
        if folder.exists(layout.BUILD_DIR):
            done = len([n for n in folder.listdir(layout.SHARDS) if n[:1].isdigit()]) \
                if folder.is_dir(layout.SHARDS) else 0
            raise IndexFormatError(f"the build in {root} is not finished ({done} shard(s) complete, no manifest); "
                                   "re-run the same build command to resume it") from None
        raise IndexFormatError(f"{root} holds no {layout.MANIFEST}; it is not a matryoshka index") from None
    m = layout.parse_json(data, path, "manifest")
    version = m.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"manifest {path}: format_version is {version!r}; the file is damaged: rebuild "
                               "the index")
    if version > layout.FORMAT_VERSION:
        raise IndexFormatError(f"{root} has index format version {version}, newer than this engine reads "
                               f"({layout.FORMAT_VERSION}); upgrade matryoshka-retrieval")
    try:
        check_manifest(m)
    except _Bad as e:
        raise IndexFormatError(f"manifest {path}: {e}; the file is damaged: rebuild the index or restore it "
                               "from a copy") from None
    return m


def generation(m: dict) -> int:
    """The manifest's generation: 1 for a new build, one more for each change since."""
    return m.get("generation", 1)


def live_count(m: dict) -> int:
    """Documents not deleted."""
    return m["count"] - m.get("dead", 0)


def next_numbers(m: dict) -> tuple[int, int]:
    """(shard number, first global row) for the next new shard: never one a generation used before."""
    shards = m["shards"]
    last_number = shards[-1]["number"] if shards else -1
    end = shards[-1]["id_start"] + shards[-1]["count"] if shards else 0
    return m.get("next_shard", last_number + 1), m.get("next_row", end)


def moved_on(folder: PinnedFolder, m: dict | None) -> bool:
    """Whether the index pinned in `folder` has a newer generation than `m` (read while it was opened)."""
    if m is None:
        return False
    try:
        now = layout.parse_json(folder.read_bytes(layout.MANIFEST), folder.path(layout.MANIFEST), "manifest")
    except (OSError, IndexFormatError):
        return False
    return generation(now) != generation(m)


def shard_records(shards: list[dict]) -> list[dict]:
    """The manifest's entry for each finished shard, from the shard's own `shard.json`."""
    return [{**{k: s[k] for k in ("number", "count", "id_start", "files")},
             "ids_are_rows": s.get("ids_are_rows", False)} for s in shards]


def new_manifest(root: Path, *, metric: str, full_dim: int, index_dim: int, factory: str, nlist: int,
                 transform_selection: dict, model: dict | None, id_type: str, shards: list[dict],
                 build: dict, attributes: dict[str, str] | None = None) -> dict:
    """A manifest for the finished shards of `root`, with the records of its shared files."""
    return {
        "format_version": layout.FORMAT_VERSION,
        "metric": metric,
        "full_dim": full_dim,
        "index_dim": index_dim,
        "count": sum(s["count"] for s in shards),
        "id_type": id_type,
        "transform": {"kind": transform_selection["chosen"], "file": layout.TRANSFORM,
                      "selection": transform_selection},
        "int8": {"file": layout.TRANSFORM, "clip_quantile": CLIP_QUANTILE},
        "factory": factory,
        "nlist": nlist,
        "trained": {"file": layout.TRAINED, **layout.file_record(root / layout.TRAINED)},
        "transform_file": layout.file_record(root / layout.TRANSFORM),
        "model": model,
        "has_text": bool(shards and layout.DOC_BYTES in shards[0]["files"]),
        "attributes": attributes or {},
        "lexical": bool(shards and LEXICAL_META in shards[0]["files"]),
        "shards": shard_records(shards),
        "build": build,
        "generation": 1,
        "next_shard": max((s["number"] for s in shards), default=-1) + 1,
        "next_row": sum(s["count"] for s in shards),
        "dead": 0,
    }


def write_manifest(root: Path, manifest: dict) -> None:
    """Check a manifest with the reader's own rules, then write it atomically: the last step of a build."""
    try:
        check_manifest(manifest)
    except _Bad as e:
        raise IndexFormatError(f"refusing to write a manifest the engine could not read back: {e}") from None
    layout.write_json_atomic(root / layout.MANIFEST, manifest)
