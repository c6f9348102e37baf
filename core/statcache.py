"""The stat cache: remembers (size, mtime, inode, ctime) → file object per snapshotted path.

It lets a re-snapshot hash only files whose stat changed, so its cost follows the change, not the tree. It
lives outside the data (in the user's cache directory, keyed by repository and source directory) and is only
a hint: an entry is used only if every object it names is still in the repository.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: Files modified this recently are not cached: a second write within the clock's resolution could keep
#: the same mtime and size, and the cache would then hide it ("racy" entries, as git calls them). A file system
#: that records sub-second times (its mtimes are not whole seconds) gets the short window, others the long one.
RACY_SECONDS = 2.0
RACY_SECONDS_FINE = 0.05


def cache_dir() -> str:
    base = os.environ.get("DACFLOW_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dacflow"
    )
    return base


@dataclass(frozen=True, slots=True)
class StatKey:
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass(frozen=True, slots=True)
class CachedFile:
    key: StatKey
    file_id: str
    chunk_ids: tuple[str, ...]


class StatCache:
    """A per-(repository, directory) table of path → CachedFile in SQLite; missing or broken caches are empty."""

    def __init__(self, repo_id: str, root: str, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.entries: dict[str, CachedFile] = {}
        self.path = ""
        if not enabled:
            return
        digest = hashlib.sha256(f"{repo_id}\0{os.path.realpath(root)}".encode()).hexdigest()[:32]
        self.path = os.path.join(cache_dir(), "statcache", f"{digest}.sqlite")
        try:
            if os.path.exists(self.path):
                with sqlite3.connect(self.path) as db:
                    for row in db.execute("SELECT path, size, mtime_ns, ino, ctime_ns, file_id, chunks FROM files"):
                        path, size, mtime_ns, ino, ctime_ns, file_id, chunks = row
                        ids = tuple(chunks.split(",")) if chunks else ()
                        self.entries[path] = CachedFile(StatKey(size, mtime_ns, ino, ctime_ns), file_id, ids)
        except sqlite3.Error as exc:
            log.warning("ignoring unreadable stat cache %s: %s", self.path, exc)
            self.entries = {}

    def lookup(self, path: str, key: StatKey) -> CachedFile | None:
        entry = self.entries.get(path)
        if entry is not None and entry.key == key:
            return entry
        return None

    def save(self, entries: dict[str, CachedFile], started: float) -> None:
        """Replace the cache with `entries`, leaving out racy ones (modified near `started`)."""
        if not self.enabled:
            return
        coarse_ns = int((started - RACY_SECONDS) * 1e9)
        fine_ns = int((started - RACY_SECONDS_FINE) * 1e9)
        rows = [
            (p, e.key.size, e.key.mtime_ns, e.key.ino, e.key.ctime_ns, e.file_id, ",".join(e.chunk_ids))
            for p, e in entries.items()
            if e.key.mtime_ns < (fine_ns if e.key.mtime_ns % 1_000_000_000 else coarse_ns)
        ]
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
            with sqlite3.connect(tmp) as db:
                db.execute(
                    "CREATE TABLE files (path TEXT PRIMARY KEY, size INT, mtime_ns INT, ino INT, ctime_ns INT, "
                    "file_id TEXT, chunks TEXT)"
                )
                db.executemany("INSERT INTO files VALUES (?,?,?,?,?,?,?)", rows)
            db.close()
            os.replace(tmp, self.path)
        except (sqlite3.Error, OSError) as exc:
            log.warning("could not save stat cache %s: %s", self.path, exc)
