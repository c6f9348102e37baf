"""Immutable, content-addressed objects: file, tree and commit (DESIGN §3), and their canonical encoding.

An object's id is the BLAKE3 hash of its canonical bytes (chunks: the raw content). Metadata objects are
canonical JSON (sorted keys, no spaces, UTF-8) with a `type` and a format version `v`; readers reject
versions they do not know and validate every field, because stored objects are untrusted input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import blake3

from .errors import CorruptObjectError, UnsupportedFormatError
from .names import check_names

HASH_ALGORITHM = "blake3"
OBJECT_VERSION = 1
_ID_RE = re.compile(r"^[0-9a-f]{64}$")

FILE, DIR, LINK, TABLE = "file", "dir", "link", "table"
KINDS = (FILE, DIR, LINK, TABLE)
#: The tree of an empty directory; every empty tree has this id.
MODE_FILE, MODE_EXEC, MODE_DIR, MODE_LINK = 0o100644, 0o100755, 0o040000, 0o120000


def hash_bytes(data: bytes | memoryview) -> str:
    """Return the object id (BLAKE3, 64 hex digits) of raw bytes."""
    return blake3.blake3(data).hexdigest()


def is_object_id(value: object) -> bool:
    """True if `value` looks like a full object id."""
    return isinstance(value, str) and bool(_ID_RE.fullmatch(value))  # fullmatch: "$" allows a final "\n"


def canonical_json(obj: Any) -> bytes:
    """Encode `obj` the one way dacflow hashes it."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, slots=True)
class ChunkRef:
    """One piece of a file: the chunk's id and its length in bytes."""

    id: str
    size: int


@dataclass(frozen=True, slots=True)
class FileObject:
    """A file's content: its size and ordered chunks."""

    size: int
    chunks: tuple[ChunkRef, ...]

    def encode(self) -> bytes:
        return canonical_json(
            {"type": "file", "v": OBJECT_VERSION, "size": self.size, "chunks": [[c.id, c.size] for c in self.chunks]}
        )


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One name in a directory. `ref` is an object id, or for a link the link's target."""

    name: str
    kind: str
    ref: str
    size: int
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.kind == DIR


@dataclass(frozen=True, slots=True)
class Tree:
    """One directory: entries sorted by name (by UTF-8 bytes)."""

    entries: tuple[TreeEntry, ...]

    def encode(self) -> bytes:
        return canonical_json(
            {
                "type": "tree",
                "v": OBJECT_VERSION,
                "entries": [[e.name, e.kind, e.ref, e.size, e.mode] for e in self.entries],
            }
        )

    def get(self, name: str) -> TreeEntry | None:
        """Find the entry called `name` (binary search)."""
        key = name.encode("utf-8", "surrogateescape")
        lo, hi = 0, len(self.entries)
        while lo < hi:
            mid = (lo + hi) // 2
            mid_key = self.entries[mid].name.encode("utf-8", "surrogateescape")
            if mid_key < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.entries) and self.entries[lo].name == name:
            return self.entries[lo]
        return None

    def __iter__(self) -> Iterator[TreeEntry]:
        return iter(self.entries)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    @classmethod
    def of(cls, entries: Mapping[str, TreeEntry] | list[TreeEntry]) -> Tree:
        """Build a tree from entries in any order."""
        items = list(entries.values()) if isinstance(entries, Mapping) else list(entries)
        items.sort(key=lambda e: e.name.encode("utf-8", "surrogateescape"))
        return cls(tuple(items))


EMPTY_TREE = Tree(())


def utc_now() -> str:
    """The time stamp format of commits: ISO 8601 UTC with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Commit:
    """A snapshot of a whole tree with its history and what made it (lineage lives in `meta`)."""

    tree: str
    parents: tuple[str, ...]
    message: str
    author: str
    time: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return canonical_json(
            {
                "type": "commit",
                "v": OBJECT_VERSION,
                "tree": self.tree,
                "parents": list(self.parents),
                "message": self.message,
                "author": self.author,
                "time": self.time,
                "meta": dict(self.meta),
            }
        )


@dataclass(frozen=True, slots=True)
class Fragment:
    """One Parquet object of a table: its id, row count, key range (inclusive) and stored size."""

    id: str
    rows: int
    min: tuple[Any, ...]
    max: tuple[Any, ...]
    size: int

    def to_json(self) -> list[Any]:
        return [self.id, self.rows, list(self.min), list(self.max), self.size]


@dataclass(frozen=True, slots=True)
class TableObject:
    """A table version: schema, primary key, a base run of key-sorted fragments cut at content-defined
    boundaries, and the changeset runs written since (each a key-sorted list of fragments with the rows'
    operation and before-images). See `dacflow.tables`."""

    schema: str  # Arrow IPC schema, base64
    key: tuple[str, ...]
    rows: int
    base: tuple[Fragment, ...]
    changes: tuple[tuple[Fragment, ...], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return canonical_json(
            {
                "type": "table",
                "v": OBJECT_VERSION,
                "schema": self.schema,
                "key": list(self.key),
                "rows": self.rows,
                "params": dict(self.params),
                "base": [f.to_json() for f in self.base],
                "changes": [[f.to_json() for f in run] for run in self.changes],
            }
        )

    @property
    def fragments(self) -> tuple[Fragment, ...]:
        """Every fragment of every run."""
        return self.base + tuple(f for run in self.changes for f in run)


def _fail(oid: str, what: str) -> CorruptObjectError:
    return CorruptObjectError(f"object {oid[:16]} is malformed: {what}", id=oid)


def decode(oid: str, data: bytes, expect: str | None = None) -> FileObject | Tree | Commit | TableObject:
    """Parse and validate a metadata object read from a store; raise `CorruptObjectError` if malformed."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _fail(oid, "not JSON") from None
    if not isinstance(doc, dict):
        raise _fail(oid, "not a JSON object")
    kind = doc.get("type")
    if expect is not None and kind != expect:
        raise _fail(oid, f"expected a {expect}, found {kind!r}")
    version = doc.get("v")
    if version != OBJECT_VERSION:
        raise UnsupportedFormatError(
            f"object {oid[:16]} has format version {version!r}; this dacflow reads version {OBJECT_VERSION} "
            "(upgrade dacflow)",
            id=oid,
            version=version,
        )
    try:
        if kind == "file":
            return _decode_file(oid, doc)
        if kind == "tree":
            return _decode_tree(oid, doc)
        if kind == "commit":
            return _decode_commit(oid, doc)
        if kind == "table":
            return _decode_table(oid, doc)
    except (TypeError, ValueError, KeyError) as exc:
        raise _fail(oid, f"bad field ({exc})") from None
    raise _fail(oid, f"unknown type {kind!r}")


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{value!r} is not a size")
    return value


def _oid(value: Any) -> str:
    if not is_object_id(value):
        raise ValueError(f"{value!r} is not an object id")
    return str(value)


def _decode_file(oid: str, doc: dict[str, Any]) -> FileObject:
    chunks = tuple(ChunkRef(_oid(c[0]), _int(c[1])) for c in doc["chunks"])
    size = _int(doc["size"])
    if sum(c.size for c in chunks) != size:
        raise _fail(oid, "chunk sizes do not add up to the file size")
    return FileObject(size, chunks)


def _decode_tree(oid: str, doc: dict[str, Any]) -> Tree:
    entries = []
    for raw in doc["entries"]:
        name, kind, ref, size, mode = raw
        if kind not in KINDS:
            raise _fail(oid, f"entry {name!r} has unknown kind {kind!r}")
        if kind == LINK:
            if not isinstance(ref, str) or "\x00" in ref or not ref:
                raise _fail(oid, f"link {name!r} has a bad target")
        else:
            _oid(ref)
        entries.append(TreeEntry(name, kind, ref, _int(size), _int(mode)))
    check_names((e.name for e in entries), where=f"tree {oid[:16]}")
    keys = [e.name.encode("utf-8", "surrogateescape") for e in entries]
    if keys != sorted(keys):
        raise _fail(oid, "entries are not sorted")
    return Tree(tuple(entries))


def _decode_commit(oid: str, doc: dict[str, Any]) -> Commit:
    meta = doc.get("meta", {})
    if not isinstance(meta, dict):
        raise ValueError("meta is not an object")
    for text in ("message", "author", "time"):
        if not isinstance(doc[text], str):
            raise ValueError(f"{text} is not a string")
    return Commit(
        tree=_oid(doc["tree"]),
        parents=tuple(_oid(p) for p in doc["parents"]),
        message=doc["message"],
        author=doc["author"],
        time=doc["time"],
        meta=meta,
    )


def _fragment(raw: Any) -> Fragment:
    fid, rows, lo, hi, size = raw
    if not isinstance(lo, list) or not isinstance(hi, list):
        raise ValueError("fragment key range is not a list")
    return Fragment(_oid(fid), _int(rows), tuple(lo), tuple(hi), _int(size))


def _decode_table(oid: str, doc: dict[str, Any]) -> TableObject:
    key = doc["key"]
    if not isinstance(key, list) or not key or not all(isinstance(k, str) and k for k in key):
        raise ValueError("key is not a list of column names")
    if not isinstance(doc["schema"], str):
        raise ValueError("schema is not a string")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise ValueError("params is not an object")
    return TableObject(
        schema=doc["schema"],
        key=tuple(key),
        rows=_int(doc["rows"]),
        base=tuple(_fragment(f) for f in doc["base"]),
        changes=tuple(tuple(_fragment(f) for f in run) for run in doc["changes"]),
        params=params,
    )
