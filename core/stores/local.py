"""The local directory store: the embedded default, needing no cloud and no server.

Writes are the textbook atomic save (temp file in the same filesystem → fsync → link/rename → fsync the
directory). Create-only uses `os.link`, which fails atomically if the key exists. Compare-and-swap takes an
`O_EXCL` lock file beside the key, re-reads the current version under the lock and publishes with
`os.replace`. A lock whose owner died is detected with `flock` (the kernel drops it when a process dies), so a
SIGKILL never leaves a ref locked forever.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import blake3

from ..errors import KeyNotFoundError, PreconditionFailedError, StoreError
from .base import OVERWRITE, ObjectInfo, PutMode

log = logging.getLogger(__name__)

_TMP = "tmp"
_OPEN_FILES = 64
_LOCK_SUFFIX = ".lock"
_LOCK_WAIT_SECONDS = 30.0


_SMALL = 1 << 20


def content_token(data: bytes | memoryview) -> str:
    """The version token of a small key: a hash of the content, so equal content means equal version."""
    return blake3.blake3(data).hexdigest(length=16)


def _stat_token(st: os.stat_result) -> str:
    return f"s{st.st_size}-{st.st_ino}-{st.st_mtime_ns}"


def file_token(path: str) -> str:
    """The version token of the file at `path`: a content hash up to 1 MiB (refs, configs), else its identity.

    Large keys are write-once packs, for which size, inode and mtime identify a version; small keys (refs) are
    compared by content so an inode reused within one clock tick can never fake an unchanged version.
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if st.st_size > _SMALL:
            return _stat_token(st)
        return content_token(f.read())


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A store in a local directory; keys map to files below `root`."""

    def __init__(self, root: str, *, create: bool = False) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = "file://" + self.root
        if create:
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create directory {self.root}: {exc.strerror}", path=self.root) from None
        self._tmp = os.path.join(self.root, _TMP)
        self._fds: OrderedDict[str, tuple[int, tuple[int, int]]] = OrderedDict()
        self._retired: list[int] = []
        self._fd_lock = threading.Lock()

    def __del__(self) -> None:
        for fd in [fd for fd, _ in getattr(self, "_fds", {}).values()] + getattr(self, "_retired", []):
            try:
                os.close(fd)
            except OSError:
                pass

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **options: object) -> LocalStore:
        """Build the store for `file:///abs/path` or a plain path."""
        path = url[len("file://") :] if url.startswith("file://") else url
        return cls(path, create=create)

    def __repr__(self) -> str:
        return f"LocalStore({self.root!r})"

    # -- helpers ---------------------------------------------------------------------------------------------
    def _fd(self, path: str) -> int:
        """An open descriptor for `path`, reused while the path still names the same file (inode)."""
        st = os.stat(path)
        with self._fd_lock:
            cached = self._fds.get(path)
            if cached is not None and cached[1] == (st.st_ino, st.st_dev):
                self._fds.move_to_end(path)
                return cached[0]
            fd = os.open(path, os.O_RDONLY)
            if cached is not None:
                self._retired.append(cached[0])  # another thread may still be reading through it
            self._fds[path] = (fd, (st.st_ino, st.st_dev))
            while len(self._fds) > _OPEN_FILES:
                self._retired.append(self._fds.popitem(last=False)[1][0])
            while len(self._retired) > _OPEN_FILES:
                os.close(self._retired.pop(0))
            return fd

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if (
            not key
            or key.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or "\x00" in key
            or parts[0] == _TMP
            or key.endswith(_LOCK_SUFFIX)
        ):
            raise StoreError(f"invalid store key {key!r}", key=key)
        return os.path.join(self.root, *parts)

    def staging_dir(self) -> str:
        """Temporary files live inside the store so that publishing them is a rename, not a copy."""
        try:
            os.makedirs(self._tmp, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write to {self.root}: {exc.strerror}", path=self.root) from None
        return self._tmp

    def _temp_path(self) -> str:
        return os.path.join(self.staging_dir(), f"{uuid.uuid4().hex}.tmp")

    def _write_temp(self, data: bytes | memoryview) -> str:
        tmp = self._temp_path()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            written = 0
            while written < len(view):
                written += os.write(fd, view[written:])
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        return tmp

    def _publish(self, tmp: str, key: str, mode: PutMode) -> str:
        path = self._path(key)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        try:
            if mode.kind == "create":
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise PreconditionFailedError(f"key {key!r} already exists", key=key) from None
                os.unlink(tmp)
            elif mode.kind == "overwrite":
                os.replace(tmp, path)
            else:
                with self._locked(path, key):
                    try:
                        current = file_token(path)
                    except FileNotFoundError:
                        raise PreconditionFailedError(f"key {key!r} does not exist", key=key) from None
                    if current != mode.token:
                        raise PreconditionFailedError(
                            f"key {key!r} changed", key=key, expected=mode.token, actual=current
                        )
                    os.replace(tmp, path)
            _fsync_dir(parent)
            return file_token(path)
        finally:
            _unlink_quiet(tmp)

    @contextmanager
    def _locked(self, path: str, key: str) -> Iterator[None]:
        """Hold `path.lock`: created with O_EXCL, flock-ed while held, broken only if its owner is dead."""
        lock = path + _LOCK_SUFFIX
        deadline = time.monotonic() + _LOCK_WAIT_SECONDS
        delay = 0.0005
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _break_if_stale(lock):
                    continue
                if time.monotonic() > deadline:
                    raise StoreError(f"key {key!r} stayed locked for {_LOCK_WAIT_SECONDS:.0f}s", key=key) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, f"{os.getpid()}\n".encode())
            break
        try:
            yield
        finally:
            os.unlink(lock)
            os.close(fd)

    # -- protocol --------------------------------------------------------------------------------------------
    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Read a key, or a half-open byte range of it (ranges through a cache of open files: `pread`)."""
        path = self._path(key)
        try:
            if byte_range is not None:
                start, end = byte_range
                return os.pread(self._fd(path), end - start, start)
            with open(path, "rb", buffering=0) as f:
                return f.read()
        except FileNotFoundError:
            raise KeyNotFoundError(f"no key {key!r} in {self.url}", key=key) from None
        except IsADirectoryError:
            raise KeyNotFoundError(f"no key {key!r} in {self.url}", key=key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", key=key) from None

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """Read a key with the token that a compare-and-swap of it must present."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):
            raise KeyNotFoundError(f"no key {key!r} in {self.url}", key=key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", key=key) from None
        return data, (_stat_token(st) if st.st_size > _SMALL else content_token(data))

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        """Atomically write a key (temp → fsync → link or rename → fsync dir)."""
        self._path(key)
        try:
            tmp = self._write_temp(data)
            return self._publish(tmp, key, mode)
        except PreconditionFailedError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot write {key!r} in {self.root}: {exc.strerror}", key=key) from None

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        """Publish a local file; a file already in `staging_dir()` is moved, not copied."""
        self._path(key)
        try:
            if os.path.dirname(os.path.abspath(path)) != self._tmp:
                with open(path, "rb") as f:
                    return self.put(key, f.read(), mode)
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return self._publish(path, key, mode)
        except PreconditionFailedError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot write {key!r} in {self.root}: {exc.strerror}", key=key) from None

    def head(self, key: str) -> ObjectInfo | None:
        """Stat a key (a small key is read to hash its content for the token)."""
        path = self._path(key)
        try:
            st = os.stat(path)
            token = file_token(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(f"cannot stat {path}: {exc.strerror}", key=key) from None
        return ObjectInfo(key, st.st_size, token, st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walk the directory below `prefix`; tokens are left empty (ask `head` for one)."""
        base = self.root if not prefix.strip("/") else os.path.join(self.root, *prefix.strip("/").split("/"))
        if not os.path.isdir(base):
            base = os.path.dirname(base)
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == _TMP or rel_dir.startswith(_TMP + os.sep):
                dirnames[:] = []
                continue
            for name in filenames:
                if name.endswith(_LOCK_SUFFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, "", st.st_mtime)

    def delete(self, key: str) -> None:
        """Remove a key if present."""
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror}", key=key) from None

    def temp_files(self) -> Iterator[tuple[str, float]]:
        """Yield (path, mtime) of temporary files a crashed writer may have left behind (for gc)."""
        if not os.path.isdir(self._tmp):
            return
        for entry in os.scandir(self._tmp):
            try:
                yield entry.path, entry.stat().st_mtime
            except FileNotFoundError:
                continue


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _break_if_stale(lock: str) -> bool:
    """Remove `lock` if no live process holds its flock; return True if the caller should retry at once."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False  # a live owner holds it
            raise
        # We hold the flock, so nobody else can be breaking this same file; make sure the path still names it.
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return True
        if not same:
            return True
        # An owner between O_EXCL and flock also looks free: give it a moment before judging it dead.
        if time.time() - os.fstat(fd).st_mtime < 1.0 and os.fstat(fd).st_size == 0:
            return False
        log.warning("breaking stale lock %s left by a dead process", lock)
        os.unlink(lock)
        return True
    finally:
        os.close(fd)
