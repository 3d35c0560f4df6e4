"""The index folder during a build: its lock, what it already holds, and swapping a new index in."""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from matryoshka.core import layout
from matryoshka.core.errors import BuildRefused


class BuildLock:
    """An flock on DIR/.lock: released by the kernel when the process dies, so a killed build can resume."""

    def __init__(self, root: Path):
        try:
            self.f = open(root / layout.LOCK, "a+")
        except OSError as e:  # read-only file system or folder, or no permission
            raise BuildRefused(f"cannot write to {root} ({e.strerror}); it is read-only or not yours: build into "
                               "a folder you can write, or copy the index there first") from None
        try:
            fcntl.flock(self.f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.f.seek(0)
            holder = self.f.read().strip() or "another process"
            self.f.close()
            raise BuildRefused(f"another build is writing to {root} (or an add, delete, compact or tune; lock held "
                               f"by pid {holder}); wait for it to finish, or build into another folder") from None
        self.f.seek(0)
        self.f.truncate()
        self.f.write(str(os.getpid()))
        self.f.flush()

    def release(self) -> None:
        fcntl.flock(self.f, fcntl.LOCK_UN)
        self.f.close()


def prepare_folder(root: Path, identity: dict, overwrite: bool) -> str:
    """'fresh', 'resume', 'complete' or 'replace' (a finished index with other settings, and overwrite asked).

    Refuses a folder holding anything but a matryoshka index, and an index with other settings unless overwrite.
    An unfinished build of other input that wrote no shard (one that stopped on a bad input file, since repaired)
    kept nothing this input can use: it starts over. One of other settings is kept, to resume with its settings.
    """
    manifest, state = root / layout.MANIFEST, root / layout.BUILD_DIR / layout.BUILD_STATE
    ours = manifest.exists() or (root / layout.BUILD_DIR).exists() or (root / layout.SHARDS).exists()
    others = [p.name for p in root.iterdir() if p.name != layout.LOCK]
    if others and not ours:
        raise BuildRefused(f"{root} is not empty ({', '.join(sorted(others)[:5])}) and holds no matryoshka index; "
                           "build into an empty or new folder")
    recorded = None
    if manifest.exists():
        build = layout.read_json(manifest, "manifest").get("build")
        recorded = build.get("identity") if isinstance(build, dict) else None
    elif state.exists():
        recorded = layout.read_json(state, "build state").get("identity")
    if ours and recorded == identity and not (overwrite and manifest.exists()):
        return "complete" if manifest.exists() else "resume"
    other_input = isinstance(recorded, dict) and recorded.get("source") != identity.get("source")
    nothing_kept = (recorded is None or other_input) and not manifest.exists() and not _complete_shards(root)
    if ours and not nothing_kept:
        if not overwrite:
            what = "a finished index" if manifest.exists() else "an unfinished build"
            raise BuildRefused(f"{root} holds {what} made with other settings or input; pass --overwrite "
                               "(overwrite=True) to replace it, or build into another folder")
        if manifest.exists():
            return "replace"
    clear(root)
    return "fresh"


def _complete_shards(root: Path) -> bool:
    """Whether `root` holds a complete shard (a half-written one, `.tmp-*`, is rewritten anyway)."""
    shards = root / layout.SHARDS
    return shards.is_dir() and any((p / layout.SHARD_META).exists() for p in shards.iterdir()
                                   if not p.name.startswith(".tmp-"))


def clear(root: Path) -> None:
    for p in root.iterdir():
        if p.name != layout.LOCK:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def beside(root: Path, what: str) -> Path:
    return root.parent / f".{root.name}.{what}"


def swap_in(new: Path, root: Path) -> None:
    """Put a finished index in place of the old one: readers see the old index, then none, then the new one,
    never a mix (a reader that opened the old one keeps its open files)."""
    old = beside(root, "old")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(root, old)
    os.rename(new, root)
    layout.fsync_dir(root.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_swap(root: Path) -> None:
    """A build killed between the two renames of a swap left the finished index beside the folder."""
    new = beside(root, "new")
    if not root.exists() and (new / layout.MANIFEST).exists():
        os.rename(new, root)
        shutil.rmtree(beside(root, "old"), ignore_errors=True)


def prepare_beside(work: Path, identity: dict) -> str:
    """'fresh' or 'resume' for the folder a replacing build writes into; anything else there is cleared."""
    try:
        status = prepare_folder(work, identity, overwrite=True)
    except BuildRefused:
        status = "fresh"
    return "fresh" if status == "replace" else status
