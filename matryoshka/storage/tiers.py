"""Where each store of an opened index lives: RAM, the page cache, or SSD, decided under a memory budget.

Without a budget every store is memory-mapped and lives in the page cache as far as the machine's memory
allows (the kernel decides; a cold store costs one page fault per row). With a budget the stores are placed
in the order the cascade needs them, as long as they fit: the first-pass codes (always in RAM: a search cannot
run without them), the int8 short vectors, the full vectors, the texts. A store that fits is read into RAM
whole; one that does not is read from SSD with many reads in flight (`row_reader`), not through page faults.

A GPU budget adds two tiers for the int8 store, which re-scoring on a GPU reads at random: GPU memory where it
fits, else page-locked ("pinned") host memory, from which candidate rows go to the GPU in one copy a batch.
"""
from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import numpy as np

from matryoshka.core import checks
from matryoshka.core.errors import InputError

if TYPE_CHECKING:
    from .manifest import Manifest, ShardRecord

STORES = ("codes", "int8", "full", "texts")
RAM, CACHE, SSD = "ram", "page cache", "ssd"
GPU, PINNED = "gpu", "pinned"  # the int8 store's tiers under a GPU budget (`storage.device_store`)
NO_CUDA = ("a GPU memory budget was given but torch sees no CUDA device: the int8 store is held in plain RAM "
           "(pinned memory needs CUDA) and re-scored on the CPU")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_BUDGET = 1 << 60  # 1 EiB: more than any machine holds, so a larger budget is a mistyped one
BUDGET_FORMS = "a byte count such as 2_000_000_000, or a size such as '512M', '2G' or '1.5T' (binary units)"


def parse_bytes(value, name: str = "memory_budget") -> int:
    """Bytes from a byte count or a size such as '512M', '24G', '1.5 TB' (binary units): the one parser of memory
    budgets. Anything else (a bool, NaN, an infinity, less than a byte, more than MAX_BUDGET, other text) is an
    InputError naming `name` and the accepted forms."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", value.lower().replace("_", ""))
        if not m:
            raise InputError(f"{name} must be {BUDGET_FORMS}; got {_shown(value)}")
        n = Decimal(m.group(1)) * _UNITS[m.group(2)]  # exact, however many digits
    elif checks.is_int(value):
        n = int(value)
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        if not math.isfinite(value):
            raise InputError(f"{name} must be a finite size: {BUDGET_FORMS}; got {_shown(value)}")
        n = value
    else:
        raise InputError(f"{name} must be {BUDGET_FORMS}; got {_shown(value)}")
    if n > MAX_BUDGET:
        raise InputError(f"{name} of {_shown(value)} is more than {MAX_BUDGET:,} bytes (1 EiB), more memory than any "
                         f"machine has; give {BUDGET_FORMS}")
    if n < 1:
        raise InputError(f"{name} must be at least 1 byte; got {_shown(value)}; give {BUDGET_FORMS}")
    return int(n)


def _shown(value) -> str:
    """`value` for a message: a huge number or text by its length, not in full."""
    if checks.is_int(value) and abs(value).bit_length() > 128:
        return f"an integer of {abs(value).bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


@dataclass(frozen=True)
class SsdReads:
    """How stores on SSD are read: method (see `row_reader.METHODS`), reads in flight, O_DIRECT or not."""

    method: str = "willneed"  # the fastest on the cold benchmark (benchmarks/results/cold-gcide-120k.json)
    depth: int = 32
    direct: bool = False

    @classmethod
    def of(cls, value) -> "SsdReads":
        """`ssd_reads=`: an SsdReads, a dict of its fields, or None (the defaults); checked before any file
        opens."""
        from . import row_reader
        if value is None:
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - {"method", "depth", "direct"}
            if unknown:
                raise InputError(f"ssd_reads has no option {sorted(unknown)[0]!r}; its options are method, depth, "
                                 "direct")
            value = cls(**value)
        if not isinstance(value, cls):
            raise InputError("ssd_reads= takes a dict (method, depth, direct) or an SsdReads; got "
                             f"{type(value).__name__}")
        if value.method not in row_reader.METHODS:
            raise InputError(f"ssd_reads method {value.method!r} is unknown; choose one of "
                             f"{', '.join(row_reader.METHODS)}")
        if value.method == "uring" and not row_reader.uring_available():
            raise InputError("ssd_reads method 'uring' cannot read here: it needs the liburing package (pip "
                             "install liburing) built for this CPU, on a kernel that allows io_uring; use "
                             "method 'willneed' (the default) or 'pread'")
        checks.integer("ssd_reads depth", value.depth, 1, 1024)
        checks.flag("ssd_reads direct", value.direct)
        if value.direct and value.method != "pread":
            raise InputError("ssd_reads direct=True (O_DIRECT) works with method 'pread' only")
        return value


def choose(sizes: dict[str, int], budget: int | None, gpu_budget: int | None = None,
           cuda: bool = False) -> dict[str, str]:
    """The tier of each store (`STORES`) given their sizes in bytes, a memory budget (None: no budget) and a GPU
    memory budget (None: no GPU tier). Texts that do not fit stay memory-mapped (a few rows a query): their
    tier is the page cache.

    With a GPU budget and `cuda` (a CUDA device torch sees), the int8 store goes to GPU memory when it fits the
    GPU budget, and takes none of the memory budget; else to pinned host memory, counted like RAM, where the
    memory budget holds it (or there is none); else it stays on SSD. Without CUDA, pinned falls back to RAM
    (`NO_CUDA` says so)."""
    if gpu_budget is not None:
        if cuda and sizes.get("int8", 0) <= gpu_budget:
            return {**choose({**sizes, "int8": 0}, budget), "int8": GPU}
        host = choose(sizes, budget)
        return host if host["int8"] == SSD else {**host, "int8": PINNED if cuda else RAM}
    if budget is None:
        return {s: RAM if s == "codes" else CACHE for s in STORES}
    if sizes["codes"] > budget:
        raise InputError(f"the memory budget ({budget:,} bytes) is below the first-pass codes alone "
                         f"({sizes['codes']:,} bytes), which must be in RAM; raise the budget, or build with "
                         "smaller codes (a smaller PQ code or more shards on other machines)")
    left, out = budget - sizes["codes"], {"codes": RAM}
    for s in STORES[1:]:
        fits = sizes.get(s, 0) <= left
        out[s] = RAM if fits else CACHE if s == "texts" else SSD
        left -= sizes.get(s, 0) if fits else 0
    return out


def store_sizes(manifest: "Manifest", trained, shards: list["ShardRecord"] | None = None,
                held: int | None = None) -> dict[str, int]:
    """Bytes of each store (`STORES`) of the shards `shards` (default: all) of an index. The codes count faiss's
    code and int64 row id per vector, one copy of the centroids, and `held`: the external ids, attribute
    columns, deleted-row masks and slots the opened shards hold in RAM (default: the id and slot files' sizes,
    an estimate before opening). The other stores are their files."""
    import faiss

    from matryoshka.core import layout
    shards = manifest.shards if shards is None else shards
    ivf = faiss.extract_index_ivf(trained)
    count = sum(s.count for s in shards)

    def files(*names):
        return sum(s.files[n]["bytes"] for s in shards for n in names if n in s.files)
    if held is None:  # the id maps, and the slots of list-ordered shards (4 bytes a row)
        held = sum(s.files[layout.IDS_FILE]["bytes"] for s in shards if not s.ids_are_rows) + \
            files(layout.SLOTS_FILE)
    return {"codes": count * (ivf.code_size + 8) + ivf.nlist * manifest.index_dim * 4 + held,
            "int8": files(layout.SHORT_FILE), "full": files(layout.FULL_FILE),
            "texts": files(layout.DOC_OFFSETS, layout.DOC_BYTES)}


def point_key(placed: dict) -> str:
    """The key an operating point measured under this placement is stored by (`Manifest.operating_points`):
    the stores read from SSD, e.g. "full=ssd"; "" when none is (the point of `Manifest.operating_point`)."""
    return ",".join(f"{s}=ssd" for s in STORES if placed.get(s) == SSD)


def operating_point(manifest: "Manifest", placed: dict) -> dict | None:
    """The operating point for this placement: the one measured under it, else the index's default."""
    key = point_key(placed)
    stored = manifest.operating_points.get(key) if key else None
    return stored or manifest.operating_point
