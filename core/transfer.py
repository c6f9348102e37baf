"""Move history between repositories on any two stores, sending only what the destination lacks (DESIGN §7).

1. Walk the source from the refs, asking the destination's loaded pack indexes (never a key listing) whether it
   has each object. A destination that has a commit, tree or file has everything below it (invariant 1), so the
   walk stops there and its cost follows the change.
2. Copy the missing data chunks in parallel, verified: a source pack whose every object is missing is copied
   whole (its index with it), others object by object into new packs. Several sources may serve the data; each
   pack comes from one that has it, and a failing source falls back to another.
3. Publish the metadata (files, trees, commits) strictly after the data, in dependency order.
4. Move each ref by compare-and-swap: created, fast-forwarded, or refused if it diverged (unless forced).

A transfer killed at any point leaves the destination valid; running it again sends only what is still missing.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    CorruptObjectError,
    DacflowError,
    PreconditionFailedError,
    RefConflictError,
    RefNotFoundError,
    RepositoryExistsError,
    RepositoryNotFoundError,
)
from .gates import Gatekeeper
from .graph import COMMIT, DATA, edges, load
from .names import check_ref_name
from .objects import hash_bytes
from .odb import (
    CODEC_RAW,
    KIND_CHUNK,
    KIND_META,
    PACK_END,
    PACK_MAGIC,
    Location,
    PackWriter,
    decode_blob,
    decode_index,
    index_key,
    pack_key,
)
from .refs import BRANCHES, TAGS
from .repository import Repository
from .signing import copy_signatures, verify_refs
from .snapshot import ProgressFn
from .stores.base import CREATE
from .stores.wrappers import CountingStore

log = logging.getLogger(__name__)

#: Two byte ranges of one pack closer than this are fetched as one request.
COALESCE_GAP = 1 << 20
MAX_RANGE = 16 << 20


@dataclass
class TransferReport:
    """What a transfer did; every byte count is of stored bytes unless named raw."""

    src: str
    dst: str
    refs: dict[str, dict[str, Any]] = field(default_factory=dict)
    commits: int = 0
    objects_sent: int = 0
    bytes_sent: int = 0
    raw_bytes_sent: int = 0
    objects_skipped: int = 0
    raw_bytes_skipped: int = 0
    packs_copied_whole: int = 0
    requests: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def throughput(self) -> float:
        """Bytes sent per second."""
        return self.bytes_sent / self.seconds if self.seconds > 0 else 0.0

    def sent(self, objects: int, stored: int, raw: int, source: str) -> None:
        with self._lock:
            self.objects_sent += objects
            self.bytes_sent += stored
            self.raw_bytes_sent += raw
            self.by_source[source] = self.by_source.get(source, 0) + stored

    def to_json(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "refs": self.refs,
            "commits": self.commits,
            "objects_sent": self.objects_sent,
            "bytes_sent": self.bytes_sent,
            "raw_bytes_sent": self.raw_bytes_sent,
            "objects_skipped": self.objects_skipped,
            "raw_bytes_skipped": self.raw_bytes_skipped,
            "packs_copied_whole": self.packs_copied_whole,
            "requests": self.requests,
            "by_source": self.by_source,
            "seconds": round(self.seconds, 4),
            "throughput_bytes_per_s": round(self.throughput, 1),
        }


def _as_repo(repo: Repository | str) -> Repository:
    return repo if isinstance(repo, Repository) else Repository.open(repo)


def _counted(repo: Repository) -> tuple[Repository, CountingStore]:
    store = CountingStore(repo.store)
    return Repository(store, repo.config), store


def transfer(
    src: Repository | str,
    dst: Repository | str,
    refs: Sequence[str] | Mapping[str, str] | None = None,
    *,
    sources: Sequence[Repository | str] = (),
    force: bool = False,
    workers: int = 8,
    progress: ProgressFn | None = None,
    require_signed: Any = None,
) -> TransferReport:
    """Copy the refs named (branch or tag names; default: all) and their history from `src` to `dst`.

    `refs` may map source names to destination names ({"main": "hub-main"}): the ref lands under the new name.

    `sources` are extra repositories holding the same objects (e.g. a peer region) that may serve data.
    Raise `RefConflictError` if a destination branch has commits the source lacks (unless `force`).
    With `require_signed` (trusted public keys: files, directories, key text; see `dacflow.signing`), the tip of
    every ref is verified at the source first and `SignatureError` is raised before anything is copied.
    Signatures of the commits sent travel with them.
    """
    t0 = time.perf_counter()
    src_repo, src_count = _counted(_as_repo(src))
    dst_repo, dst_count = _counted(_as_repo(dst))
    extra = [_counted(_as_repo(s)) for s in sources]
    report = TransferReport(src_repo.url, dst_repo.url)
    wanted = _select_refs(src_repo, refs)
    if require_signed is not None:
        named = [(f"{'tag' if kind == TAGS else 'branch'} {name!r}", commit) for kind, name, commit in wanted]
        verify_refs(src_repo, named, require_signed)
    rename = {k: check_ref_name(v, "branch or tag") for k, v in refs.items()} if isinstance(refs, Mapping) else {}
    # Both sides load their pack indexes (a listing and one read per pack) at the same time.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dacflow-index") as pool:
        loading = pool.submit(src_repo.odb.packs)
        dst_repo.odb.refresh()
        loading.result()
    plan = _Plan(src_repo, dst_repo, workers)
    for _kind, _name, commit in wanted:
        plan.walk_commit(commit)
    report.commits = len(plan.commits)
    report.objects_skipped, report.raw_bytes_skipped = plan.skipped, plan.skipped_bytes
    data_sources = [src_repo] + [r for r, _ in extra]
    with dst_repo.odb.writer() as writer:
        _copy_data(plan, data_sources, dst_repo, writer, report, workers, progress)
        writer.flush()  # data first: no metadata may become readable before the chunks it names
        before = writer.bytes_written
        for oid in plan.meta_order:
            writer.add(oid, plan.meta_data[oid], KIND_META)
        writer.flush()
        raw_meta = sum(len(d) for d in plan.meta_data.values())
        report.sent(len(plan.meta_order), writer.bytes_written - before, raw_meta, src_repo.url)
    copy_signatures(src_repo, dst_repo, {c for _, _, c in wanted} | set(plan.commits))  # before any ref moves
    keeper = Gatekeeper.load(dst_repo)  # the destination's gates guard its branches (docs/gates.md)
    for kind, name, commit in wanted:
        target = rename.get(name) or rename.get(f"{kind}/{name}") or name
        report.refs[f"{kind}/{target}"] = _move_ref(dst_repo, src_repo, kind, target, commit, force, keeper)
    report.requests = src_count.requests + dst_count.requests + sum(c.requests for _, c in extra)
    report.seconds = time.perf_counter() - t0
    log.info("transfer %s -> %s: %d objects, %d bytes", report.src, report.dst, report.objects_sent, report.bytes_sent)
    return report


def init_like(source: Repository, dst_url: str, **store_options: Any) -> Repository:
    """Create a repository at `dst_url` with the source's chunking, compression and default branch, so that
    the same data makes the same objects on both sides."""
    cfg = source.config
    return Repository.init(
        dst_url,
        compression=cfg.compression,
        compression_level=cfg.compression_level,
        pack_size=cfg.pack_size,
        chunker=cfg.chunker,
        default_branch=source.default_branch,
        **store_options,
    )


def open_or_init_like(source: Repository, dst_url: str, **store_options: Any) -> Repository:
    """Open the repository at `dst_url`, or create it like `source` when there is none (a first push)."""
    try:
        return Repository.open(dst_url, **store_options)
    except RepositoryNotFoundError:
        log.info("creating a repository at %s like %s", dst_url, source.url)
    try:
        return init_like(source, dst_url, **store_options)
    except RepositoryExistsError:  # a concurrent first push created it meanwhile
        return Repository.open(dst_url, **store_options)


def clone(src: Repository | str, dst_url: str, **kwargs: Any) -> tuple[Repository, TransferReport]:
    """Create a repository at `dst_url` with the source's chunking and compression, and copy every ref."""
    source = _as_repo(src)
    dst = init_like(source, dst_url)
    return dst, transfer(source, dst, None, force=True, **kwargs)


def _select_refs(repo: Repository, names: Iterable[str] | None) -> list[tuple[str, str, str]]:
    branches, tags = repo.branches(), repo.tags()
    if not names:
        return [(BRANCHES, n, c) for n, c in sorted(branches.items())] + [(TAGS, n, c) for n, c in sorted(tags.items())]
    out = []
    for name in names:
        if name.startswith("tags/") and name[5:] in tags:
            out.append((TAGS, name[5:], tags[name[5:]]))
        elif name in branches:
            out.append((BRANCHES, name, branches[name]))
        elif name in tags:
            out.append((TAGS, name, tags[name]))
        else:
            raise RefNotFoundError(f"no branch or tag {name!r} in {repo.url}", ref=name)
    return out


class _Plan:
    """What the destination lacks: data chunks (id → size) and metadata in dependency order."""

    def __init__(self, src: Repository, dst: Repository, workers: int = 8) -> None:
        self.src, self.dst = src, dst
        self.workers = max(1, workers)
        self.seen: set[str] = set()
        self.chunks: dict[str, int] = {}
        self.meta_order: list[str] = []
        self.meta_data: dict[str, bytes] = {}
        self.commits: list[str] = []
        self.skipped = 0
        self.skipped_bytes = 0
        self._fetched: dict[str, bytes] = {}  # metadata read ahead in batches (verified), not yet walked

    def _have(self, oid: str) -> bool:
        if oid in self.seen:
            return True
        self.seen.add(oid)
        if self.dst.odb.has(oid):
            self.skipped += 1
            return True
        return False

    def _meta(self, oid: str) -> bytes:
        data = self._fetched.pop(oid, None)
        if data is None:
            data = self.src.odb.get_bytes(oid)
        self.meta_data[oid] = data
        return data

    def _load(self, oid: str, what: str) -> Any:
        # Parse the bytes `_meta` just read (verified) rather than reading them again. Parsed objects are not
        # kept from the read-ahead: parsing twice is cheap, holding every parsed tree of a large history is not.
        return load(self.src.odb.with_overlay({oid: self.meta_data[oid]}), oid, what)

    def read_ahead(self, head: str) -> None:
        """Read the metadata the walk will need, level by level, in few requests.

        Each level's missing objects are grouped by source pack and fetched as coalesced byte ranges, in
        parallel (one request per range, not one per object). Whatever fails here is simply read again, one
        object at a time, by the walk itself, which reports errors as before.
        """
        frontier, visited = [(head, COMMIT)], {head}
        while frontier:
            need = [
                oid
                for oid, _ in frontier
                if oid not in self.seen and oid not in self._fetched and not self.dst.odb.has(oid)
            ]
            self._fetch(need)
            nxt = []
            for oid, what in frontier:
                data = self._fetched.get(oid)
                if data is None:
                    continue
                try:
                    obj = load(self.src.odb.with_overlay({oid: data}), oid, what)
                except DacflowError:
                    self._fetched.pop(oid, None)
                    continue
                for child, kind, _ in edges(obj):
                    if kind != DATA and child not in visited:
                        visited.add(child)
                        nxt.append((child, kind))
            frontier = nxt

    def _fetch(self, oids: list[str]) -> None:
        if not oids:
            return
        by_pack: dict[str, list[tuple[str, Location]]] = {}
        for oid in oids:
            loc = self.src.odb.locate(oid, refresh=False)
            if loc is not None:
                by_pack.setdefault(loc.pack, []).append((oid, loc))
        jobs = [(pid, rng) for pid, items in by_pack.items() for rng in _ranges(items)]

        def one(job: tuple[str, tuple[int, int, list[tuple[str, Location]]]]) -> list[tuple[str, bytes]]:
            pid, (start, end, group) = job
            try:
                blob = self.src.store.get(pack_key(pid), (start, end))
            except DacflowError:
                return []
            out = []
            for oid, loc in group:
                stored = blob[loc.offset - start : loc.offset - start + loc.length]
                try:
                    if len(stored) == loc.length:
                        out.append((oid, decode_blob(oid, stored, f"pack {pid[:16]} of {self.src.url}")))
                except CorruptObjectError:
                    pass
            return out

        if len(jobs) == 1 or self.workers == 1:
            results = [one(j) for j in jobs]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(jobs))) as pool:
                results = list(pool.map(one, jobs))
        for found in results:
            self._fetched.update(found)

    def walk_commit(self, head: str) -> None:
        """Post-order walk: an object is listed after everything it references (parents before children)."""
        self.read_ahead(head)
        stack: list[tuple[str, str, bool]] = [(head, COMMIT, False)]
        while stack:
            oid, what, expanded = stack.pop()
            if expanded:
                self.meta_order.append(oid)
                if what == COMMIT:
                    self.commits.append(oid)
                continue
            if self._have(oid):
                continue
            self._meta(oid)
            stack.append((oid, what, True))
            for child, kind, size in edges(self._load(oid, what)):
                if kind != DATA:
                    stack.append((child, kind, False))
                elif child not in self.seen:
                    self.seen.add(child)
                    if self.dst.odb.has(child):
                        self.skipped += 1
                        self.skipped_bytes += size
                    else:
                        self.chunks[child] = size


def _copy_data(
    plan: _Plan,
    sources: list[Repository],
    dst: Repository,
    writer: PackWriter,
    report: TransferReport,
    workers: int,
    progress: ProgressFn | None,
) -> None:
    """Copy every chunk in the plan from some source that has it, in parallel, verified."""
    if not plan.chunks:
        return
    assignment = _assign(plan.chunks, sources)
    total = sum(plan.chunks.values())
    done = [0]
    lock = threading.Lock()

    def advance(n: int) -> None:
        with lock:
            done[0] += n
            if progress:
                progress("send", done[0], total)

    jobs: list[tuple[int, str, list[tuple[str, Location]]]] = []
    for idx, by_pack in assignment.items():
        for pack_id, items in by_pack.items():
            jobs.append((idx, pack_id, items))
    jobs.sort(key=lambda j: -sum(loc.length for _, loc in j[2]))

    def run(job: tuple[int, str, list[tuple[str, Location]]]) -> None:
        idx, pack_id, items = job
        order = [idx] + [i for i in range(len(sources)) if i != idx]
        last: DacflowError | None = None
        for i in order:
            source = sources[i]
            if i != idx:  # fallback: only objects this source has, wherever they sit in its packs
                located = [(oid, source.odb.locate(oid, refresh=False)) for oid, _ in items]
                if any(loc is None for _, loc in located):
                    continue
                groups: dict[str, list[tuple[str, Location]]] = {}
                for oid, loc in located:
                    assert loc is not None
                    groups.setdefault(loc.pack, []).append((oid, loc))
            else:
                groups = {pack_id: items}
            try:
                for pid, group in groups.items():
                    _copy_pack(source, pid, group, dst, writer, report, advance)
                return
            except DacflowError as exc:
                log.warning("source %s failed for pack %s: %s", source.url, pid[:16], exc.message)
                last = exc
        assert last is not None
        raise last

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="dacflow-transfer") as pool:
        for fut in [pool.submit(run, job) for job in jobs]:
            fut.result()


def _assign(chunks: dict[str, int], sources: list[Repository]) -> dict[int, dict[str, list[tuple[str, Location]]]]:
    """Give each chunk to a source that has it, balancing bytes; group by that source's packs."""
    load = [0] * len(sources)
    out: dict[int, dict[str, list[tuple[str, Location]]]] = {}
    for oid, size in chunks.items():
        options = [(i, loc) for i, s in enumerate(sources) if (loc := s.odb.locate(oid, refresh=False)) is not None]
        if not options:
            raise RefNotFoundError(f"chunk {oid} is in no source ({', '.join(s.url for s in sources)})", id=oid)
        i, loc = min(options, key=lambda o: load[o[0]])
        load[i] += size
        out.setdefault(i, {}).setdefault(loc.pack, []).append((oid, loc))
    return out


def _copy_pack(
    source: Repository,
    pack_id: str,
    items: list[tuple[str, Location]],
    dst: Repository,
    writer: PackWriter,
    report: TransferReport,
    advance: Any,
) -> None:
    pack_entries = source.odb.objects_by_pack().get(pack_id)
    if (
        pack_entries is not None
        and {oid for oid, _ in items} == set(pack_entries)
        and all(loc.kind == KIND_CHUNK for loc in pack_entries.values())
    ):
        _copy_whole(source, pack_id, items, dst, report)
        advance(sum(loc.length for _, loc in items))
        return
    for start, end, group in _ranges(items):
        blob = source.store.get(pack_key(pack_id), (start, end))
        for oid, loc in group:
            stored = blob[loc.offset - start : loc.offset - start + loc.length]
            raw = _verified(source, oid, loc, stored, pack_id)
            with report._lock:  # jobs share the writer: measure this add alone, or bytes count twice
                before = writer.bytes_written
                writer.add(oid, raw, KIND_CHUNK)
                report.sent(1, writer.bytes_written - before, len(raw), source.url)
            advance(loc.length)


def _verified(source: Repository, oid: str, loc: Location, stored: bytes, pack_id: str) -> bytes:
    try:
        if len(stored) != loc.length:
            raise CorruptObjectError(f"object {oid} from {source.url} is truncated", id=oid)
        return decode_blob(oid, stored, f"pack {pack_id[:16]} of {source.url}")
    except CorruptObjectError:
        # One more read: a flipped bit on the wire is not a flipped bit at rest.
        again = source.store.get(pack_key(pack_id), (loc.offset, loc.offset + loc.length))
        return decode_blob(oid, again, f"pack {pack_id[:16]} of {source.url}")


def _copy_whole(
    source: Repository, pack_id: str, items: list[tuple[str, Location]], dst: Repository, report: TransferReport
) -> None:
    """Copy a data pack and its index as they are, after re-hashing every object in it."""
    data = source.store.get(pack_key(pack_id))
    index_bytes, parsed = _trailer_index(data, pack_id)
    if parsed is None:  # no usable copy at the pack's end: read the index object
        index_bytes = source.store.get(index_key(pack_id))
        parsed = decode_index(index_key(pack_id), index_bytes)
    pid, created, entries = parsed
    view = memoryview(data)
    raw_total = 0
    for oid, loc in entries:
        stored = view[loc.offset : loc.offset + loc.length]
        # Stored raw (the common case for data): hash the bytes in place, no copy. Anything else, or a
        # mismatch, takes the general path (decompress, re-read once, raise CorruptObjectError).
        if len(stored) == loc.length > 0 and stored[0] == CODEC_RAW and hash_bytes(stored[1:]) == oid:
            raw_total += loc.length - 1
        else:
            raw_total += len(_verified(source, oid, loc, bytes(stored), pack_id))
    for key, payload in ((pack_key(pack_id), data), (index_key(pack_id), index_bytes)):
        try:
            dst.store.put(key, payload, CREATE)
        except PreconditionFailedError:
            pass  # already there from an earlier, interrupted run
    dst.odb._publish_index(pid, created, entries)
    report.sent(len(entries), len(data) + len(index_bytes), raw_total, source.url)
    with report._lock:
        report.packs_copied_whole += 1


def _trailer_index(data: bytes, pack_id: str) -> tuple[bytes, Any]:
    """The index a pack carries at its end (the same bytes as its index object), parsed, or (b"", None).

    It saves a request per pack copied whole; it is used only if it parses and names this very pack.
    """
    tail = len(PACK_END) + 8
    if len(data) < len(PACK_MAGIC) + tail or not data.endswith(PACK_END):
        return b"", None
    (size,) = struct.unpack("<Q", data[-tail : -len(PACK_END)])
    if not 0 < size <= len(data) - len(PACK_MAGIC) - tail:
        return b"", None
    index_bytes = data[-tail - size : -tail]
    try:
        parsed = decode_index(index_key(pack_id), index_bytes)
    except DacflowError:
        return b"", None
    return (index_bytes, parsed) if parsed[0] == pack_id else (b"", None)


def _ranges(items: Iterable[tuple[str, Location]]) -> list[tuple[int, int, list[tuple[str, Location]]]]:
    """Coalesce object ranges of one pack into few requests (gaps under 1 MiB, at most 16 MiB each)."""
    out: list[tuple[int, int, list[tuple[str, Location]]]] = []
    for oid, loc in sorted(items, key=lambda x: x[1].offset):
        end = loc.offset + loc.length
        if out and loc.offset - out[-1][1] <= COALESCE_GAP and end - out[-1][0] <= MAX_RANGE:
            start, _, group = out[-1]
            group.append((oid, loc))
            out[-1] = (start, end, group)
        else:
            out.append((loc.offset, end, [(oid, loc)]))
    return out


def _is_ancestor(repo: Repository, ancestor: str, commit: str) -> bool:
    seen, stack = set(), [commit]
    while stack:
        cid = stack.pop()
        if cid == ancestor:
            return True
        if cid in seen:
            continue
        seen.add(cid)
        stack.extend(repo.odb.get_commit(cid).parents)
    return False


def _move_ref(
    dst: Repository,
    src: Repository,
    kind: str,
    name: str,
    commit: str,
    force: bool,
    keeper: Gatekeeper | None = None,
) -> dict[str, Any]:
    """Move one destination ref to `commit` by CAS. A gated branch takes it like a merge: its gates validate the
    move first, and a protected branch never takes a forced (non-fast-forward) update."""
    for _attempt in range(20):
        head, token = dst.refs.read(kind, name)
        if head == commit:
            return {"from": head, "to": commit, "status": "unchanged"}
        if head is not None and not force:
            if kind == TAGS:
                raise RefConflictError(f"tag {name!r} points elsewhere at {dst.url}; tags never move", ref=name)
            if not _is_ancestor(src, head, commit):
                raise RefConflictError(
                    f"branch {name!r} at {dst.url} has commits the source lacks; pull and merge them first, "
                    "or force the update",
                    ref=name,
                )
        change = None
        if kind == BRANCHES and keeper is not None and keeper.active:
            if force and head is not None and keeper.config.is_protected(name) and not _is_ancestor(src, head, commit):
                keeper.check_forced(name, head, commit)
            change = keeper.check("transfer", name, head, commit, f"{src.url}#{name}")
        try:
            dst.refs.swap(kind, name, commit, token)
        except RefConflictError:
            continue
        if keeper is not None:
            keeper.after(change)
        return {"from": head, "to": commit, "status": "created" if head is None else "updated"}
    raise RefConflictError(f"{kind[:-1]} {name!r} at {dst.url} kept moving", ref=name)


__all__ = ["TransferReport", "clone", "transfer"]
