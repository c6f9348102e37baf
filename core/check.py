"""`check`: prove the repository is whole. Structure always; every stored byte with `read_data`.

Structure: every object reachable from every ref is published, and every metadata object on the way decodes and
re-hashes. Read data: every pack is read in full and every object in it re-hashed, reachable or not. Each
problem is reported once, with the object id, its kind and where it is referenced from.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CorruptObjectError, DacflowError, KeyNotFoundError, ObjectNotFoundError, UnsafePathError
from .graph import COMMIT, DATA, FILE_OBJ, TABLE_OBJ, TREE, edges, load
from .odb import PACK_END, PACK_MAGIC, decode_blob, pack_key
from .snapshot import ProgressFn

if TYPE_CHECKING:
    from .repository import Repository


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: an object `missing` or `corrupt` (or an `error` reading something else)."""

    kind: str  # "missing" | "corrupt" | "error"
    id: str
    what: str  # chunk, file, tree, commit, pack, ref
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "what": self.what, "detail": self.detail}


@dataclass
class CheckReport:
    refs: int = 0
    commits: int = 0
    trees: int = 0
    files: int = 0
    tables: int = 0
    chunks: int = 0
    packs: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    read_data: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def ids(self, kind: str) -> set[str]:
        return {p.id for p in self.problems if p.kind == kind}

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "refs": self.refs,
            "commits": self.commits,
            "trees": self.trees,
            "files": self.files,
            "tables": self.tables,
            "chunks": self.chunks,
            "packs": self.packs,
            "bytes_read": self.bytes_read,
            "read_data": self.read_data,
            "seconds": round(self.seconds, 3),
            "problems": [p.to_json() for p in self.problems],
        }


class _Checker:
    def __init__(self, repo: Repository, read_data: bool, progress: ProgressFn | None) -> None:
        self.repo = repo
        self.odb = repo.odb
        self.read_data = read_data
        self.progress = progress
        self.report = CheckReport(read_data=read_data)
        self.seen: set[str] = set()
        self.flagged: set[str] = set()
        self.corrupt_stored: set[str] = set()
        self.present: set[str] = set()

    def problem(self, kind: str, oid: str, what: str, detail: str) -> None:
        if oid not in self.flagged:
            self.flagged.add(oid)
            self.report.problems.append(Problem(kind, oid, what, detail))

    def run(self) -> CheckReport:
        t0 = time.perf_counter()
        self.odb.refresh()
        self.present = {info.key.rsplit("/", 1)[-1] for info in self.odb.store.list("packs/")}
        if self.read_data:
            self.scan_packs()
        refs = self.repo.refs.all()
        self.report.refs = len(refs)
        for name, commit in sorted(refs.items()):
            self.commit(commit, f"ref {name}")
        self.report.seconds = time.perf_counter() - t0
        return self.report

    def _load(self, oid: str, what: str, where: str) -> Any:
        try:
            return load(self.odb, oid, what)
        except ObjectNotFoundError:
            self.problem("missing", oid, what, f"referenced by {where}")
        except (CorruptObjectError, UnsafePathError) as exc:
            self.problem("corrupt", oid, what, f"{exc.message} (referenced by {where})")
        except DacflowError as exc:
            self.problem("error", oid, what, f"{exc.message} (referenced by {where})")
        return None

    def commit(self, oid: str, where: str) -> None:
        """Walk everything reachable from a commit; each object is loaded (so re-hashed) once."""
        stack = [(oid, COMMIT, where)]
        counters = {COMMIT: "commits", TREE: "trees", FILE_OBJ: "files", TABLE_OBJ: "tables"}
        while stack:
            oid, what, ctx = stack.pop()
            if oid in self.seen:
                continue
            self.seen.add(oid)
            obj = self._load(oid, what, ctx)
            if obj is None:
                continue
            setattr(self.report, counters[what], getattr(self.report, counters[what]) + 1)
            here = f"{what} {oid[:12]}"
            for child, kind, _size in edges(obj):
                if kind != DATA:
                    stack.append((child, kind, here))
                elif child not in self.seen:
                    self.seen.add(child)
                    self.data(child, "chunk" if what == FILE_OBJ else "fragment", f"part of {here} ({ctx})")

    def data(self, oid: str, label: str, where: str) -> None:
        self.report.chunks += 1
        loc = self.odb.locate(oid, refresh=False)
        if loc is None or loc.pack not in self.present:
            self.problem("missing", oid, label, where)
        elif oid in self.corrupt_stored:
            self.problem("corrupt", oid, label, where)

    def scan_packs(self) -> None:
        """Read every pack whole and re-hash each object in it."""
        by_pack: dict[str, list[tuple[str, int, int]]] = {}
        for oid, loc in self.odb.entries():
            if loc.pack and self.odb.locate(oid, refresh=False) == loc:
                by_pack.setdefault(loc.pack, []).append((oid, loc.offset, loc.length))
        total = len(by_pack)
        for n, (pack_id, items) in enumerate(sorted(by_pack.items()), 1):
            self.report.packs += 1
            try:
                data = self.odb.store.get(pack_key(pack_id))
            except KeyNotFoundError:
                for oid, _, _ in items:
                    self.corrupt_stored.add(oid)
                    self.problem("missing", oid, "object", f"pack {pack_id[:16]} is missing")
                continue
            self.report.bytes_read += len(data)
            if not data.startswith(PACK_MAGIC) or not data.endswith(PACK_END) or len(data) < 24:
                detail = "pack is truncated or has a bad header/trailer"
                self.problem("corrupt", pack_id, "pack", detail)
            else:
                (index_len,) = struct.unpack("<Q", data[-16:-8])
                if index_len > len(data):
                    self.problem("corrupt", pack_id, "pack", "trailer names an impossible index length")
            for oid, offset, length in items:
                stored = data[offset : offset + length]
                try:
                    if len(stored) != length:
                        raise CorruptObjectError(f"object {oid} is truncated ({len(stored)} of {length} bytes)")
                    decode_blob(oid, stored, f"pack {pack_id[:16]}")
                except CorruptObjectError as exc:
                    self.corrupt_stored.add(oid)
                    self.problem("corrupt", oid, "object", exc.message)
            if self.progress:
                self.progress("read", n, total)


def check_repository(repo: Repository, *, read_data: bool = False, progress: ProgressFn | None = None) -> CheckReport:
    """Check `repo`; the report lists every missing or corrupt object (`report.ok` if none)."""
    return _Checker(repo, read_data, progress).run()
