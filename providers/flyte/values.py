"""The values that flow between Flyte tasks: `Snapshot` (one commit, or a table or path in it) and `Delta`.

Both are plain frozen dataclasses and need no flytekit: `types.py` gives them their Flyte literal. Each carries a
**content id** — the id of what it selects (the commit's root tree, a table object, a file or directory object) —
which is what Flyte's cache keys on, so the same data reached through another store or commit hits the cache.
The store is opened lazily, on first use inside a task; a missing commit or an unreachable store raises a
`DacflowError` whose message is one line.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from dacflow.errors import DacflowError, RefNotFoundError, UsageError
from dacflow.names import split_path
from dacflow.objects import DIR, LINK, TABLE, hash_bytes, is_object_id
from dacflow.repository import Repository

if TYPE_CHECKING:
    from dacflow.tables.diff import TableDiff

log = logging.getLogger(__name__)

#: The column `Delta.rows()` adds to say what happened to each row: "insert", "update" or "delete".
CHANGE_COLUMN = "_change"
#: Literal layout version, carried in every literal so a reader can refuse one it does not know.
LITERAL_VERSION = "1"


def _norm(name: str | None) -> str | None:
    """A table or path name in its canonical form ('a/b'), or None."""
    if name is None or name == "":
        return None
    parts = split_path(name)
    if not parts:
        return None
    return "/".join(parts)


def _open(url: str) -> Repository:
    return Repository.open(url)


def _commit_id(repo: Repository, ref: str) -> str:
    """Resolve `ref`; a full id that the store lacks gets a message naming the store."""
    if is_object_id(ref):
        if repo.odb.locate(ref) is None:
            raise RefNotFoundError(f"commit {ref} is not in {repo.url} (was it pushed there?)", ref=ref, url=repo.url)
        repo.odb.get_commit(ref)
        return ref
    return repo.resolve(ref)


def _is_branch_at(repo: Repository, ref: str, commit: str) -> bool:
    if is_object_id(ref):
        return False
    try:
        return repo.head(ref) == commit
    except DacflowError:  # not a valid branch name (a tag, an id prefix, REF~N)
        return False


def content_id(repo: Repository, commit: str, *, table: str | None = None, path: str | None = None) -> str:
    """The id of what a snapshot selects: the root tree, a table object, or the object at a path."""
    if table is not None and path is not None:
        raise UsageError("a snapshot selects a table or a path, not both", table=table, path=path)
    root = repo.odb.get_commit(commit).tree
    name = table if table is not None else path
    if name is None:
        return root
    entry = repo.entry(commit, name)
    if table is not None and entry.kind != TABLE:
        raise UsageError(f"{name!r} in {commit[:12]} is a {entry.kind}, not a table", path=name)
    if entry.kind == LINK:  # a link's ref is its target text, not an object id
        return hash_bytes(f"link:{entry.ref}".encode())
    return entry.ref


@dataclass(frozen=True)
class Snapshot:
    """One commit of a dacflow repository, or one table or path in it: a value Flyte passes between tasks.

    `url` names the store, `commit` the commit id; `table` or `path` narrow it; `branch` says where it was taken
    (informational); `content` is the content id Flyte's cache keys on (filled in by `Snapshot.of`)."""

    url: str
    commit: str
    table: str | None = None
    path: str | None = None
    branch: str | None = None
    content: str | None = None

    @classmethod
    def of(
        cls, repo: Repository | str, ref: str = "main", *, table: str | None = None, path: str | None = None
    ) -> Snapshot:
        """The snapshot `ref` (branch, tag or commit) names in `repo`, with its content id."""
        repository = _open(repo) if isinstance(repo, str) else repo
        commit = _commit_id(repository, ref)
        table, path = _norm(table), _norm(path)
        branch = ref if _is_branch_at(repository, ref, commit) else None
        snap = cls(repository.url, commit, table, path, branch, content_id(repository, commit, table=table, path=path))
        snap._remember(repository)
        return snap

    # -- identity --------------------------------------------------------------------------------------------
    def with_content(self) -> Snapshot:
        """This snapshot with its content id filled in (opens the store if it is missing)."""
        if self.content:
            return self
        repo = self.repo()
        snap = replace(self, content=content_id(repo, self.commit, table=self.table, path=self.path))
        snap._remember(repo)
        return snap

    def select(self, *, table: str | None = None, path: str | None = None) -> Snapshot:
        """The same commit narrowed to a table or a path (or widened back to the whole tree)."""
        repo = self.repo()
        table, path = _norm(table), _norm(path)
        snap = replace(self, table=table, path=path, content=content_id(repo, self.commit, table=table, path=path))
        snap._remember(repo)
        return snap

    def at(self, url: str) -> Snapshot:
        """The same commit in another store (e.g. after a transfer); the content id is unchanged."""
        return replace(self, url=url)

    # -- reading ---------------------------------------------------------------------------------------------
    def repo(self) -> Repository:
        """The repository, opened once per value; raise a one-line `DacflowError` if the store or commit is gone."""
        cached = self.__dict__.get("_repo")
        if cached is not None:
            return cached
        repo = _open(self.url)
        _commit_id(repo, self.commit)
        self._remember(repo)
        return repo

    def read_table(self, table: str | None = None, columns: list[str] | None = None) -> Any:
        """The rows of `table` (default: the selected one) at this commit, as an Arrow table."""
        name = _norm(table) or self.table
        if name is None:
            raise UsageError("this snapshot selects no table; pass table=NAME", url=self.url)
        return self.repo().read_table(self.commit, name, columns)

    def read_file(self, path: str | None = None) -> bytes:
        """The content of file `path` (default: the selected path) at this commit."""
        name = _norm(path) or self.path
        if name is None:
            raise UsageError("this snapshot selects no file; pass path=NAME", url=self.url)
        return self.repo().read_file(self.commit, name)

    def checkout(self, dest: str | os.PathLike[str], *, force: bool = False) -> str:
        """Write the snapshot (or its selected directory) into `dest`; return the directory written."""
        repo = self.repo()
        dest = os.fspath(dest)
        sub = self.path or ""
        if sub and repo.entry(self.commit, sub).kind != DIR:
            os.makedirs(dest, exist_ok=True)
            target = os.path.join(dest, sub.rsplit("/", 1)[-1])
            with open(target, "wb") as f:
                f.write(repo.read_file(self.commit, sub))
            return target
        repo.checkout(self.commit, dest, path=sub, force=force)
        return dest

    def log_message(self) -> str:
        """The message of this snapshot's commit."""
        return self.repo().get_commit(self.commit).message

    @property
    def short(self) -> str:
        """A short human name: url@commit[:12] plus the table or path."""
        sel = f":{self.table or self.path}" if (self.table or self.path) else ""
        return f"{self.url}@{self.commit[:12]}{sel}"

    # -- plumbing --------------------------------------------------------------------------------------------
    def _remember(self, repo: Repository) -> None:
        object.__setattr__(self, "_repo", repo)  # not a field: not compared, printed or pickled

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Delta:
    """The rows of one table that changed between two commits of a repository.

    `base_content` and `target_content` are the table object ids at each commit ("" where the table is absent):
    the content Flyte's cache keys on."""

    url: str
    base: str
    target: str
    table: str
    base_content: str | None = None
    target_content: str | None = None

    @classmethod
    def of(cls, repo: Repository | str, base: str, target: str, table: str) -> Delta:
        """The change of `table` from `base` to `target` (any refs) in `repo`."""
        repository = _open(repo) if isinstance(repo, str) else repo
        name = _norm(table)
        if name is None:
            raise UsageError("a delta needs a table name")
        a, b = _commit_id(repository, base), _commit_id(repository, target)
        contents = _table_content(repository, a, name), _table_content(repository, b, name)
        delta = cls(repository.url, a, b, name, *contents)
        if not delta.base_content and not delta.target_content:
            raise RefNotFoundError(f"no table {name!r} in {a[:12]} or {b[:12]}", path=name)
        delta._remember(repository)
        return delta

    @classmethod
    def between(cls, base: Snapshot, target: Snapshot, table: str | None = None) -> Delta:
        """The change of a table from one snapshot to another of the same repository."""
        name = _norm(table) or target.table or base.table
        if name is None:
            raise UsageError("neither snapshot selects a table; pass table=NAME")
        return cls.of(target.repo(), base.commit, target.commit, name)

    def with_content(self) -> Delta:
        """This delta with its content ids filled in (opens the store if they are missing)."""
        if self.base_content is not None and self.target_content is not None:
            return self
        repo = self.repo()
        delta = replace(
            self,
            base_content=_table_content(repo, self.base, self.table),
            target_content=_table_content(repo, self.target, self.table),
        )
        delta._remember(repo)
        return delta

    def repo(self) -> Repository:
        """The repository, opened once per value; both commits must be in it."""
        cached = self.__dict__.get("_repo")
        if cached is not None:
            return cached
        repo = _open(self.url)
        _commit_id(repo, self.base)
        _commit_id(repo, self.target)
        self._remember(repo)
        return repo

    def diff(self) -> TableDiff:
        """The row diff: `.inserted`, `.updated` (and `.updated_before`), `.deleted`, `.counts`."""
        return self.repo().diff(self.base, self.target, table=self.table)

    def rows(self) -> Any:
        """Every changed row as one Arrow table: inserted and updated rows (new values), deleted rows (last
        values), with a `_change` column saying "insert", "update" or "delete"."""
        import pyarrow as pa

        d = self.diff()
        parts = []
        for kind, part in (("insert", d.inserted), ("update", d.updated), ("delete", d.deleted)):
            if CHANGE_COLUMN in part.column_names:
                raise UsageError(f"table {self.table!r} has a column named {CHANGE_COLUMN!r}", path=self.table)
            parts.append(part.append_column(CHANGE_COLUMN, pa.array([kind] * len(part), pa.string())))
        return pa.concat_tables(parts, promote_options="default")

    @property
    def counts(self) -> dict[str, int]:
        """Rows inserted, updated and deleted."""
        return self.diff().counts

    def _remember(self, repo: Repository) -> None:
        object.__setattr__(self, "_repo", repo)

    def __getstate__(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _table_content(repo: Repository, commit: str, table: str) -> str:
    obj = repo.table_object(commit, table)
    if obj is None:
        return ""
    return content_id(repo, commit, table=table)


__all__ = ["CHANGE_COLUMN", "Delta", "Snapshot", "content_id"]
