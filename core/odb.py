"""The object database: content-addressed objects stored in packs on any store (DESIGN §3, §5).

Objects (chunks and metadata) are appended to a pack of about `pack_size` bytes. A finished pack is published
under `packs/<id>` and only then its index under `index/<id>`; an object is readable once its index is. The pack
id is the hash of its index, which names every object it holds and where. Every read re-hashes the object and
never returns bytes that do not match their id.

Pack layout (version 1): `DACPACK\\x01`, then blobs (one codec byte + payload each), then the index as zstd
JSON, its length as 8 bytes little-endian, and `DACPEND\\x01`. The separate index object repeats that index
so that a reader (or a transfer) learns what a store holds without reading packs.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import zstandard

from .errors import (
    CorruptObjectError,
    KeyNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    UnsupportedFormatError,
)
from .objects import ChunkRef, Commit, FileObject, TableObject, Tree, canonical_json, decode, hash_bytes, is_object_id
from .stores.base import CREATE, Store

log = logging.getLogger(__name__)
T = TypeVar("T")

PACK_MAGIC = b"DACPACK\x01"
PACK_END = b"DACPEND\x01"
PACK_VERSION = 1
CODEC_RAW, CODEC_ZSTD = 0, 1
KIND_CHUNK, KIND_META = "c", "m"

_tls = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    key = f"c{level}"
    comp = getattr(_tls, key, None)
    if comp is None:
        comp = zstandard.ZstdCompressor(level=level)
        setattr(_tls, key, comp)
    return comp


def _decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_tls, "d", None)
    if dec is None:
        dec = _tls.d = zstandard.ZstdDecompressor()
    return dec


def _decompress(payload: bytes | memoryview, limit: int) -> bytes:
    """zstd-decompress at most `limit` bytes. The content size in a frame header is untrusted: zstd would
    allocate it before reading anything (a single flipped bit can ask for exabytes: MemoryError)."""
    if zstandard.frame_content_size(payload) > limit:
        raise zstandard.ZstdError("frame header claims more than the size limit")
    return _decompressor().decompress(payload, max_output_size=limit)


def encode_blob(payload: bytes | memoryview, level: int | None) -> tuple[bytes, bytes | memoryview]:
    """Return (codec byte, stored payload): zstd at `level` when it saves at least 5%, else raw."""
    if level is not None and len(payload) > 64:
        packed = _compressor(level).compress(payload)
        if len(packed) < len(payload) * 0.95:
            return bytes([CODEC_ZSTD]), packed
    return bytes([CODEC_RAW]), payload


def decode_blob(oid: str, stored: bytes, where: str) -> bytes:
    """Undo `encode_blob` and verify the hash; raise `CorruptObjectError` naming the object and pack."""
    if not stored:
        raise CorruptObjectError(f"object {oid} in {where} is empty (truncated)", id=oid, where=where)
    codec, payload = stored[0], memoryview(stored)[1:]
    try:
        if codec == CODEC_RAW:
            raw = bytes(payload)
        elif codec == CODEC_ZSTD:
            raw = _decompress(payload, 1 << 31)
        else:
            raise CorruptObjectError(f"object {oid} in {where} has unknown codec {codec}", id=oid, where=where)
    except zstandard.ZstdError:
        raise CorruptObjectError(f"object {oid} in {where} does not decompress", id=oid, where=where) from None
    if hash_bytes(raw) != oid:
        raise CorruptObjectError(f"object {oid} in {where} does not match its hash", id=oid, where=where)
    return raw


@dataclass(frozen=True, slots=True)
class Location:
    """Where an object's stored bytes are: pack id, offset, length (codec byte included), kind."""

    pack: str
    offset: int
    length: int
    kind: str


def pack_key(pack_id: str) -> str:
    return f"packs/{pack_id[:2]}/{pack_id}"


def index_key(pack_id: str) -> str:
    return f"index/{pack_id}"


def encode_index(entries: list[list[object]], created: float) -> tuple[str, bytes]:
    """Return (pack id, stored index bytes) for a pack's entries [[id, kind, offset, length], ...]."""
    body = canonical_json({"type": "index", "v": PACK_VERSION, "entries": entries})
    pack_id = hash_bytes(body)
    doc = canonical_json({"type": "index", "v": PACK_VERSION, "pack": pack_id, "created": created, "entries": entries})
    return pack_id, _compressor(3).compress(doc)


def decode_index(key: str, data: bytes) -> tuple[str, float, list[tuple[str, Location]]]:
    """Parse and check an index object; the pack id must be the hash of the entries it lists."""
    try:
        doc = json.loads(_decompress(data, 1 << 30))
        version = doc.get("v")
        if version != PACK_VERSION:
            raise UnsupportedFormatError(
                f"index {key} has format version {version!r}; this dacflow reads {PACK_VERSION} (upgrade dacflow)",
                key=key,
            )
        entries = doc["entries"]
        pack_id = doc["pack"]
        body = canonical_json({"type": "index", "v": PACK_VERSION, "entries": entries})
        if hash_bytes(body) != pack_id:
            raise CorruptObjectError(f"index {key} does not match its pack id", key=key)
        out = []
        for oid, kind, offset, length in entries:
            if not is_object_id(oid) or kind not in (KIND_CHUNK, KIND_META):
                raise ValueError("bad entry")
            out.append((oid, Location(pack_id, int(offset), int(length), kind)))
        return pack_id, float(doc.get("created", 0.0)), out
    except (UnsupportedFormatError, CorruptObjectError):
        raise
    except (ValueError, KeyError, TypeError, zstandard.ZstdError):
        raise CorruptObjectError(f"index {key} is malformed", key=key) from None


class ObjectDatabase:
    """Reads and writes objects of one repository; keeps the merged pack index in memory."""

    def __init__(self, store: Store, *, pack_size: int, compression_level: int | None) -> None:
        self.store = store
        self.pack_size = pack_size
        self.compression_level = compression_level
        self._index: dict[str, Location] = {}
        self._packs: dict[str, float] = {}  # pack id -> created
        self._lock = threading.Lock()
        self._loaded = False
        self._overlay: dict[str, bytes] = {}
        self._by_pack: dict[str, dict[str, Location]] | None = None

    # -- index -----------------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Load indexes published since the last call; return how many were new."""
        new = 0
        for info in self.store.list("index/"):
            pack_id = info.key.rsplit("/", 1)[-1]
            if pack_id in self._packs or not is_object_id(pack_id):
                continue
            try:
                pid, created, entries = self._read_index(info.key)
            except KeyNotFoundError:
                continue  # deleted by gc meanwhile
            except CorruptObjectError as exc:
                log.warning("skipping %s", exc)  # not remembered: the next refresh reads it again
                continue
            with self._lock:
                self._packs[pid] = created or info.mtime
                for oid, loc in entries:
                    self._index.setdefault(oid, loc)
                self._by_pack = None
            new += 1
        self._loaded = True
        return new

    def _read_index(self, key: str) -> tuple[str, float, list[tuple[str, Location]]]:
        """Read and decode an index, reading once more if it arrives corrupt (a flip on the wire)."""
        try:
            return decode_index(key, self.store.get(key))
        except CorruptObjectError:
            return decode_index(key, self.store.get(key))

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh()

    def locate(self, oid: str, *, refresh: bool = True) -> Location | None:
        """Where `oid` is stored, loading newly published indexes once if it is not known yet."""
        self._ensure_loaded()
        loc = self._index.get(oid)
        if loc is None and refresh and self.refresh():
            loc = self._index.get(oid)
        return loc

    def has(self, oid: str) -> bool:
        """True if the object is published (its pack index is loaded); does not ask the store again."""
        self._ensure_loaded()
        return oid in self._index

    def packs(self) -> dict[str, float]:
        """Known packs and their creation times."""
        self._ensure_loaded()
        return dict(self._packs)

    def entries(self) -> Iterator[tuple[str, Location]]:
        """Every known object and its location."""
        self._ensure_loaded()
        yield from list(self._index.items())

    def objects_by_pack(self) -> dict[str, dict[str, Location]]:
        """Known objects grouped by the pack that serves them (computed once per loaded index set)."""
        self._ensure_loaded()
        with self._lock:
            if self._by_pack is None:
                groups: dict[str, dict[str, Location]] = {}
                for oid, loc in self._index.items():
                    groups.setdefault(loc.pack, {})[oid] = loc
                self._by_pack = groups
            return self._by_pack

    def reset(self) -> None:
        """Forget every loaded index; the next read loads them again (after gc rewrote packs)."""
        with self._lock:
            self._index, self._packs, self._loaded, self._by_pack = {}, {}, False, None

    def forget_packs(self, pack_ids: Iterable[str]) -> None:
        """Drop packs from the in-memory index (after gc deleted them)."""
        gone = set(pack_ids)
        with self._lock:
            for pid in gone:
                self._packs.pop(pid, None)
            for oid in [o for o, loc in self._index.items() if loc.pack in gone]:
                del self._index[oid]
            self._by_pack = None

    # -- reading ---------------------------------------------------------------------------------------------
    def read_stored(self, oid: str, loc: Location) -> bytes:
        """Read an object's stored bytes (codec byte + payload) from its pack."""
        return self.store.get(pack_key(loc.pack), (loc.offset, loc.offset + loc.length))

    def with_overlay(self, objects: dict[str, bytes]) -> ObjectDatabase:
        """A view that reads `objects` (id -> raw bytes, already verified) before the stored ones."""
        view = copy.copy(self)
        view._overlay = objects
        return view

    def get_bytes(self, oid: str) -> bytes:
        """Return an object's raw bytes, verified against its id."""
        if oid in self._overlay:
            return self._overlay[oid]
        loc = self.locate(oid)
        if loc is None:
            raise ObjectNotFoundError(f"object {oid} is missing from {self.store.url}", id=oid)
        try:
            stored = self.read_stored(oid, loc)
        except KeyNotFoundError:
            # The pack may have been repacked by gc: reload indexes and try the new location once.
            self.forget_packs([loc.pack])
            self.refresh()
            loc2 = self._index.get(oid)
            try:
                if loc2 is None:
                    raise KeyNotFoundError(pack_key(loc.pack))
                loc, stored = loc2, self.read_stored(oid, loc2)
            except KeyNotFoundError:
                # No other copy, or the index outlived its pack (deleted pack): the object is missing.
                raise ObjectNotFoundError(
                    f"object {oid} is missing: pack {loc.pack[:16]} is gone from {self.store.url}", id=oid
                ) from None
        try:
            return self._decode_stored(oid, loc, stored)
        except CorruptObjectError:
            # Read once more: bytes damaged in transit are not damaged at rest. Twice bad is corrupt.
            return self._decode_stored(oid, loc, self.read_stored(oid, loc))

    @staticmethod
    def _decode_stored(oid: str, loc: Location, stored: bytes) -> bytes:
        if len(stored) != loc.length:
            raise CorruptObjectError(
                f"object {oid} in pack {loc.pack[:16]} is truncated ({len(stored)} of {loc.length} bytes)",
                id=oid,
                where=loc.pack,
            )
        return decode_blob(oid, stored, f"pack {loc.pack[:16]}")

    def get_chunk(self, chunk: ChunkRef, file_id: str) -> bytes:
        """A chunk of file `file_id`, verified, and of the size the file object says (else it is corrupt)."""
        data = self.get_bytes(chunk.id)
        if len(data) != chunk.size:
            raise CorruptObjectError(
                f"file {file_id[:16]} lists chunk {chunk.id[:16]} as {chunk.size} bytes; it has {len(data)}",
                id=file_id,
            )
        return data

    def _get(self, oid: str, kind: str, cls: type[T]) -> T:
        obj = decode(oid, self.get_bytes(oid), kind)
        assert isinstance(obj, cls)  # decode checked the type against `kind`
        return obj

    def get_tree(self, oid: str) -> Tree:
        return self._get(oid, "tree", Tree)

    def get_file(self, oid: str) -> FileObject:
        return self._get(oid, "file", FileObject)

    def get_table(self, oid: str) -> TableObject:
        return self._get(oid, "table", TableObject)

    def get_commit(self, oid: str) -> Commit:
        return self._get(oid, "commit", Commit)

    # -- writing ---------------------------------------------------------------------------------------------
    def writer(self) -> PackWriter:
        """Start a batch of writes; objects become readable when the writer is closed (or a pack fills)."""
        self._ensure_loaded()
        return PackWriter(self)

    def _publish_index(self, pack_id: str, created: float, entries: list[tuple[str, Location]]) -> None:
        with self._lock:
            self._packs[pack_id] = created
            for oid, loc in entries:
                self._index.setdefault(oid, loc)
            self._by_pack = None


class _AddsObjects:
    """`add_object` for anything with `add(oid, payload, kind)`: encode, hash, add as metadata."""

    def add(self, oid: str, payload: bytes | memoryview, kind: str) -> bool:
        raise NotImplementedError

    def add_object(self, obj: FileObject | Tree | Commit | TableObject) -> str:
        """Encode, hash and add a metadata object; return its id."""
        data = obj.encode()
        oid = hash_bytes(data)
        self.add(oid, data, KIND_META)
        return oid


@dataclass
class _OpenPack:
    """A pack being filled in a staging file; writers reserve a range under the lock and write it outside."""

    fd: int
    path: str
    kind: str
    entries: list[list[object]]
    offset: int
    inflight: int = 0
    full: bool = False


class PackWriter(_AddsObjects):
    """Appends objects to packs in staging files and publishes each finished pack in the background.

    Data chunks and metadata go to separate packs (as restic does): reading trees never touches data packs, and
    a transfer can copy data packs whole. Metadata packs are published only by `flush`, after every data pack
    begun before them, so an object never becomes readable before the data it names (invariant 1).

    Thread-safe and built for parallel snapshots: `add` reserves a byte range under a short lock and writes it
    with `pwritev` outside it; whichever writer finishes last in a full data pack seals it. Use as a context
    manager; leaving the block normally publishes everything, leaving it by an exception publishes nothing more
    (what was published is garbage until a commit references it, and gc removes it after the grace period).
    """

    def __init__(self, odb: ObjectDatabase) -> None:
        self.odb = odb
        self._cond = threading.Condition()
        self._open: dict[str, _OpenPack] = {}
        self._all: list[_OpenPack] = []
        self._pending: set[str] = set()
        self._publisher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dacflow-pack")
        self._futures: list[Future[None]] = []
        self.objects_written = 0
        self.bytes_written = 0  # stored bytes, after compression
        self.raw_bytes_written = 0
        self.packs_written = 0
        self.on_pack: Callable[[str, int], None] | None = None

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def contains(self, oid: str) -> bool:
        """True if the object is published or already added to this batch."""
        return oid in self._pending or self.odb.has(oid)

    def add(
        self, oid: str, payload: bytes | memoryview, kind: str, *, compress: bool = True, force: bool = False
    ) -> bool:
        """Add an object unless it exists; return True if it was written. `oid` must be its hash.

        `force` stores it again even if a published pack has it (gc moving live objects out of a pack).
        """
        if not force and self.contains(oid):
            return False
        level = (3 if kind == KIND_META else self.odb.compression_level) if compress else None
        codec, stored = encode_blob(payload, level)
        length = 1 + len(stored)
        with self._cond:
            if oid in self._pending or (not force and self.odb.has(oid)):
                return False
            pack = self._open.get(kind) or self._new_pack(kind)
            offset = pack.offset
            pack.entries.append([oid, kind, offset, length])
            pack.offset += length
            pack.inflight += 1
            self._pending.add(oid)
            self.objects_written += 1
            self.bytes_written += length
            self.raw_bytes_written += len(payload)
            if kind == KIND_CHUNK and pack.offset >= self.odb.pack_size:
                del self._open[kind]  # later objects start a new pack; the last writer here seals this one
                pack.full = True
        try:
            os.pwritev(pack.fd, [codec, stored], offset)
        finally:
            with self._cond:
                pack.inflight -= 1
                if pack.full and pack.inflight == 0 and pack.kind == KIND_CHUNK:
                    self._seal(pack)
                self._cond.notify_all()
        return True

    def _new_pack(self, kind: str) -> _OpenPack:
        staging = self.odb.store.staging_dir()
        path = os.path.join(staging, f"pack-{uuid.uuid4().hex}.tmp")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.pwrite(fd, PACK_MAGIC, 0)
        pack = self._open[kind] = _OpenPack(fd, path, kind, [], len(PACK_MAGIC))
        self._all.append(pack)
        return pack

    def _seal(self, pack: _OpenPack) -> None:
        """Finish a pack whose writes are all done and hand it to the publisher (caller holds the lock)."""
        created = time.time()
        pack_id, index_bytes = encode_index(pack.entries, created)
        trailer = index_bytes + struct.pack("<Q", len(index_bytes)) + PACK_END
        os.pwrite(pack.fd, trailer, pack.offset)
        os.close(pack.fd)
        pack.fd = -1
        self._all.remove(pack)
        self._futures.append(
            self._publisher.submit(self._publish, pack.path, pack_id, index_bytes, pack.entries, created)
        )

    def _publish(
        self, path: str, pack_id: str, index_bytes: bytes, entries: list[list[object]], created: float
    ) -> None:
        store = self.odb.store
        try:
            store.put_file(pack_key(pack_id), path, CREATE)  # the store makes it durable (fsync) first
        except PreconditionFailedError:
            pass  # an identical pack (same index, same content) is already there
        finally:
            if os.path.exists(path):
                os.unlink(path)
        try:
            store.put(index_key(pack_id), index_bytes, CREATE)
        except PreconditionFailedError:
            pass
        locs = [(str(e[0]), Location(pack_id, int(e[2]), int(e[3]), str(e[1]))) for e in entries]  # type: ignore[call-overload]
        self.odb._publish_index(pack_id, created, locs)
        self.packs_written += 1
        if self.on_pack:
            self.on_pack(pack_id, len(entries))
        log.debug("published pack %s with %d objects", pack_id[:16], len(entries))

    def flush(self) -> None:
        """Publish everything added so far (data packs before metadata packs) and wait until it is readable."""
        with self._cond:
            for kind in (KIND_CHUNK, KIND_META):
                pack = self._open.pop(kind, None)
                if pack is not None:
                    pack.full = True
            self._cond.wait_for(lambda: all(p.inflight == 0 for p in self._all))
            for pack in sorted(self._all, key=lambda p: p.kind == KIND_META):
                if pack.full:
                    self._seal(pack)
        futures, self._futures = self._futures, []
        for fut in futures:
            fut.result()
        with self._cond:
            self._pending.difference_update(o for o in list(self._pending) if self.odb.has(o))

    def close(self) -> None:
        """Publish everything and stop the publisher thread."""
        try:
            self.flush()
        finally:
            self._discard_open_files()
            self._publisher.shutdown(wait=True)

    def abort(self) -> None:
        """Stop without publishing the packs being filled; wait for packs already handed off."""
        self._discard_open_files()
        self._publisher.shutdown(wait=True)

    def _discard_open_files(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: all(p.inflight == 0 for p in self._all), timeout=60)
            for pack in self._all:
                if pack.fd >= 0:
                    os.close(pack.fd)
                if os.path.exists(pack.path):
                    os.unlink(pack.path)
            self._all.clear()
            self._open.clear()


class MemoryWriter(_AddsObjects):
    """A `PackWriter` stand-in that keeps metadata in memory and drops chunk data (for `status`)."""

    def __init__(self, odb: ObjectDatabase) -> None:
        self.odb = odb
        self.objects: dict[str, bytes] = {}
        self.chunks: set[str] = set()

    def contains(self, oid: str) -> bool:
        return oid in self.objects or oid in self.chunks or self.odb.has(oid)

    def add(self, oid: str, payload: bytes | memoryview, kind: str, *, compress: bool = True) -> bool:
        if self.contains(oid):
            return False
        if kind == KIND_META:
            self.objects[oid] = bytes(payload)
        else:
            self.chunks.add(oid)
        return True

    def view(self) -> ObjectDatabase:
        """The repository's objects with these in-memory ones on top."""
        return self.odb.with_overlay(self.objects)
