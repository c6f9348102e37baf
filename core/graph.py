"""The object graph in one place: what each kind of object references.

gc (what is reachable), check (what must exist) and transfer (what the destination lacks) all walk the same
edges; adding a kind of object means teaching only this module about it.
"""

from __future__ import annotations

from collections.abc import Iterator

from .objects import DIR, FILE, LINK, TABLE, Commit, FileObject, TableObject, Tree
from .odb import ObjectDatabase

COMMIT, TREE, FILE_OBJ, TABLE_OBJ, DATA = "commit", "tree", "file", "table", "data"
_ENTRY_KIND = {DIR: TREE, FILE: FILE_OBJ, TABLE: TABLE_OBJ}


def load(odb: ObjectDatabase, oid: str, what: str) -> Commit | Tree | FileObject | TableObject:
    """Read and validate one metadata object of a known kind."""
    if what == COMMIT:
        return odb.get_commit(oid)
    if what == TREE:
        return odb.get_tree(oid)
    if what == FILE_OBJ:
        return odb.get_file(oid)
    if what == TABLE_OBJ:
        return odb.get_table(oid)
    raise ValueError(f"{what} is not a metadata kind")


def edges(obj: Commit | Tree | FileObject | TableObject) -> Iterator[tuple[str, str, int]]:
    """(id, kind, size) of each object `obj` references; data leaves carry their byte size."""
    if isinstance(obj, Commit):
        yield obj.tree, TREE, 0
        for parent in obj.parents:
            yield parent, COMMIT, 0
    elif isinstance(obj, Tree):
        for entry in obj:
            if entry.kind != LINK:
                yield entry.ref, _ENTRY_KIND[entry.kind], entry.size
    elif isinstance(obj, FileObject):
        for chunk in obj.chunks:
            yield chunk.id, DATA, chunk.size
    elif isinstance(obj, TableObject):
        for frag in obj.fragments:
            yield frag.id, DATA, frag.size


def reachable(odb: ObjectDatabase, roots: list[str]) -> set[str]:
    """Every object id reachable from the given commits."""
    seen: set[str] = set()
    stack = [(r, COMMIT) for r in roots]
    while stack:
        oid, what = stack.pop()
        if oid in seen:
            continue
        seen.add(oid)
        if what != DATA:
            stack.extend((child, kind) for child, kind, _ in edges(load(odb, oid, what)))
    return seen
