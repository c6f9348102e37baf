"""Repository locks kept in the store: many writers share, gc is exclusive.

A writer (snapshot, commit) may reuse an old object that nothing references yet; gc must not delete it
meanwhile. So writers hold a shared lock and gc an exclusive one. Each party first writes its own lock and then
lists the others, so of two racing parties at least one sees the other and backs off. A lock whose process is
gone (same host) or that is older than `STALE_SECONDS` is ignored and removed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from types import TracebackType

from .errors import KeyNotFoundError, RepositoryLockedError
from .stores.base import CREATE, Store

log = logging.getLogger(__name__)

PREFIX = "locks/"
STALE_SECONDS = 6 * 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RepoLock:
    """A shared or exclusive lock on a repository, used as a context manager."""

    def __init__(self, store: Store, *, exclusive: bool, purpose: str) -> None:
        self.store = store
        self.exclusive = exclusive
        self.purpose = purpose
        self.key = f"{PREFIX}{uuid.uuid4().hex}"

    def __enter__(self) -> RepoLock:
        doc = {
            "exclusive": self.exclusive,
            "purpose": self.purpose,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "time": time.time(),
        }
        self.store.put(self.key, json.dumps(doc).encode(), CREATE)
        try:
            for key, other in self._others():
                if self.exclusive or other.get("exclusive"):
                    raise RepositoryLockedError(
                        f"repository is locked by {other.get('purpose', 'another process')} "
                        f"(pid {other.get('pid')} on {other.get('host')}); try again when it has finished",
                        lock=key,
                    )
        except BaseException:
            self.store.delete(self.key)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.store.delete(self.key)

    def _others(self) -> list[tuple[str, dict[str, object]]]:
        out = []
        host = socket.gethostname()
        for info in self.store.list(PREFIX):
            if info.key == self.key:
                continue
            try:
                doc = json.loads(self.store.get(info.key))
            except (KeyNotFoundError, ValueError):
                continue
            pid, when = doc.get("pid"), float(doc.get("time", 0))
            dead = doc.get("host") == host and isinstance(pid, int) and not _alive(pid)
            if dead or time.time() - when > STALE_SECONDS:
                log.warning("removing stale lock %s of pid %s", info.key, pid)
                self.store.delete(info.key)
                continue
            out.append((info.key, doc))
        return out
