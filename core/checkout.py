"""Materialise a stored tree in a local directory, safely.

Every name was validated when its tree was read. On top of that, directories are opened relative to their
parent with O_NOFOLLOW, so no symlink (stored or planted) ever redirects a write outside the root. Each file is
written to a temporary name from verified chunks and renamed into place only when complete: a corrupt chunk
raises `CorruptObjectError` and leaves no corrupt byte behind.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

from .errors import DacflowError, UnsafePathError, UsageError
from .names import MAX_TREE_DEPTH, META_DIR
from .objects import DIR, LINK, MODE_EXEC, TABLE, TreeEntry
from .odb import ObjectDatabase
from .snapshot import ProgressFn

log = logging.getLogger(__name__)

_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass
class CheckoutStats:
    files: int = 0
    dirs: int = 0
    links: int = 0
    bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def to_json(self) -> dict[str, int]:
        return {"files": self.files, "dirs": self.dirs, "links": self.links, "bytes": self.bytes}


def is_empty_dir(path: str) -> bool:
    """True if `path` does not exist or is a directory with nothing in it but dacflow's metadata."""
    if not os.path.lexists(path):
        return True
    if not os.path.isdir(path):
        return False
    return all(name == META_DIR for name in os.listdir(path))


class Checkout:
    """Writes one tree into a directory; `force` replaces conflicting entries, others are left alone."""

    def __init__(
        self,
        odb: ObjectDatabase,
        *,
        force: bool = False,
        progress: ProgressFn | None = None,
        workers: int | None = None,
    ) -> None:
        self.odb = odb
        self.force = force
        self.progress = progress
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.stats = CheckoutStats()
        self._total = 0
        self._last = 0.0

    def run(self, tree_id: str, dest: str, total_bytes: int = 0) -> CheckoutStats:
        if os.path.lexists(dest) and not os.path.isdir(dest):
            raise UsageError(f"{dest} exists and is not a directory", path=dest)
        if not self.force and not is_empty_dir(dest):
            raise UsageError(f"{dest} is not empty; pass --force to write into it", path=dest)
        try:
            os.makedirs(dest, exist_ok=True)
            root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise UsageError(f"cannot write to {dest}: {exc.strerror}", path=dest) from None
        self._total = total_bytes
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="dacflow-checkout") as pool:
                self._write_tree(tree_id, root_fd, dest, pool)
        finally:
            os.close(root_fd)
        if self.progress:
            self.progress("write", self.stats.bytes, self._total)
        return self.stats

    def _write_tree(self, tree_id: str, dir_fd: int, where: str, pool: ThreadPoolExecutor, depth: int = 0) -> None:
        if depth > MAX_TREE_DEPTH:  # as snapshot and trees.walk: a hostile tree must not recurse without end
            raise UnsafePathError(f"tree at {where} is nested deeper than {MAX_TREE_DEPTH} levels", name=where)
        tree = self.odb.get_tree(tree_id)
        futures: list[Future[None]] = []
        subdirs: list[TreeEntry] = []
        for entry in tree:
            if entry.kind == DIR:
                subdirs.append(entry)
            elif entry.kind == LINK:
                self._write_link(entry, dir_fd, where)
            elif entry.kind == TABLE:
                subdirs.append(entry)
            else:
                futures.append(pool.submit(self._write_file, entry, dir_fd, where))
        try:
            for entry in subdirs:
                child_fd = self._open_subdir(entry.name, dir_fd, where)
                try:
                    if entry.kind == TABLE:
                        self._write_table(entry, child_fd, f"{where}/{entry.name}")
                    else:
                        self._write_tree(entry.ref, child_fd, f"{where}/{entry.name}", pool, depth + 1)
                finally:
                    os.close(child_fd)
                self.stats.dirs += 1
        finally:
            errors = [f.exception() for f in futures]
        for err in errors:
            if err is not None:
                raise err

    def _clear(self, name: str, dir_fd: int, where: str, keep_dir: bool) -> None:
        """Remove what stands at `name` (only with force), unless it is a real directory and `keep_dir`."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return
        if not self.force:
            raise UsageError(f"{where}/{name} already exists; pass --force to replace it", path=f"{where}/{name}")
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(f"{where}/{name}")
        else:
            os.unlink(name, dir_fd=dir_fd)

    def _open_subdir(self, name: str, dir_fd: int, where: str) -> int:
        self._clear(name, dir_fd, where, keep_dir=True)
        try:
            os.mkdir(name, 0o755, dir_fd=dir_fd)
        except FileExistsError:
            pass
        # O_NOFOLLOW: if anything swapped in a symlink meanwhile, this fails instead of following it.
        return os.open(name, _O_DIR, dir_fd=dir_fd)

    def _write_link(self, entry: TreeEntry, dir_fd: int, where: str) -> None:
        self._clear(entry.name, dir_fd, where, keep_dir=False)
        os.symlink(entry.ref, entry.name, dir_fd=dir_fd)
        self.stats.links += 1

    def _write_file(self, entry: TreeEntry, dir_fd: int, where: str) -> None:
        fobj = self.odb.get_file(entry.ref)

        def write(out: BinaryIO) -> None:
            for chunk in fobj.chunks:
                data = self.odb.get_chunk(chunk, entry.ref)  # verified (hash, size): raises before a bad byte
                out.write(data)
                self._advance(len(data))

        self._publish(entry.name, 0o755 if entry.mode == MODE_EXEC else 0o644, write, dir_fd, where)

    def _write_bytes(self, name: str, data: bytes, dir_fd: int, where: str) -> None:
        self._publish(name, 0o644, lambda out: out.write(data), dir_fd, where)
        self._advance(len(data))

    def _publish(self, name: str, mode: int, write: Callable[[BinaryIO], object], dir_fd: int, where: str) -> None:
        """Write a file under a temporary name and rename it into place only when complete."""
        tmp = f".dacflow-tmp-{uuid.uuid4().hex}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
        try:
            with open(fd, "wb", buffering=1 << 20, closefd=True) as out:
                write(out)
            self._clear(name, dir_fd, where, keep_dir=False)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException as exc:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            if isinstance(exc, DacflowError):
                raise type(exc)(f"{exc.message} (while writing {where}/{name})", **exc.data) from None
            raise
        with self.stats._lock:
            self.stats.files += 1

    def _write_table(self, entry: TreeEntry, dir_fd: int, where: str) -> None:
        """Materialise a table as a directory of Parquet files (one dataset for pandas, polars, DuckDB, Spark).

        Without changesets, each fragment whose schema is the table's is written as it is stored (verified on
        read); otherwise rows stream fragment by fragment with the changes applied. Memory stays bounded."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .tables.engine import TableIO, conform, schema_from_text

        table = self.odb.get_table(entry.ref)
        schema = schema_from_text(table.schema)
        io_ = TableIO(self.odb)
        names = iter(f"part-{n:05d}.parquet" for n in range(1 << 30))
        parts = 0
        if not table.changes:
            for frag in table.base:
                data = self.odb.get_bytes(frag.id)
                if not pq.read_schema(pa.BufferReader(data)).equals(schema):
                    data = _parquet(conform(io_.read_fragment(frag), schema))
                self._write_bytes(next(names), data, dir_fd, where)
                parts += 1
        else:
            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in io_.iter_batches(table):
                pending.append(batch)
                rows += batch.num_rows
                if rows >= 131072:
                    self._write_bytes(next(names), _parquet(pa.Table.from_batches(pending, schema)), dir_fd, where)
                    parts, pending, rows = parts + 1, [], 0
            if pending:
                self._write_bytes(next(names), _parquet(pa.Table.from_batches(pending, schema)), dir_fd, where)
                parts += 1
        if parts == 0:  # an empty table still says what its columns are
            self._write_bytes(next(names), _parquet(schema.empty_table()), dir_fd, where)
        info = {"key": list(table.key), "rows": table.rows, "table": entry.ref}
        self._write_bytes("_dacflow_table.json", json.dumps(info).encode(), dir_fd, where)

    def _advance(self, n: int) -> None:
        with self.stats._lock:
            self.stats.bytes += n
        if self.progress:
            now = time.monotonic()
            if now - self._last > 0.1:
                self._last = now
                self.progress("write", self.stats.bytes, self._total)


def _parquet(table: object) -> bytes:
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def write_checkout_marker(dest: str, url: str, ref: str, commit: str) -> None:
    """Record in DEST/.dacflow what was checked out, so `status` and `snapshot` know the branch."""
    meta = os.path.join(dest, META_DIR)
    os.makedirs(meta, exist_ok=True)
    with open(os.path.join(meta, "checkout.json"), "w") as f:
        json.dump({"repo": url, "ref": ref, "commit": commit}, f)


def read_checkout_marker(src: str) -> dict[str, str] | None:
    try:
        with open(os.path.join(src, META_DIR, "checkout.json")) as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else None
    except (OSError, ValueError):
        return None
