"""The manifest: written last by a build, read and checked field by field before anything trusts it.

A manifest edited by hand, damaged on disk or written by another tool must be refused with the field that
is wrong, never half-read into a KeyError or, worse, into silently wrong search results. In memory it is a
typed `Manifest` (with a `ShardRecord` per shard): `read_manifest` is its one reader, which checks the format
version and every field, and `write_manifest` its one writer, which checks it again with the reader's rules.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
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


@dataclass(frozen=True)
class ShardRecord:
    """A shard as the manifest names it: its number, rows, files (name -> {bytes, sha256}) and tombstones."""

    number: int
    count: int
    id_start: int  # its first global row
    files: dict
    ids_are_rows: bool = False  # its external ids are its global rows (no id map stored)
    dead: dict | None = None  # its tombstone file's record: {file, count, bytes, sha256}

    @property
    def dead_count(self) -> int:
        return self.dead["count"] if self.dead else 0

    @property
    def live(self) -> int:
        return self.count - self.dead_count

    @property
    def end(self) -> int:
        """One past its last global row."""
        return self.id_start + self.count

    @classmethod
    def of(cls, d: dict) -> "ShardRecord":
        """From a manifest's shard entry or a finished shard's own `shard.json` (other keys left out)."""
        return cls(d["number"], d["count"], d["id_start"], d["files"], d.get("ids_are_rows", False), d.get("dead"))

    def to_dict(self) -> dict:
        d = {"number": self.number, "count": self.count, "id_start": self.id_start, "files": self.files,
             "ids_are_rows": self.ids_are_rows}
        return d if self.dead is None else {**d, "dead": self.dead}


_OPTIONAL = ("retained", "next_id", "changes", "operating_point", "operating_points", "hybrid", "drift_reference")


@dataclass
class Manifest:
    """An index generation: what was built (vectors, transform, first-pass factory, model), its shards, the
    changes since, and the settings measured for it. Fields the engine does not know are kept in `extra` and
    written back as they were."""

    format_version: int
    metric: str
    full_dim: int
    index_dim: int
    count: int  # rows in its shards, deleted ones included
    id_type: str  # "int" or "string"
    transform: dict  # {kind, file, selection}
    int8: dict
    factory: str  # the faiss factory string of the first pass
    nlist: int | None
    trained: dict
    transform_file: dict
    model: dict | None  # the model that made the vectors: {name, dim, probe, ...}
    has_text: bool
    attributes: dict  # column -> type name
    lexical: bool
    shards: tuple[ShardRecord, ...]
    build: dict  # how it was built: options, selection, training sample
    generation: int = 1
    next_shard: int | None = None
    next_row: int | None = None
    dead: int = 0
    retained: list = field(default_factory=list)  # files of the generation before, deleted by the next change
    next_id: int | None = None
    changes: list = field(default_factory=list)  # the last changes' records
    operating_point: dict | None = None  # measured with every store in RAM or the page cache
    operating_points: dict = field(default_factory=dict)  # placement key -> point (`storage.tiers.point_key`)
    hybrid: dict | None = None  # the measured fusion (`retrieval.fusion_tuning`)
    drift_reference: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def live(self) -> int:
        """Documents not deleted."""
        return self.count - self.dead

    def next_numbers(self) -> tuple[int, int]:
        """(shard number, first global row) for the next new shard: never one a generation used before."""
        last = self.shards[-1] if self.shards else None
        return (self.next_shard if self.next_shard is not None else (last.number + 1 if last else 0),
                self.next_row if self.next_row is not None else (last.end if last else 0))

    def replaced(self, **changes) -> "Manifest":
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict) -> "Manifest":
        """From a checked manifest's JSON object (`check_manifest`)."""
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in d.items() if k in known and not (k in _OPTIONAL and v is None)}
        values["shards"] = tuple(ShardRecord.of(s) for s in d["shards"])
        values.setdefault("id_type", "string")
        for k in ("int8", "attributes", "build"):
            values.setdefault(k, {})
        values.setdefault("nlist", None)
        values.setdefault("lexical", False)
        return cls(**values, extra={k: v for k, v in d.items() if k not in known})

    def to_dict(self) -> dict:
        """The JSON object written to disk (optional fields left out while unset)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d["shards"] = [s.to_dict() for s in self.shards]
        for k in _OPTIONAL:
            if d[k] in (None, [], {}):
                del d[k]
        return {**d, **self.extra}


def read_manifest(folder: PinnedFolder) -> Manifest:
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
    return Manifest.from_dict(m)


def moved_on(folder: PinnedFolder, m: Manifest | None) -> bool:
    """Whether the index pinned in `folder` has a newer generation than `m` (read while it was opened)."""
    if m is None:
        return False
    try:
        now = layout.parse_json(folder.read_bytes(layout.MANIFEST), folder.path(layout.MANIFEST), "manifest")
    except (OSError, IndexFormatError):
        return False
    return now.get("generation", 1) != m.generation


def shard_records(shards: list[dict]) -> tuple[ShardRecord, ...]:
    """The manifest's record of each finished shard, from the shard's own `shard.json`."""
    return tuple(ShardRecord.of({k: v for k, v in s.items() if k != "dead"}) for s in shards)


def new_manifest(root: Path, *, metric: str, full_dim: int, index_dim: int, factory: str, nlist: int,
                 transform_selection: dict, model: dict | None, id_type: str, shards: list[dict],
                 build: dict, attributes: dict[str, str] | None = None) -> Manifest:
    """A manifest for the finished shards of `root`, with the records of its shared files."""
    return Manifest.from_dict({
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
        "shards": [s.to_dict() for s in shard_records(shards)],
        "build": build,
        "generation": 1,
        "next_shard": max((s["number"] for s in shards), default=-1) + 1,
        "next_row": sum(s["count"] for s in shards),
        "dead": 0,
    })


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Check a manifest with the reader's own rules, then write it atomically: the last step of a build and
    of every change."""
    data = manifest.to_dict()
    try:
        check_manifest(data)
    except _Bad as e:
        raise IndexFormatError(f"refusing to write a manifest the engine could not read back: {e}") from None
    layout.write_json_atomic(root / layout.MANIFEST, data)
