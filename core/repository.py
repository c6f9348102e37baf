"""The repository: the one entry point of the Python API (`Repository.init` / `Repository.open`).

It ties a store, its config, the object database and the refs together, and owns the rule every write follows:
objects are published first, then the commit, then the ref moves by compare-and-swap. A lost race re-reads the
head and either rebases (whole snapshots always; path changes when the paths are disjoint) or raises
`RefConflictError`; no commit is ever silently dropped from history.
"""

from __future__ import annotations

import getpass
import logging
import os
import random
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .checkout import Checkout, CheckoutStats, read_checkout_marker, write_checkout_marker
from .config import CONFIG_KEY, RepoConfig
from .errors import (
    ContainerNotFoundError,
    InvalidRefNameError,
    KeyNotFoundError,
    ObjectNotFoundError,
    PreconditionFailedError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UsageError,
)
from .gates import Gatekeeper
from .locks import RepoLock
from .names import check_ref_name, split_path
from .objects import (
    DIR,
    EMPTY_TREE,
    FILE,
    MODE_FILE,
    TABLE,
    Commit,
    TableObject,
    TreeEntry,
    hash_bytes,
    is_object_id,
    utc_now,
)
from .odb import KIND_META, MemoryWriter, ObjectDatabase, PackWriter
from .refs import BRANCHES, TAGS, Refs
from .snapshot import ProgressFn, SnapshotStats, TreeBuilder, store_bytes
from .statcache import StatCache
from .stores import open_store
from .stores.base import CREATE, Store
from .trees import TreeDiff, apply_changes, diff_trees, inside_removed_dirs, lookup, overlaps

log = logging.getLogger(__name__)

DEFAULT_BRANCH = "main"
#: Every repository starts from this same commit (empty tree, fixed author and time), so independently created
#: repositories share a root and a first push to an empty hub is a fast-forward.
ROOT_COMMIT = Commit(hash_bytes(EMPTY_TREE.encode()), (), "init", "dacflow", "1970-01-01T00:00:00.000000Z", {})
MAX_ATTEMPTS = 200
_SUFFIX_RE = re.compile(r"^(.*?)~(\d+)$")


def default_author() -> str:
    """Who commits: $DACFLOW_AUTHOR, else the login name."""
    env = os.environ.get("DACFLOW_AUTHOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry in some containers
        return "unknown"


@dataclass(frozen=True)
class CommitResult:
    """The outcome of a write to a branch: the commit the branch now points at and whether it moved."""

    commit: str
    branch: str
    created: bool
    parent: str | None
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "branch": self.branch,
            "created": self.created,
            "parent": self.parent,
            "seconds": round(self.seconds, 4),
            **self.stats,
        }


class Repository:
    """A dacflow repository on one store."""

    def __init__(self, store: Store, config: RepoConfig) -> None:
        self.store = store
        self.config = config
        self.odb = ObjectDatabase(store, pack_size=config.pack_size, compression_level=config.level)
        self.refs = Refs(store)
        self._tio: Any = None

    # -- opening ---------------------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        url: str,
        *,
        compression: str = "none",
        compression_level: int = 1,
        pack_size: int | None = None,
        chunker: Any = None,
        default_branch: str = DEFAULT_BRANCH,
        **store_options: Any,
    ) -> Repository:
        """Create a repository at `url` with an empty first commit on `default_branch`.

        `store_options` go to the store (e.g. endpoint_url, region for S3; see docs/stores.md)."""
        store = open_store(url, create=True, **store_options)
        return cls.init_store(
            store,
            compression=compression,
            compression_level=compression_level,
            pack_size=pack_size,
            chunker=chunker,
            default_branch=default_branch,
        )

    @classmethod
    def init_store(
        cls,
        store: Store,
        *,
        compression: str = "none",
        compression_level: int = 1,
        pack_size: int | None = None,
        chunker: Any = None,
        default_branch: str = DEFAULT_BRANCH,
    ) -> Repository:
        """Create a repository on an already opened store (e.g. one wrapped for fault injection)."""
        check_ref_name(default_branch)
        kwargs: dict[str, Any] = {
            "compression": compression,
            "compression_level": compression_level,
            "extra": {"default_branch": default_branch},
        }
        if pack_size is not None:
            kwargs["pack_size"] = pack_size
        if chunker is not None:
            kwargs["chunker"] = chunker
        config = RepoConfig(**kwargs)
        try:
            store.put(CONFIG_KEY, config.encode(), CREATE)
        except PreconditionFailedError:
            raise RepositoryExistsError(f"a repository already exists at {store.url}", url=store.url) from None
        repo = cls(store, config)
        with repo.odb.writer() as w:
            w.add_object(EMPTY_TREE)  # the root commit's tree
            first = w.add_object(ROOT_COMMIT)
        repo.refs.swap(BRANCHES, default_branch, first, None)
        log.info("initialised repository %s", store.url)
        return repo

    @classmethod
    def open(cls, url: str, **store_options: Any) -> Repository:
        """Open an existing repository; raise `RepositoryNotFoundError` if there is none at `url`.

        `store_options` go to the store (credentials, endpoints; see docs/stores.md)."""
        return cls.open_store(open_store(url, **store_options))

    @classmethod
    def open_store(cls, store: Store) -> Repository:
        try:
            data = store.get(CONFIG_KEY)
        except KeyNotFoundError:
            raise RepositoryNotFoundError(
                f"no dacflow repository at {store.url}; create one with `dacflow init {store.url}`", url=store.url
            ) from None
        except ContainerNotFoundError as exc:
            raise RepositoryNotFoundError(
                f"no dacflow repository at {store.url}: {exc}; `dacflow init {store.url}` creates both", url=store.url
            ) from None
        return cls(store, RepoConfig.decode(data, store.url))

    @property
    def url(self) -> str:
        return self.store.url

    @property
    def default_branch(self) -> str:
        return str(self.config.extra.get("default_branch", DEFAULT_BRANCH))

    def __repr__(self) -> str:
        return f"Repository({self.url!r})"

    # -- refs ------------------------------------------------------------------------------------------------
    def branches(self) -> dict[str, str]:
        return self.refs.list(BRANCHES)

    def tags(self) -> dict[str, str]:
        return self.refs.list(TAGS)

    def head(self, branch: str) -> str | None:
        """The commit a branch points at, or None if the branch does not exist."""
        return self.refs.get(BRANCHES, check_ref_name(branch))

    def _is_branch(self, name: object) -> bool:
        """True if `name` is an existing branch (one ref read, not a listing of every ref)."""
        try:
            check_ref_name(name)  # type: ignore[arg-type]
        except InvalidRefNameError:
            return False  # also keeps a hand-edited checkout marker from naming a hostile key
        return self.refs.get(BRANCHES, name) is not None  # type: ignore[arg-type]

    def _checkout_branch(self, src: str) -> str:
        """The branch a directory was checked out from (its .dacflow marker), else the default branch."""
        marker = read_checkout_marker(src)
        ref = marker.get("ref") if marker else None
        return ref if isinstance(ref, str) and self._is_branch(ref) else self.default_branch

    def branch(self, name: str, from_: str | None = None) -> Branch:
        """Return branch `name`, creating it at `from_` (default: the default branch) if it does not exist."""
        check_ref_name(name)
        if self.refs.get(BRANCHES, name) is None:
            start = self.resolve(from_ or self.default_branch)
            try:
                self.refs.swap(BRANCHES, name, start, None)
            except RefConflictError:
                pass  # someone else created it meanwhile: fine, it exists
        return Branch(self, name)

    def create_branch(self, name: str, from_: str | None = None) -> Branch:
        """Create a new branch; raise `RefExistsError` if it exists."""
        check_ref_name(name)
        start = self.resolve(from_ or self.default_branch)
        try:
            self.refs.swap(BRANCHES, name, start, None)
        except RefConflictError:
            raise RefExistsError(f"branch {name!r} already exists", ref=name) from None
        return Branch(self, name)

    def delete_branch(self, name: str) -> str:
        """Delete a branch (its commits stay until gc); return the commit it pointed at."""
        head = self.refs.get(BRANCHES, check_ref_name(name))
        if head is None:
            raise RefNotFoundError(f"no branch {name!r}", ref=name)
        if name == self.default_branch:
            raise UsageError(f"refusing to delete the default branch {name!r}", ref=name)
        Gatekeeper.load(self).check_delete(name)
        self.refs.delete(BRANCHES, name)
        return head

    def tag(self, name: str, ref: str) -> str:
        """Create tag `name` at `ref` (tags never move); return the commit id."""
        check_ref_name(name, "tag")
        commit = self.resolve(ref)
        try:
            self.refs.swap(TAGS, name, commit, None)
        except RefConflictError:
            raise RefExistsError(f"tag {name!r} already exists", ref=name) from None
        return commit

    def delete_tag(self, name: str) -> str:
        commit = self.refs.get(TAGS, check_ref_name(name, "tag"))
        if commit is None:
            raise RefNotFoundError(f"no tag {name!r}", ref=name)
        self.refs.delete(TAGS, name)
        return commit

    def resolve(self, ref: str) -> str:
        """Turn a branch, tag, commit id, unique id prefix (6+ hex) or `REF~N` into a commit id."""
        if not isinstance(ref, str) or not ref:
            raise RefNotFoundError("empty ref", ref=ref)
        m = _SUFFIX_RE.match(ref)
        if m:
            commit = self.resolve(m.group(1))
            for _ in range(int(m.group(2))):
                parents = self.odb.get_commit(commit).parents
                if not parents:
                    raise RefNotFoundError(f"{ref!r} goes back past the first commit", ref=ref)
                commit = parents[0]
            return commit
        if is_object_id(ref):
            if self.odb.locate(ref) is None:
                raise RefNotFoundError(f"no commit {ref} in {self.url}", ref=ref)
            self.odb.get_commit(ref)
            return ref
        for kind in (BRANCHES, TAGS):
            try:
                found = self.refs.get(kind, ref)
            except Exception:  # noqa: BLE001 - names that cannot be refs simply are not refs
                found = None
            if found is not None:
                return found
        if re.fullmatch(r"[0-9a-f]{6,63}", ref):
            hits = self._commits_with_prefix(ref)
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise RefNotFoundError(f"commit prefix {ref!r} is ambiguous ({len(hits)} commits)", ref=ref)
        raise RefNotFoundError(f"unknown ref {ref!r}: no branch, tag or commit has that name", ref=ref)

    def _commits_with_prefix(self, prefix: str) -> list[str]:
        out = []
        for oid, loc in self.odb.entries():
            if loc.kind == KIND_META and oid.startswith(prefix):
                try:
                    self.odb.get_commit(oid)
                except Exception:  # noqa: BLE001 - trees and files share the prefix space
                    continue
                out.append(oid)
        return out

    # -- history ---------------------------------------------------------------------------------------------
    def get_commit(self, ref: str) -> Commit:
        return self.odb.get_commit(self.resolve(ref))

    def log(self, ref: str | None = None, limit: int | None = None) -> Iterator[tuple[str, Commit]]:
        """Yield (id, commit) reachable from `ref`, newest first (by time, every parent followed)."""
        start = self.resolve(ref or self.default_branch)
        seen = {start}
        frontier = [(self.odb.get_commit(start), start)]
        count = 0
        while frontier and (limit is None or count < limit):
            frontier.sort(key=lambda item: item[0].time)
            commit, cid = frontier.pop()
            yield cid, commit
            count += 1
            for parent in commit.parents:
                if parent not in seen:
                    seen.add(parent)
                    frontier.append((self.odb.get_commit(parent), parent))

    def entry(self, ref: str, path: str = "") -> TreeEntry:
        """The tree entry at `path` in the snapshot `ref` names; raise `RefNotFoundError` if absent."""
        commit = self.get_commit(ref)
        entry = lookup(self.odb, commit.tree, path)
        if entry is None:
            raise RefNotFoundError(f"no path {path!r} in {ref}", ref=ref, path=path)
        return entry

    def read_file(self, ref: str, path: str) -> bytes:
        """The whole content of one file in a snapshot, verified."""
        entry = self.entry(ref, path)
        if entry.kind != FILE:
            raise UsageError(f"{path!r} in {ref} is a {entry.kind}, not a file", path=path)
        return b"".join(self.odb.get_chunk(c, entry.ref) for c in self.odb.get_file(entry.ref).chunks)

    # -- writing ---------------------------------------------------------------------------------------------
    def snapshot(
        self,
        src: str,
        branch: str | None = None,
        message: str = "",
        meta: Mapping[str, Any] | None = None,
        *,
        progress: ProgressFn | None = None,
        use_cache: bool = True,
        allow_empty: bool = False,
        workers: int | None = None,
        tables: Mapping[str, tuple[str, Sequence[str]]] | None = None,
        dedupe: str | None = None,
    ) -> CommitResult:
        """Store directory `src` and commit it on `branch` (created from the default branch if missing).

        The commit's tree is exactly `src`; if the branch moved meanwhile, the commit lands on top of the new
        head, which stays in history. An unchanged tree makes no commit unless `allow_empty`.
        `tables` declares tables: {name: (glob below src, key columns)}; the matching Parquet/CSV files are
        stored as that table (row-level versions) instead of as files. A key found twice is an error unless
        `dedupe="last"` (the row from the file last in name order wins, e.g. a re-sent batch).
        """
        started = time.time()
        t0 = time.perf_counter()
        src = os.path.abspath(src)
        if branch is None:
            branch = self._checkout_branch(src)
        check_ref_name(branch)
        cache = StatCache(self.config.id, src, enabled=use_cache)
        with RepoLock(self.store, exclusive=False, purpose="snapshot"), self.odb.writer() as writer:
            builder = TreeBuilder(writer, self.config.chunker, cache, progress=progress, workers=workers)
            sources = self._table_sources(src, tables or {})
            tree = builder.build(src, frozenset(p for files, _ in sources.values() for p in files))
            if sources:
                tree = self._snapshot_tables(writer, tree, branch, sources, dedupe)
            result = self._commit(
                branch,
                writer,
                tree=tree,
                message=message,
                meta=meta,
                allow_empty=allow_empty,
                create_from=self.default_branch,
            )
        cache.save(builder.new_cache, started)
        stats = builder.stats.to_json() | {"packs_written": writer.packs_written, "bytes_stored": writer.bytes_written}
        return CommitResult(result.commit, branch, result.created, result.parent, time.perf_counter() - t0, stats)

    @staticmethod
    def _table_sources(
        src: str, tables: Mapping[str, tuple[str, Sequence[str]]]
    ) -> dict[str, tuple[list[str], list[str]]]:
        import glob

        out = {}
        for name, (pattern, key) in tables.items():
            if os.path.isabs(pattern) or ".." in pattern.split("/"):
                raise UsageError(f"table {name!r}: the glob {pattern!r} must be relative to {src}", path=pattern)
            files = sorted(p for p in glob.glob(os.path.join(src, pattern), recursive=True) if os.path.isfile(p))
            if not files:
                raise UsageError(f"table {name!r}: no file in {src} matches {pattern!r}", path=pattern)
            if not key:
                raise UsageError(f"table {name!r} needs key columns (NAME=GLOB:KEY1,KEY2)", path=name)
            out["/".join(split_path(name))] = (files, list(key))
        return out

    def _snapshot_tables(
        self,
        writer: PackWriter,
        tree: str,
        branch: str,
        sources: Mapping[str, tuple[list[str], list[str]]],
        dedupe: str | None = None,
    ) -> str:
        """Store each declared table (overwriting its previous version, sharing unchanged fragments)."""
        from .tables.engine import write_rows

        head = self.refs.get(BRANCHES, branch)
        entries: dict[str, TreeEntry | None] = {}
        for name, (files, key) in sources.items():
            existing = self.table_object(head, name) if head else None
            new, _ = write_rows(self._table_io(), writer, existing, files, key, "overwrite", dedupe=dedupe)
            table = new if new is not None else existing
            assert table is not None
            tid = writer.add_object(table)
            entries[name] = TreeEntry(
                name.rsplit("/", 1)[-1], TABLE, tid, sum(f.size for f in table.fragments), MODE_FILE
            )
        writer.flush()  # the new root tree must be readable to apply the table entries to it
        return apply_changes(self.odb, writer, tree, entries)

    def commit_changes(
        self,
        branch: str,
        changes: Mapping[str, bytes | str | os.PathLike[str] | None],
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """Set or delete individual paths on a branch. Values are bytes, a local file path, or None (delete).

        If the branch moved meanwhile, the change is rebased when nobody else touched the same paths, and
        `RefConflictError` is raised when they did.
        """
        t0 = time.perf_counter()
        check_ref_name(branch)
        base = self.refs.get(BRANCHES, branch) or self.resolve(self.default_branch)
        stats = SnapshotStats()
        entries: dict[str, TreeEntry | None] = {}
        with RepoLock(self.store, exclusive=False, purpose="commit"), self.odb.writer() as writer:
            for path, value in changes.items():
                parts = split_path(path)
                if not parts:
                    raise UsageError("a change needs a path below the root", path=path)
                norm = "/".join(parts)
                if value is None:
                    entries[norm] = None
                    continue
                if isinstance(value, (bytes, bytearray, memoryview)):
                    data = bytes(value)
                else:
                    try:
                        with open(value, "rb") as f:
                            data = f.read()
                    except OSError as exc:
                        raise UsageError(f"cannot read {value}: {exc.strerror}", path=str(value)) from None
                fid = store_bytes(writer, data, self.config.chunker, stats)
                entries[norm] = TreeEntry(parts[-1], FILE, fid, len(data), MODE_FILE)
            result = self._commit(
                branch, writer, changes=entries, base=base, message=message, meta=meta, create_from=self.default_branch
            )
        return CommitResult(
            result.commit, branch, result.created, result.parent, time.perf_counter() - t0, stats.to_json()
        )

    def _commit(
        self,
        branch: str,
        writer: PackWriter,
        *,
        message: str,
        meta: Mapping[str, Any] | None,
        tree: str | None = None,
        changes: Mapping[str, TreeEntry | None] | None = None,
        base: str | None = None,
        allow_empty: bool = False,
        create_from: str | None = None,
    ) -> CommitResult:
        """Publish a commit of `tree` (or of `changes` applied to `base`) and move the branch by CAS.

        A missing branch is created at this commit (its parent the head of `create_from`) when that is given,
        so a write that fails before its commit leaves no new branch behind."""
        base_tree = self.odb.get_commit(base).tree if base else None
        keeper = Gatekeeper.load(self)  # gates and plugins (dacflow.gates): one small read when there are none
        delay = 0.001
        for _attempt in range(MAX_ATTEMPTS):
            head, token = self.refs.read(BRANCHES, branch)
            if head is None and create_from is not None:
                head = self.resolve(create_from)  # token None: the swap below only creates
            elif head is None:
                raise RefNotFoundError(f"branch {branch!r} was deleted while committing to it", ref=branch)
            head_tree = self.odb.get_commit(head).tree
            if changes is not None:
                if head != base:
                    theirs = diff_trees(self.odb, base_tree, head_tree, content=False).paths
                    clash = overlaps(set(changes), theirs)
                    clash |= inside_removed_dirs(self.odb, base_tree, head_tree, set(changes))
                    if clash:
                        raise RefConflictError(
                            f"branch {branch!r} moved and the new head also changed {', '.join(sorted(clash)[:5])}",
                            ref=branch,
                            paths=sorted(clash),
                        )
                new_tree = apply_changes(self.odb, writer, head_tree, changes)
            else:
                assert tree is not None
                new_tree = tree
            if new_tree == head_tree and not allow_empty:
                writer.flush()
                if token is None:  # a new branch with nothing new on it still comes into being
                    try:
                        self.refs.swap(BRANCHES, branch, head, None)
                    except RefConflictError:
                        continue
                return CommitResult(head, branch, False, head)
            commit = Commit(new_tree, (head,), message, default_author(), utc_now(), dict(meta or {}))
            cid = writer.add_object(commit)
            writer.flush()  # every object the commit reaches is readable before the ref can point at it
            change = keeper.check("commit", branch, head, cid)  # a veto raises GateRejectedError; the ref stays
            try:
                self.refs.swap(BRANCHES, branch, cid, token)
            except RefConflictError:
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 1.5, 0.05)
                continue
            log.info("branch %s -> %s", branch, cid[:16])
            keeper.after(change)  # after-commit hooks (notifications): their failures are logged, never raised
            return CommitResult(cid, branch, True, head)
        raise RefConflictError(f"branch {branch!r} kept moving; gave up after {MAX_ATTEMPTS} attempts", ref=branch)

    # -- tables ----------------------------------------------------------------------------------------------
    def _table_io(self) -> Any:
        """The table reader/writer (pyarrow is imported on first use, not with the repository)."""
        if self._tio is None:
            from .tables.engine import TableIO

            self._tio = TableIO(self.odb)
        return self._tio

    def table_object(self, ref: str, name: str) -> TableObject | None:
        """The table `name` in snapshot `ref`, or None if there is none; a non-table at that path is an error."""
        commit = self.get_commit(ref)
        entry = lookup(self.odb, commit.tree, name)
        if entry is None:
            return None
        if entry.kind != TABLE:
            raise UsageError(f"{name!r} in {ref} is a {entry.kind}, not a table", path=name)
        return self.odb.get_table(entry.ref)

    def require_table(self, ref: str, name: str) -> TableObject:
        """The table `name` in snapshot `ref`; raise `RefNotFoundError` if there is none."""
        table = self.table_object(ref, name)
        if table is None:
            raise RefNotFoundError(f"no table {name!r} in {ref}", ref=ref, path=name)
        return table

    def write_table(
        self,
        branch: str,
        name: str,
        data: Any,
        key: Sequence[str] | None = None,
        mode: str = "upsert",
        *,
        dedupe: str | None = None,
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """Write rows to table `name` on `branch` (modes: append, upsert, overwrite, delete) and commit.

        A concurrent commit to other paths is rebased over; a concurrent write to the same table makes this
        write run again on the new head, so concurrent upserts compose instead of overwriting each other."""
        from .tables.engine import write_rows

        t0 = time.perf_counter()
        parts = split_path(name)
        if not parts:
            raise UsageError("a table needs a name", path=name)
        name = "/".join(parts)
        check_ref_name(branch)
        io_ = self._table_io()
        for _attempt in range(MAX_ATTEMPTS):
            head = self.refs.get(BRANCHES, branch) or self.resolve(self.default_branch)
            existing = self.table_object(head, name)
            with RepoLock(self.store, exclusive=False, purpose="write_table"), self.odb.writer() as writer:
                new, stats = write_rows(io_, writer, existing, data, key, mode, dedupe=dedupe)
                if new is None:
                    return CommitResult(head, branch, False, head, time.perf_counter() - t0, stats.to_json())
                tid = writer.add_object(new)
                entry = TreeEntry(parts[-1], TABLE, tid, sum(f.size for f in new.fragments), MODE_FILE)
                counts = {"inserted": stats.inserted, "updated": stats.updated, "deleted": stats.deleted}
                info = dict(meta or {})
                info.setdefault("dacflow.tables", {name: {"mode": mode, **counts}})
                msg = message or f"{mode} {name}: +{stats.inserted} ~{stats.updated} -{stats.deleted}"
                try:
                    result = self._commit(
                        branch,
                        writer,
                        changes={name: entry},
                        base=head,
                        message=msg,
                        meta=info,
                        create_from=self.default_branch,
                    )
                except RefConflictError as exc:
                    if name in (exc.data.get("paths") or []):
                        log.info("table %s changed under this write; writing again on the new head", name)
                        continue
                    raise
            return CommitResult(
                result.commit,
                branch,
                result.created,
                result.parent,
                time.perf_counter() - t0,
                stats.to_json() | {"rows": new.rows},
            )
        raise RefConflictError(f"table {name!r} on {branch!r} kept changing; gave up", ref=branch)

    def read_table(self, ref: str, name: str, columns: Sequence[str] | None = None) -> Any:
        """The rows of table `name` in snapshot `ref` as an Arrow table, sorted by key."""
        rows = self._table_io().rows(self.require_table(ref, name))
        return rows.select(list(columns)) if columns is not None else rows

    def iter_table(self, ref: str, name: str, batch_rows: int = 65536) -> Iterator[Any]:
        """Stream a table as Arrow record batches in key order, one fragment at a time (bounded memory)."""
        return self._table_io().iter_batches(self.require_table(ref, name), batch_rows)

    def table_schema(self, ref: str, name: str) -> Any:
        """The Arrow schema and key of a table: (schema, key columns)."""
        from .tables.engine import schema_from_text

        table = self.require_table(ref, name)
        return schema_from_text(table.schema), list(table.key)

    def diff_table(self, a: str, b: str, table: str) -> Any:
        """Rows inserted, updated (before/after) and deleted in `table` from snapshot `a` to `b`."""
        from .tables.diff import table_diff

        old, new = self.table_object(a, table), self.table_object(b, table)
        if old is None and new is None:
            raise RefNotFoundError(f"no table {table!r} in {a} or {b}", path=table)
        return table_diff(self._table_io(), old, new)

    def training_delta(self, table: str, since: str | None, head: str | None = None) -> Any:
        """Rows of `table` a model trained on data commit `since` has not seen (see `dacflow.retrain`)."""
        from .retrain import training_delta

        return training_delta(self, table, since, head or self.default_branch)

    def merge(
        self,
        source: str,
        into: str | None = None,
        policy: Any = "fail",
        *,
        quarantine: str | None = None,
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Three-way merge of snapshot `source` into branch `into`; returns a `MergeResult` (see `dacflow.merge`).

        Policies: "fail" (conflicts raise `MergeConflictError`, nothing written), "ours", "theirs",
        "latest:<column>", {column: policy, "*": default}, or a callable given each conflict."""
        from .merge import merge

        return merge(
            self, source, into or self.default_branch, policy, quarantine=quarantine, message=message, meta=meta
        )

    # -- reading ---------------------------------------------------------------------------------------------
    def checkout(
        self, ref: str, dest: str, *, path: str = "", force: bool = False, progress: ProgressFn | None = None
    ) -> tuple[str, CheckoutStats]:
        """Write the snapshot `ref` (or its directory `path`) into `dest`; return (commit id, stats)."""
        commit_id = self.resolve(ref)
        entry = lookup(self.odb, self.odb.get_commit(commit_id).tree, path)
        if entry is None:
            raise RefNotFoundError(f"no path {path!r} in {ref}", ref=ref, path=path)
        if entry.kind != DIR:
            raise UsageError(f"{path!r} in {ref} is a {entry.kind}; checkout takes a directory", path=path)
        total = self.odb.get_tree(entry.ref).size
        stats = Checkout(self.odb, force=force, progress=progress).run(entry.ref, dest, total)
        if not path:
            write_checkout_marker(dest, self.url, ref if self._is_branch(ref) else commit_id, commit_id)
        return commit_id, stats

    def diff(self, a: str, b: str, table: str | None = None) -> Any:
        """Paths added, removed and modified from snapshot `a` to `b` (a `TreeDiff`); with `table`, the rows
        inserted, updated and deleted in that table (a `TableDiff`)."""
        if table is not None:
            return self.diff_table(a, b, table)
        return diff_trees(self.odb, self.get_commit(a).tree, self.get_commit(b).tree)

    def status(self, src: str, branch: str | None = None) -> tuple[str, TreeDiff]:
        """What changed in directory `src` since the head of `branch` (from its checkout marker by default).

        Hashes changed files without storing anything; returns (branch, diff).
        """
        src = os.path.abspath(src)
        if branch is None:
            branch = self._checkout_branch(src)
        head = self.resolve(branch)
        overlay = MemoryWriter(self.odb)
        builder = TreeBuilder(overlay, self.config.chunker, StatCache(self.config.id, src))  # type: ignore[arg-type]
        tree = builder.build(src)
        return branch, diff_trees(overlay.view(), self.odb.get_commit(head).tree, tree)

    # -- maintenance -----------------------------------------------------------------------------------------
    def check(self, *, read_data: bool = False, progress: ProgressFn | None = None) -> Any:
        """Verify the repository; see `dacflow.check.check_repository`."""
        from .check import check_repository

        return check_repository(self, read_data=read_data, progress=progress)

    def gc(self, *, grace_hours: float = 24.0, dry_run: bool = False, progress: ProgressFn | None = None) -> Any:
        """Delete unreachable objects older than the grace period; see `dacflow.gc.collect_garbage`."""
        from .gc import collect_garbage

        return collect_garbage(self, grace_seconds=grace_hours * 3600, dry_run=dry_run, progress=progress)


class Branch:
    """A named line of history in a repository; the handle scripts and engine plugins write through."""

    def __init__(self, repo: Repository, name: str) -> None:
        self.repo = repo
        self.name = name

    def __repr__(self) -> str:
        return f"Branch({self.repo.url!r}, {self.name!r})"

    @property
    def head(self) -> str:
        commit = self.repo.head(self.name)
        if commit is None:
            raise RefNotFoundError(f"no branch {self.name!r}", ref=self.name)
        return commit

    def snapshot(
        self, src: str, message: str = "", meta: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> CommitResult:
        """Snapshot a directory onto this branch (see `Repository.snapshot`)."""
        return self.repo.snapshot(src, self.name, message, meta, **kwargs)

    def commit_files(
        self,
        changes: Mapping[str, bytes | str | os.PathLike[str] | None],
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> CommitResult:
        """Set or delete paths on this branch (see `Repository.commit_changes`)."""
        return self.repo.commit_changes(self.name, changes, message, meta)

    def log(self, limit: int | None = None) -> Iterator[tuple[str, Commit]]:
        return self.repo.log(self.name, limit)

    def write_table(
        self, name: str, data: Any, key: Sequence[str] | None = None, mode: str = "upsert", **kwargs: Any
    ) -> str:
        """Write rows to a table on this branch; return the commit id the branch now points at."""
        return self.repo.write_table(self.name, name, data, key, mode, **kwargs).commit

    def read_table(self, name: str, columns: Sequence[str] | None = None) -> Any:
        return self.repo.read_table(self.name, name, columns)


__all__ = ["Branch", "CommitResult", "ObjectNotFoundError", "Repository"]
