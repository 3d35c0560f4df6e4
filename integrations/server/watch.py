"""Noticing, cheaply, that another process changed the index on disk.

Every change (`indexing.add`, `delete`, `compact`, a rebuild) ends by writing a new manifest beside the old and
renaming it over it, so the manifest file's inode, size and mtime change with it: one `stat` says whether to look
closer. The watch stats at most every `every` seconds, so a server answering thousands of searches a second
stats a few times a second.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

Stamp = tuple[int, int, int] | None  # (inode, size, mtime in ns) of the manifest; None while it is missing


def stamp(path: Path) -> Stamp:
    """The file's identity as a rename-over changes it."""
    try:
        st = os.stat(path)
    except OSError:  # missing (between the two renames of a rebuild's swap) or unreadable: a change too
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ManifestWatch:
    """The manifest at `path`, checked at most every `every` seconds. Not thread-safe: its caller serializes."""

    def __init__(self, path: Path, every: float = 0.5):
        self.path, self.every = path, every
        self.seen: Stamp = stamp(path)  # the stamp of the manifest the server holds
        self.latest: Stamp = self.seen  # the stamp `changed` found last
        self._next = time.monotonic() + every

    def changed(self) -> bool:
        """Whether the manifest differs from the one `seen` (False until `every` seconds after the last look)."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every
        self.latest = stamp(self.path)
        return self.latest != self.seen
