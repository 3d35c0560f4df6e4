"""An index folder pinned by a directory descriptor: everything opened through it is of one generation.

`--overwrite` puts a new index in place by renaming folders and then deletes the old one
(`indexing.folder.swap_in`). A reader that resolved each file by its path could take some files from the old
folder and some from the new. Resolving every name relative to a descriptor of the folder first opened reads
that folder only: each file is then of the generation the reader started with, or gone (FileNotFoundError,
once the old folder is deleted), never of the next one. What is open or memory-mapped stays readable after
the folder is deleted.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from matryoshka.core.errors import IndexFormatError


class PinnedFolder:
    """A folder opened once; `open`, `stat`, `listdir` and `read_bytes` take names relative to it."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        try:
            self.fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise IndexFormatError(f"no index at {self.root}: the folder does not exist") from None
        except NotADirectoryError:
            raise IndexFormatError(f"no index at {self.root}: it is a file, not an index folder") from None

    def path(self, name: str = "") -> Path:
        """The path `name` had when the folder was pinned (for messages)."""
        return self.root / name if name else self.root

    def stat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def exists(self, name: str) -> bool:
        return self.stat(name) is not None

    def is_dir(self, name: str) -> bool:
        st = self.stat(name)
        return st is not None and (st.st_mode & 0o170000) == 0o040000

    def listdir(self, name: str) -> list[str]:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=self.fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def open(self, name: str) -> io.BufferedReader:
        """The file `name` opened for reading (FileNotFoundError once this generation is deleted)."""
        return os.fdopen(os.open(name, os.O_RDONLY, dir_fd=self.fd), "rb")

    def read_bytes(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def superseded(self) -> bool:
        """True when the path no longer leads to this folder: it was replaced by another index, or deleted."""
        mine = os.fstat(self.fd)
        try:
            now = os.stat(self.root)
        except FileNotFoundError:
            return True
        return mine.st_nlink == 0 or (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "PinnedFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()
