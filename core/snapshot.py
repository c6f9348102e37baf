"""Turn a directory into content-addressed objects: chunks, files and one tree per directory.

Three phases: walk the directory (lstat only, symlinks never followed), chunk and hash the files whose stat
changed since the last snapshot (in parallel threads; BLAKE3 and FastCDC release the GIL), then build the trees
bottom-up. Objects go through one `PackWriter`; nothing is readable before the writer publishes it, and the
caller writes the commit only after that (write order of DESIGN §5.2).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from .chunking import ChunkerParams, chunk_bytes, file_chunks
from .errors import UnsafePathError, UsageError
from .names import MAX_TREE_DEPTH, META_DIR, check_names
from .objects import (
    DIR,
    FILE,
    LINK,
    MODE_DIR,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    ChunkRef,
    FileObject,
    Tree,
    TreeEntry,
    hash_bytes,
)
from .odb import KIND_CHUNK, PackWriter
from .statcache import CachedFile, StatCache, StatKey

log = logging.getLogger(__name__)

#: A file up to this size is one job for a worker; a larger one is cut into batches of about this size.
BATCH_BYTES = 4 << 20

#: progress(phase, done, total): phases "scan" (entries), "hash" (bytes).
ProgressFn = Callable[[str, int, int], None]


@dataclass
class SnapshotStats:
    """What a snapshot read and wrote; every byte count is of raw (uncompressed) content unless named stored."""

    files: int = 0
    dirs: int = 0
    links: int = 0
    skipped: int = 0
    bytes_total: int = 0
    files_hashed: int = 0
    files_cached: int = 0
    bytes_hashed: int = 0
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new: int = 0
    bytes_reused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def add_chunk(self, size: int, new: bool) -> None:
        with self._lock:
            if new:
                self.chunks_new += 1
                self.bytes_new += size
            else:
                self.chunks_reused += 1
                self.bytes_reused += size


def store_chunks(
    writer: PackWriter,
    chunks: object,
    stats: SnapshotStats | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> FileObject:
    """Hash and store a sequence of chunk buffers; return the file object that lists them."""
    refs: list[ChunkRef] = []
    size = 0
    for data in chunks:  # type: ignore[attr-defined]
        oid = hash_bytes(data)
        n = len(data)
        new = writer.add(oid, data, KIND_CHUNK)
        if stats is not None:
            stats.add_chunk(n, new)
        refs.append(ChunkRef(oid, n))
        size += n
        if on_bytes is not None:
            on_bytes(n)
    return FileObject(size, tuple(refs))


def store_bytes(writer: PackWriter, data: bytes, params: ChunkerParams, stats: SnapshotStats | None = None) -> str:
    """Store an in-memory file's content; return its file object id."""
    return writer.add_object(store_chunks(writer, chunk_bytes(data, params), stats))


@dataclass
class _Dir:
    rel: str
    entries: dict[str, TreeEntry | None] = field(default_factory=dict)
    children: list[_Dir] = field(default_factory=list)


@dataclass
class _Pending:
    dir: _Dir
    name: str
    rel: str
    path: str
    key: StatKey
    mode: int


class TreeBuilder:
    """Builds and stores the tree of one local directory."""

    def __init__(
        self,
        writer: PackWriter,
        params: ChunkerParams,
        cache: StatCache,
        *,
        progress: ProgressFn | None = None,
        workers: int | None = None,
    ) -> None:
        self.writer = writer
        self.params = params
        self.cache = cache
        self.progress = progress
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.stats = SnapshotStats()
        self.new_cache: dict[str, CachedFile] = {}
        self._pending: list[_Pending] = []
        self._hashed = 0
        self._hash_total = 0
        self._progress_lock = threading.Lock()
        self._last_report = 0.0
        self._exclude: frozenset[str] = frozenset()

    def build(self, root: str, exclude: frozenset[str] = frozenset()) -> str:
        """Snapshot `root` (less the files in `exclude`, absolute paths); return the root tree id.

        The caller closes the writer before committing."""
        if not os.path.isdir(root):
            raise UsageError(f"{root} is not a directory", path=root)
        self._exclude = exclude
        top = _Dir("")
        self._walk(root, top, 0)
        self._hash_pending()
        return self._store_tree(top)[0]

    # -- phase 1: walk ---------------------------------------------------------------------------------------
    def _walk(self, path: str, node: _Dir, depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            raise UnsafePathError(f"{path} is nested deeper than {MAX_TREE_DEPTH} levels", name=path)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            raise UsageError(f"cannot read directory {path}: permission denied", path=path) from None
        except OSError as exc:
            raise UsageError(f"cannot read directory {path}: {exc.strerror}", path=path) from None
        names = [e.name for e in entries if not (depth == 0 and e.name == META_DIR)]
        try:
            check_names(names, where=f"directory {path}")
        except UnsafePathError as exc:
            raise UnsafePathError(f"cannot snapshot {path}: {exc.message}", name=exc.data.get("name")) from None
        for entry in entries:
            if depth == 0 and entry.name == META_DIR:
                continue
            rel = f"{node.rel}/{entry.name}" if node.rel else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished while we walked
            if stat.S_ISDIR(st.st_mode):
                child = _Dir(rel)
                node.children.append(child)
                node.entries[entry.name] = None  # filled in phase 3
                self._walk(entry.path, child, depth + 1)
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(entry.path)
                node.entries[entry.name] = TreeEntry(entry.name, LINK, target, len(target.encode()), MODE_LINK)
                self.stats.links += 1
            elif stat.S_ISREG(st.st_mode):
                if entry.path not in self._exclude:
                    self._add_file(node, entry.name, rel, entry.path, st)
            else:
                log.warning("skipping %s: not a regular file, directory or link", entry.path)
                self.stats.skipped += 1
        self._report("scan", self.stats.files, 0)

    def _add_file(self, node: _Dir, name: str, rel: str, path: str, st: os.stat_result) -> None:
        key = StatKey.of(st)
        mode = MODE_EXEC if st.st_mode & 0o111 else MODE_FILE
        self.stats.files += 1
        self.stats.bytes_total += st.st_size
        cached = self.cache.lookup(rel, key)
        if cached is not None and self._still_stored(cached):
            node.entries[name] = TreeEntry(name, FILE, cached.file_id, key.size, mode)
            self.new_cache[rel] = cached
            self.stats.files_cached += 1
            with self.stats._lock:
                self.stats.chunks_reused += len(cached.chunk_ids)
                self.stats.bytes_reused += key.size
            return
        node.entries[name] = None
        self._pending.append(_Pending(node, name, rel, path, key, mode))
        self._hash_total += st.st_size

    def _still_stored(self, cached: CachedFile) -> bool:
        has = self.writer.contains
        return has(cached.file_id) and all(has(c) for c in cached.chunk_ids)

    # -- phase 2: hash ---------------------------------------------------------------------------------------
    def _hash_pending(self) -> None:
        """Chunk, hash and store every changed file. Small files go to the worker threads whole; a large file is
        cut into chunks here, window by window, while the workers hash, compress and write batches of its
        chunks — so one big file keeps every core busy (FastCDC, BLAKE3, zstd and pwrite release the GIL)."""
        if not self._pending:
            return
        self._report("hash", 0, self._hash_total, force=True)
        jobs = sorted(self._pending, key=lambda p: -p.key.size)  # largest first
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dacflow-hash") as pool:
            small = [pool.submit(self._hash_small, j) for j in jobs if j.key.size <= BATCH_BYTES]
            for job in jobs:
                if job.key.size > BATCH_BYTES:
                    self._hash_large(job, pool)
            for fut in small:
                fut.result()
        self._report("hash", self._hashed, self._hash_total, force=True)

    def _open(self, job: _Pending) -> int:
        try:
            return os.open(job.path, os.O_RDONLY | os.O_NOFOLLOW)
        except PermissionError:
            raise UsageError(f"cannot read {job.path}: permission denied", path=job.path) from None
        except OSError as exc:
            raise UsageError(f"cannot read {job.path}: {exc.strerror}", path=job.path) from None

    def _store_batch(self, chunks: list[memoryview]) -> list[ChunkRef]:
        refs = []
        for data in chunks:
            oid = hash_bytes(data)
            self.stats.add_chunk(len(data), self.writer.add(oid, data, KIND_CHUNK))
            refs.append(ChunkRef(oid, len(data)))
        self._on_bytes(sum(len(d) for d in chunks))
        return refs

    def _hash_small(self, job: _Pending) -> None:
        fd = self._open(job)
        try:
            refs = self._store_batch(list(file_chunks(fd, self.params)))
            after = StatKey.of(os.fstat(fd))
        finally:
            os.close(fd)
        self._finish(job, refs, after)

    def _hash_large(self, job: _Pending, pool: ThreadPoolExecutor) -> None:
        fd = self._open(job)
        inflight: deque[Future[list[ChunkRef]]] = deque()
        refs: list[ChunkRef] = []
        try:
            batch: list[memoryview] = []
            size = 0
            for data in file_chunks(fd, self.params):
                batch.append(data)
                size += len(data)
                if size >= BATCH_BYTES:
                    inflight.append(pool.submit(self._store_batch, batch))
                    batch, size = [], 0
                    while len(inflight) > 2 * self.workers:  # bounded memory: a few windows in flight
                        refs += inflight.popleft().result()
            if batch:
                inflight.append(pool.submit(self._store_batch, batch))
            while inflight:
                refs += inflight.popleft().result()
            after = StatKey.of(os.fstat(fd))
        finally:
            for fut in inflight:
                fut.cancel()
            os.close(fd)
        self._finish(job, refs, after)

    def _finish(self, job: _Pending, refs: list[ChunkRef], after: StatKey) -> None:
        fobj = FileObject(sum(r.size for r in refs), tuple(refs))
        file_id = self.writer.add_object(fobj)
        job.dir.entries[job.name] = TreeEntry(job.name, FILE, file_id, fobj.size, job.mode)
        with self.stats._lock:
            self.stats.files_hashed += 1
            self.stats.bytes_hashed += fobj.size
            if after == job.key and fobj.size == job.key.size:
                self.new_cache[job.rel] = CachedFile(job.key, file_id, tuple(c.id for c in fobj.chunks))
            else:
                log.warning("%s changed while it was being read; its snapshot is what was read", job.path)

    def _on_bytes(self, n: int) -> None:
        with self._progress_lock:
            self._hashed += n
        self._report("hash", self._hashed, self._hash_total)

    def _report(self, phase: str, done: int, total: int, *, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_report > 0.1:
            self._last_report = now
            self.progress(phase, done, total)

    # -- phase 3: trees --------------------------------------------------------------------------------------
    def _store_tree(self, node: _Dir) -> tuple[str, int]:
        for child in node.children:
            name = child.rel.rsplit("/", 1)[-1]
            tree_id, size = self._store_tree(child)
            node.entries[name] = TreeEntry(name, DIR, tree_id, size, MODE_DIR)
        tree = Tree.of([e for e in node.entries.values() if e is not None])
        self.stats.dirs += 1
        return self.writer.add_object(tree), tree.size
