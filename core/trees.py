"""Operations on stored trees: walk, look up a path, diff two trees, and apply path changes.

Equal subtrees have equal ids, so diff and rebase skip everything two trees share: their cost follows the
change, not the tree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .errors import UnsafePathError
from .names import MAX_TREE_DEPTH, split_path
from .objects import DIR, EMPTY_TREE, FILE, MODE_DIR, Tree, TreeEntry
from .odb import ObjectDatabase, PackWriter


def walk(odb: ObjectDatabase, tree_id: str, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, TreeEntry]]:
    """Yield (path, entry) for every non-directory entry below a tree, depth first, in name order."""
    if depth > MAX_TREE_DEPTH:
        raise UnsafePathError(f"tree below {prefix!r} is nested deeper than {MAX_TREE_DEPTH} levels", name=prefix)
    for entry in odb.get_tree(tree_id):
        path = f"{prefix}/{entry.name}" if prefix else entry.name
        if entry.kind == DIR:
            yield from walk(odb, entry.ref, path, depth + 1)
        else:
            yield path, entry


def lookup(odb: ObjectDatabase, root_id: str, path: str) -> TreeEntry | None:
    """The entry at `path` below a root tree (the root itself for '' as a directory entry), or None."""
    parts = split_path(path)
    entry = TreeEntry("", DIR, root_id, 0, MODE_DIR)
    for part in parts:
        if entry.kind != DIR:
            return None
        found = odb.get_tree(entry.ref).get(part)
        if found is None:
            return None
        entry = found
    return entry


@dataclass(frozen=True, slots=True)
class Change:
    """One path that differs between two trees."""

    path: str
    status: str  # "added" | "removed" | "modified"
    kind: str
    old_size: int = 0
    new_size: int = 0
    bytes_changed: int = 0  # content in the new version that the old one does not have (by chunk)

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "status": self.status,
            "kind": self.kind,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "bytes_changed": self.bytes_changed,
        }


@dataclass
class TreeDiff:
    """Paths added, removed and modified between two trees, as plain data."""

    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    modified: list[Change] = field(default_factory=list)

    @property
    def changes(self) -> list[Change]:
        return sorted(self.added + self.removed + self.modified, key=lambda c: c.path)

    @property
    def paths(self) -> set[str]:
        return {c.path for c in self.changes}

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    @property
    def bytes_changed(self) -> int:
        return sum(c.bytes_changed for c in self.changes)

    def to_json(self) -> dict[str, object]:
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "modified": len(self.modified),
            "bytes_added": sum(c.new_size for c in self.added),
            "bytes_removed": sum(c.old_size for c in self.removed),
            "bytes_changed": self.bytes_changed,
            "changes": [c.to_json() for c in self.changes],
        }


def diff_trees(odb: ObjectDatabase, old: str | None, new: str | None, *, content: bool = True) -> TreeDiff:
    """Compare two trees (None = empty); with `content`, count bytes changed per modified file by chunk."""
    out = TreeDiff()
    _diff(odb, old, new, "", out, content, 0)
    return out


def _tree(odb: ObjectDatabase, tree_id: str | None) -> Tree:
    return EMPTY_TREE if tree_id is None else odb.get_tree(tree_id)


def _diff(
    odb: ObjectDatabase, old: str | None, new: str | None, prefix: str, out: TreeDiff, content: bool, depth: int
) -> None:
    if old == new:
        return
    if depth > MAX_TREE_DEPTH:
        raise UnsafePathError(f"tree below {prefix!r} is nested deeper than {MAX_TREE_DEPTH} levels", name=prefix)
    a, b = _tree(odb, old), _tree(odb, new)
    names = sorted({e.name for e in a} | {e.name for e in b})
    for name in names:
        ea, eb = a.get(name), b.get(name)
        path = f"{prefix}/{name}" if prefix else name
        if ea is not None and eb is not None and ea.kind == eb.kind == DIR:
            _diff(odb, ea.ref, eb.ref, path, out, content, depth + 1)
            continue
        if ea is not None and eb is not None and ea.kind == eb.kind:
            if ea.ref != eb.ref or ea.mode != eb.mode:
                changed = _bytes_changed(odb, ea, eb) if content else eb.size
                out.modified.append(Change(path, "modified", eb.kind, ea.size, eb.size, changed))
            continue
        if ea is not None:
            if ea.kind == DIR:
                _diff(odb, ea.ref, None, path, out, content, depth + 1)
            else:
                out.removed.append(Change(path, "removed", ea.kind, ea.size, 0, 0))
        if eb is not None:
            if eb.kind == DIR:
                _diff(odb, None, eb.ref, path, out, content, depth + 1)
            else:
                out.added.append(Change(path, "added", eb.kind, 0, eb.size, eb.size))


def _bytes_changed(odb: ObjectDatabase, old: TreeEntry, new: TreeEntry) -> int:
    if old.kind != FILE or new.kind != FILE:
        return new.size
    if old.ref == new.ref:
        return 0
    have = {c.id for c in odb.get_file(old.ref).chunks}
    return sum(c.size for c in odb.get_file(new.ref).chunks if c.id not in have)


def overlaps(a: set[str], b: set[str]) -> set[str]:
    """Paths of `a` that equal, contain or lie inside a path of `b`."""
    hits = set()
    for p in a:
        for q in b:
            if p == q or p.startswith(q + "/") or q.startswith(p + "/"):
                hits.add(p)
    return hits


def inside_removed_dirs(odb: ObjectDatabase, old: str | None, new: str, paths: set[str]) -> set[str]:
    """Paths of `paths` below a directory that tree `old` has and tree `new` no longer has as a directory.

    A diff lists files only, so a new path inside a directory the other side deleted overlaps none of them."""
    hits: set[str] = set()
    if old is None:
        return hits
    for path in paths:
        a, b = old, new
        for part in split_path(path)[:-1]:
            ea, eb = odb.get_tree(a).get(part), odb.get_tree(b).get(part)
            if ea is None or ea.kind != DIR:
                break
            if eb is None or eb.kind != DIR:
                hits.add(path)
                break
            if ea.ref == eb.ref:
                break
            a, b = ea.ref, eb.ref
    return hits


def apply_changes(
    odb: ObjectDatabase, writer: PackWriter, root_id: str | None, changes: Mapping[str, TreeEntry | None]
) -> str:
    """Write a new root tree: `root_id` with each path set to its entry (None deletes it). Rewrites only the
    trees on the changed paths; missing parent directories are created, empty ones left by deletes removed."""
    nested: dict[str, object] = {}
    for path, entry in changes.items():
        parts = split_path(path)
        if not parts:
            raise UnsafePathError("cannot replace the root of a tree with a path change", name=path)
        node = nested
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise UnsafePathError(f"path {path!r} is both a file and a directory in one change", name=path)
            node = nxt
        node[parts[-1]] = entry
    tree_id, _ = _apply(odb, writer, root_id, nested)
    return tree_id if tree_id is not None else writer.add_object(EMPTY_TREE)


def _apply(
    odb: ObjectDatabase, writer: PackWriter, tree_id: str | None, edits: dict[str, object]
) -> tuple[str | None, int]:
    tree = _tree(odb, tree_id)
    entries = {e.name: e for e in tree}
    for name, edit in edits.items():
        if isinstance(edit, dict):
            current = entries.get(name)
            sub = current.ref if current is not None and current.kind == DIR else None
            new_id, size = _apply(odb, writer, sub, edit)
            if new_id is None:
                entries.pop(name, None)
            else:
                entries[name] = TreeEntry(name, DIR, new_id, size, MODE_DIR)
        elif edit is None:
            entries.pop(name, None)
        else:
            assert isinstance(edit, TreeEntry)
            entries[name] = TreeEntry(name, edit.kind, edit.ref, edit.size, edit.mode)
    if not entries:
        return None, 0
    new_tree = Tree.of(list(entries.values()))
    return writer.add_object(new_tree), new_tree.size
