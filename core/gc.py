"""`gc`: delete objects unreachable from every ref, once they are older than a grace period (DESIGN §5.6).

gc holds the repository's exclusive lock, so no writer can be reusing an unreferenced object meanwhile. A pack
whose objects are all unreachable is deleted (index first, then pack); a pack that mixes live and dead objects is
rewritten with the live ones (new pack and index published first, old ones deleted after). Packs younger than
the grace period are never touched, nor are packs without an index until they are that old.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import KeyNotFoundError
from .graph import reachable
from .locks import RepoLock
from .odb import decode_blob, decode_index, index_key, pack_key
from .snapshot import ProgressFn

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)


@dataclass
class GcReport:
    reachable: int = 0
    packs_deleted: int = 0
    packs_rewritten: int = 0
    objects_deleted: int = 0
    bytes_freed: int = 0
    kept_young: int = 0
    temp_files_deleted: int = 0
    dry_run: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def reachable_objects(repo: Repository) -> set[str]:
    """Every object id reachable from any ref."""
    return reachable(repo.odb, list(repo.refs.all().values()))


def collect_garbage(
    repo: Repository, *, grace_seconds: float = 86400.0, dry_run: bool = False, progress: ProgressFn | None = None
) -> GcReport:
    """Run gc on `repo` and report what was (or, with `dry_run`, would be) deleted."""
    t0 = time.perf_counter()
    report = GcReport(dry_run=dry_run)
    odb, store = repo.odb, repo.store
    now = time.time()
    with RepoLock(store, exclusive=True, purpose="gc"):
        odb.refresh()
        live = reachable_objects(repo)
        report.reachable = len(live)
        created = odb.packs()
        index_entries = _all_index_entries(repo)
        # An object may sit in several packs (two writers stored it at once); only the indexed copy is live.
        doomed: list[str] = []
        rewrite: list[str] = []
        for pack_id, entries in index_entries.items():
            keep = [oid for oid, _ in entries if oid in live and odb.locate(oid, refresh=False).pack == pack_id]  # type: ignore[union-attr]
            dead = len(entries) - len(keep)
            if dead == 0:
                continue
            if now - created.get(pack_id, now) < grace_seconds:
                report.kept_young += dead
                continue
            (rewrite if keep else doomed).append(pack_id)
        total = len(doomed) + len(rewrite)
        if rewrite and not dry_run:
            with odb.writer() as writer:
                for pack_id in rewrite:
                    for oid, loc in index_entries[pack_id]:
                        if oid in live and odb.locate(oid, refresh=False).pack == pack_id:  # type: ignore[union-attr]
                            raw = decode_blob(oid, odb.read_stored(oid, loc), f"pack {pack_id[:16]}")
                            writer.add(oid, raw, loc.kind, force=True)
        for done, pack_id in enumerate(doomed + rewrite, 1):
            entries = index_entries[pack_id]
            info = store.head(pack_key(pack_id))
            report.objects_deleted += sum(1 for oid, _ in entries if oid not in live)
            report.bytes_freed += info.size if info else 0
            if pack_id in rewrite:
                report.packs_rewritten += 1
            else:
                report.packs_deleted += 1
            if not dry_run:
                store.delete(index_key(pack_id))
                store.delete(pack_key(pack_id))
            if progress:
                progress("gc", done, total)
        if not dry_run:
            odb.reset()
            report.temp_files_deleted += _orphans(repo, set(created), grace_seconds, now)
    report.seconds = time.perf_counter() - t0
    return report


def _all_index_entries(repo: Repository) -> dict[str, list[tuple[str, Any]]]:
    out: dict[str, list[tuple[str, Any]]] = {}
    for info in repo.store.list("index/"):
        try:
            pack_id, _, entries = decode_index(info.key, repo.store.get(info.key))
        except KeyNotFoundError:
            continue
        out[pack_id] = entries
    return out


def _orphans(repo: Repository, indexed: set[str], grace_seconds: float, now: float) -> int:
    """Delete packs that never got an index and staging files, once older than the grace period."""
    count = 0
    for info in repo.store.list("packs/"):
        pack_id = info.key.rsplit("/", 1)[-1]
        if pack_id not in indexed and now - info.mtime >= grace_seconds:
            repo.store.delete(info.key)
            count += 1
    temp_files = getattr(repo.store, "temp_files", None)
    if temp_files is not None:
        for path, mtime in temp_files():
            if now - mtime >= grace_seconds:
                try:
                    os.unlink(path)
                    count += 1
                except FileNotFoundError:
                    pass
    return count
