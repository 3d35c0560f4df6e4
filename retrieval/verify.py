"""`matryoshka verify`: check every file of an index, streaming the large stores instead of loading them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from matryoshka.core import layout
from matryoshka.core.errors import IndexFormatError

from .index import Index


def verify_index(path: str | Path) -> dict:
    """Open the index with every checksum checked, then check the document offsets; raise on the first fault."""
    with Index(path, device="cpu", verify=True) as index:
        nbytes = 0
        for meta, shard in zip(index.manifest.shards, index.backend.shards):
            nbytes += sum(f["bytes"] for f in meta.files.values())
            if shard.doc_offsets is not None:
                off = shard.doc_offsets
                step = 1 << 20
                for lo in range(0, len(off) - 1, step):
                    block = np.asarray(off[lo:lo + step + 1])
                    if (np.diff(block) < 0).any():
                        raise IndexFormatError(f"shard {layout.shard_name(shard.number)}: document offsets go "
                                               f"backwards near row {lo}; rebuild that shard")
                if int(off[0]) != 0 or int(off[-1]) != len(shard.doc_bytes):
                    raise IndexFormatError(f"shard {layout.shard_name(shard.number)}: document offsets do not match "
                                           "the size of the text file; rebuild that shard")
        return {"shards": len(index.backend.shards), "count": index.count, "bytes": nbytes}
