"""The narrow store protocol every storage system implements (DESIGN §4).

A store is a prefix on one storage system holding opaque keys. Objects are written once; only refs change, and
only through `PutMode.if_match`. Retries, logging, read-only and fault injection are wrappers, not flags.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PutMode:
    """How a `put` treats an existing key: overwrite it, create only, or replace only a known version."""

    kind: str  # "overwrite" | "create" | "if_match"
    token: str | None = None

    @classmethod
    def if_match(cls, token: str) -> PutMode:
        """Replace the key only if its current version token equals `token`."""
        return cls("if_match", token)


OVERWRITE = PutMode("overwrite")
CREATE = PutMode("create")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What `head` and `list` tell about a key: its size, version token and modification time (epoch s)."""

    key: str
    size: int
    token: str
    mtime: float


@runtime_checkable
class Store(Protocol):
    """A flat key space on one storage system. Keys use '/' separators and never start with '/'."""

    url: str

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Return the bytes of `key` (or of the half-open `byte_range`); raise `KeyNotFoundError`."""
        ...

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """Return the bytes of `key` and the version token a later `PutMode.if_match` compares against."""
        ...

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        """Write `data` under `key` atomically and return its new version token.

        Raise `PreconditionFailedError` if `mode` is create and the key exists, or if_match and it changed.
        """
        ...

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        """Like `put`, reading the bytes from a local file; the file may be moved or deleted afterwards."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """Return what is known of `key` without reading it, or None if it does not exist."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every key under `prefix` (no order promised)."""
        ...

    def delete(self, key: str) -> None:
        """Delete `key`; deleting a missing key is not an error."""
        ...

    def staging_dir(self) -> str:
        """A local directory for temporary files that `put_file` can publish cheaply (same filesystem)."""
        ...


def default_staging_dir() -> str:
    """The staging directory for stores whose data is not on a local filesystem."""
    path = os.environ.get("DACFLOW_TMP") or os.path.join(
        os.environ.get("TMPDIR", "/tmp"), f"dacflow-staging-{os.getuid()}"
    )
    os.makedirs(path, exist_ok=True)
    return path
