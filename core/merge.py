"""Three-way merge of snapshots: paths by the rules of base/ours/theirs, tables row by row (DESIGN §6).

For every path: if ours and theirs agree, that is the result; if only one side changed it, that side wins;
if both changed it differently it is a conflict — except directories, which merge entry by entry, and tables,
which merge row by row and cell by cell (`dacflow.tables.merge`). A policy resolves conflicts; what it leaves
unresolved fails the merge (policy "fail": nothing is written) or, with `quarantine=BRANCH`, merges the clean
part and puts theirs' side of each conflict on that branch with a conflict report table.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import DacflowError, RefConflictError
from .objects import DIR, EMPTY_TREE, MODE_DIR, MODE_FILE, TABLE, Commit, Tree, TreeEntry, utc_now
from .odb import ObjectDatabase, PackWriter
from .refs import BRANCHES

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

CONFLICTS_TABLE = "_dacflow_conflicts"


class MergeConflictError(DacflowError):
    """The merge met conflicts its policy did not resolve; nothing was written. `.conflicts` lists them."""

    exit_code = 5


@dataclass
class MergeResult:
    """What a merge did: the commit `into` now points at (None if nothing changed) and the conflicts met."""

    commit: str | None
    base: str | None
    ours: str
    theirs: str
    conflict_list: list[dict[str, Any]] = field(default_factory=list)
    fast_forward: bool = False
    quarantine: str | None = None
    tables: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def conflicts(self) -> Any:
        """The conflicts as an Arrow table: table, key, column, base, ours, theirs, resolved, resolution."""
        from .tables.merge import conflicts_table

        return conflicts_table(self.conflict_list)

    @property
    def unresolved(self) -> list[dict[str, Any]]:
        return [c for c in self.conflict_list if not c["resolved"]]

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "base": self.base,
            "ours": self.ours,
            "theirs": self.theirs,
            "fast_forward": self.fast_forward,
            "conflicts": len(self.conflict_list),
            "unresolved": len(self.unresolved),
            "quarantine": self.quarantine,
            "rows_changed": self.tables,
            "seconds": round(self.seconds, 4),
        }


def merge_base(odb: ObjectDatabase, a: str, b: str) -> str | None:
    """The best common ancestor of two commits: of the common ancestors, one no other is younger than."""
    ancestors_a = _ancestors(odb, a)
    if b in ancestors_a:
        return b
    seen, queue, found = {b}, deque([b]), []
    while queue:
        cid = queue.popleft()
        if cid in ancestors_a:
            found.append(cid)
            continue  # its own ancestors are older common ancestors
        for parent in odb.get_commit(cid).parents:
            if parent not in seen:
                seen.add(parent)
                queue.append(parent)
    if not found:
        return None
    return max(found, key=lambda c: (odb.get_commit(c).time, c))


def _ancestors(odb: ObjectDatabase, start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        cid = stack.pop()
        if cid in seen:
            continue
        seen.add(cid)
        stack.extend(odb.get_commit(cid).parents)
    return seen


def _same(x: TreeEntry | None, y: TreeEntry | None) -> bool:
    if x is None or y is None:
        return x is y
    return (x.kind, x.ref, x.mode) == (y.kind, y.ref, y.mode)


def _describe(e: TreeEntry | None) -> str:
    return json.dumps(None if e is None else {"kind": e.kind, "id": e.ref, "size": e.size})


class _TreeMerger:
    def __init__(self, repo: Repository, writer: PackWriter, policy: Any) -> None:
        self.repo = repo
        self.odb = repo.odb
        self.writer = writer
        self.policy = policy
        self.conflicts: list[dict[str, Any]] = []
        self.rows_changed: dict[str, int] = {}
        self.sizes: dict[str, int] = {}  # trees written by this merge (not readable until the writer flushes)

    def tree(self, base: str | None, ours: str | None, theirs: str | None, prefix: str) -> str | None:
        if ours == theirs:
            return ours
        if base == ours:
            return theirs
        if base == theirs:
            return ours
        trees = [self.odb.get_tree(t) if t else EMPTY_TREE for t in (base, ours, theirs)]
        names = sorted({e.name for t in trees for e in t})
        out: list[TreeEntry] = []
        for name in names:
            b, o, t = (tr.get(name) for tr in trees)
            path = f"{prefix}/{name}" if prefix else name
            entry = self.entry(b, o, t, path)
            if entry is not None:
                out.append(TreeEntry(name, entry.kind, entry.ref, entry.size, entry.mode))
        if not out:
            return None
        tree = Tree.of(out)
        tid = self.writer.add_object(tree)
        self.sizes[tid] = tree.size
        return tid

    def entry(self, b: TreeEntry | None, o: TreeEntry | None, t: TreeEntry | None, path: str) -> TreeEntry | None:
        if _same(o, t):
            return o
        if _same(b, o):
            return t
        if _same(b, t):
            return o
        kinds = {e.kind for e in (o, t) if e is not None}
        # Directories merge entry by entry, also when one side removed the directory the other changed.
        if kinds == {DIR} and (
            (o is not None and t is not None and (b is None or b.kind == DIR)) or (b is not None and b.kind == DIR)
        ):
            sub = self.tree(b.ref if b else None, o.ref if o else None, t.ref if t else None, path)
            if sub is None:
                return None
            size = self.sizes[sub] if sub in self.sizes else self.odb.get_tree(sub).size
            named = o or t or b
            assert named is not None  # kinds == {DIR} means at least one side has the entry
            return TreeEntry(named.name, DIR, sub, size, MODE_DIR)
        if o is not None and t is not None and kinds == {TABLE} and (b is None or b.kind == TABLE):
            return self.table(b, o, t, path)
        return self.path_conflict(b, o, t, path)

    def table(self, b: TreeEntry | None, o: TreeEntry, t: TreeEntry, path: str) -> TreeEntry:
        from .tables.merge import merge_table

        io_ = self.repo._table_io()
        base = self.odb.get_table(b.ref) if b is not None else None
        result = merge_table(
            io_, self.writer, path, base, self.odb.get_table(o.ref), self.odb.get_table(t.ref), self.policy
        )
        self.conflicts.extend(result.conflicts)
        self.rows_changed[path] = result.changed_rows
        assert result.table is not None
        tid = self.writer.add_object(result.table)
        return TreeEntry(o.name, TABLE, tid, sum(f.size for f in result.table.fragments), MODE_FILE)

    def path_conflict(
        self, b: TreeEntry | None, o: TreeEntry | None, t: TreeEntry | None, path: str
    ) -> TreeEntry | None:
        rule = self.policy.get("*", "fail") if isinstance(self.policy, Mapping) else self.policy
        choice = "ours" if rule == "ours" else "theirs" if rule == "theirs" else ""
        if callable(rule):
            from .tables.merge import UNRESOLVED

            picked = rule(
                {
                    "table": "",
                    "key": path,
                    "column": "*",
                    "base": _describe(b),
                    "ours": _describe(o),
                    "theirs": _describe(t),
                }
            )
            choice = "" if picked is UNRESOLVED else "theirs" if picked == _describe(t) else "ours"
        self.conflicts.append(
            {
                "table": "",
                "key": json.dumps(path),
                "column": "*",
                "base": _describe(b),
                "ours": _describe(o),
                "theirs": _describe(t),
                "resolved": bool(choice),
                "resolution": choice,
            }
        )
        return t if choice == "theirs" else o


def merge(
    repo: Repository,
    source: str,
    into: str,
    policy: Any = "fail",
    *,
    quarantine: str | None = None,
    message: str = "",
    meta: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Merge snapshot `source` into branch `into`; see the module docstring for the rules."""
    from .locks import RepoLock
    from .names import check_ref_name
    from .repository import default_author

    t0 = time.perf_counter()
    _check_policy(policy)
    check_ref_name(into)
    if quarantine is not None:
        check_ref_name(quarantine)
    theirs = repo.resolve(source)
    from .gates import Gatekeeper

    keeper = Gatekeeper.load(repo)  # the gates of `into` (dacflow.gates): a veto leaves it where it was
    if quarantine is not None:
        keeper.check_quarantine(quarantine)
    for _attempt in range(50):
        ours, token = repo.refs.read(BRANCHES, into)
        if ours is None:
            from .errors import RefNotFoundError

            raise RefNotFoundError(f"no branch {into!r} to merge into", ref=into)
        base = merge_base(repo.odb, ours, theirs)
        result = MergeResult(None, base, ours, theirs)
        if base == theirs or ours == theirs:
            result.seconds = time.perf_counter() - t0
            return result  # already merged
        if base == ours:
            change = keeper.check("merge", into, ours, theirs, source)  # a fast-forward is a merge for the gates
            try:
                repo.refs.swap(BRANCHES, into, theirs, token)
            except RefConflictError:
                continue
            keeper.after(change)
            result.commit, result.fast_forward = theirs, True
            result.seconds = time.perf_counter() - t0
            return result
        with RepoLock(repo.store, exclusive=False, purpose="merge"), repo.odb.writer() as writer:
            trees = [repo.odb.get_commit(c).tree if c else None for c in (base, ours, theirs)]
            merger = _TreeMerger(repo, writer, policy)
            tree = merger.tree(trees[0], trees[1], trees[2], "") or writer.add_object(EMPTY_TREE)
            result.conflict_list, result.tables = merger.conflicts, merger.rows_changed
            if result.unresolved and quarantine is None:
                raise MergeConflictError(
                    f"merging {source} into {into} met {len(result.unresolved)} unresolved conflict(s), e.g. "
                    f"{_first(result.unresolved)}; choose a policy (ours, theirs, latest:<column>) or quarantine "
                    "them on a side branch",
                    conflicts=result.unresolved[:1000],
                    count=len(result.unresolved),
                )
            info = dict(meta or {})
            info.setdefault(
                "dacflow.merge",
                {
                    "source": source,
                    "theirs": theirs,
                    "base": base,
                    "conflicts": len(result.conflict_list),
                    "unresolved": len(result.unresolved),
                    "policy": _policy_name(policy),
                    "rows_changed": dict(result.tables),
                },
            )
            commit = Commit(
                tree, (ours, theirs), message or f"merge {source} into {into}", default_author(), utc_now(), info
            )
            cid = writer.add_object(commit)
            writer.flush()
            change = keeper.check("merge", into, ours, cid, source)  # before the swap: a veto moves nothing
            try:
                repo.refs.swap(BRANCHES, into, cid, token)
            except RefConflictError:
                continue  # into moved: merge again onto its new head
            keeper.after(change)
            result.commit = cid
            if result.unresolved and quarantine is not None:
                result.quarantine = _quarantine(repo, writer, quarantine, cid, trees, theirs, result)
        result.seconds = time.perf_counter() - t0
        return result
    raise RefConflictError(f"branch {into!r} kept moving while merging; gave up", ref=into)


def _quarantine(
    repo: Repository,
    writer: PackWriter,
    branch: str,
    merged: str,
    trees: list[str | None],
    theirs: str,
    result: MergeResult,
) -> str:
    """Commit theirs' side of every unresolved conflict, and the conflict report, on a side branch."""
    import pyarrow as pa

    from .repository import default_author
    from .tables.engine import write_rows
    from .trees import apply_changes

    merger = _TreeMerger(repo, writer, "theirs")
    tree = merger.tree(trees[0], repo.odb.get_commit(merged).tree, trees[2], "") or writer.add_object(EMPTY_TREE)
    report = result.conflicts
    report = report.append_column("merge", pa.array([merged] * len(report), pa.string()))
    table, _ = write_rows(repo._table_io(), writer, None, report, ["table", "key", "column"], "overwrite")
    assert table is not None
    tid = writer.add_object(table)
    entry = TreeEntry(CONFLICTS_TABLE, TABLE, tid, sum(f.size for f in table.fragments), MODE_FILE)
    writer.flush()  # apply_changes reads the merged root tree, which may have just been written
    tree = apply_changes(repo.odb, writer, tree, {CONFLICTS_TABLE: entry})
    for _attempt in range(50):
        head, token = repo.refs.read(BRANCHES, branch)
        parents = (merged,) if head is None else (merged, head)
        commit = Commit(
            tree,
            parents,
            f"quarantine: {len(result.unresolved)} conflict(s) of {result.theirs[:12]}",
            default_author(),
            utc_now(),
            {"dacflow.quarantine": {"merge": merged, "theirs": theirs}},
        )
        cid = writer.add_object(commit)
        writer.flush()
        try:
            repo.refs.swap(BRANCHES, branch, cid, token)
            return cid
        except RefConflictError:
            continue
    raise RefConflictError(f"quarantine branch {branch!r} kept moving", ref=branch)


def _first(conflicts: list[dict[str, Any]]) -> str:
    c = conflicts[0]
    where = f"table {c['table']!r} key {c['key']}" if c["table"] else f"path {json.loads(c['key'])!r}"
    return f"{where} column {c['column']!r} (ours {c['ours']}, theirs {c['theirs']})"


def _policy_name(policy: Any) -> Any:
    if callable(policy):
        return getattr(policy, "__name__", "callable")
    if isinstance(policy, Mapping):
        return {k: _policy_name(v) for k, v in policy.items()}
    return policy


def _check_policy(policy: Any) -> None:
    from .tables.merge import check_policy

    check_policy(policy)
