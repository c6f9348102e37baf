"""gc deletes exactly the unreachable objects older than the grace period, and never runs beside a writer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_tree
from dacflow import Repository, RepositoryLockedError
from dacflow.gc import reachable_objects
from dacflow.locks import RepoLock
from dacflow.objects import hash_bytes


def test_deleted_branch_is_collected_and_the_rest_survives(repo: Repository, tmp_path: Path) -> None:
    keep, drop = os.urandom(500_000), os.urandom(500_000)
    repo.snapshot(str(write_tree(tmp_path / "k", {"keep": keep})), "main", "keep")
    repo.branch("tmp")
    repo.snapshot(str(write_tree(tmp_path / "d", {"drop": drop})), "tmp", "drop")
    drop_chunks = [c.id for c in repo.odb.get_file(repo.entry("tmp", "drop").ref).chunks]
    repo.delete_branch("tmp")
    young = repo.gc(grace_hours=1)
    assert young.objects_deleted == 0 and young.kept_young > 0
    report = repo.gc(grace_hours=0)
    assert report.objects_deleted > 0 and report.bytes_freed >= len(drop) // 2
    fresh = Repository.open(repo.url)
    assert all(fresh.odb.locate(c) is None for c in drop_chunks)
    assert fresh.read_file("main", "keep") == keep
    assert fresh.check(read_data=True).ok


def test_mixed_pack_is_rewritten_keeping_live_objects(repo: Repository, tmp_path: Path) -> None:
    f1, f2 = os.urandom(300_000), os.urandom(300_000)
    repo.branch("tmp")
    repo.snapshot(str(write_tree(tmp_path / "both", {"f1": f1, "f2": f2})), "tmp", "both")
    repo.snapshot(str(write_tree(tmp_path / "one", {"f1": f1})), "main", "one")  # dedups into tmp's pack
    repo.delete_branch("tmp")
    live_before = reachable_objects(repo)
    report = repo.gc(grace_hours=0)
    assert report.packs_rewritten >= 1
    fresh = Repository.open(repo.url)
    assert fresh.read_file("main", "f1") == f1
    assert fresh.odb.locate(hash_bytes(f2[:1000])) is None
    assert reachable_objects(fresh) == live_before
    assert all(fresh.odb.locate(o) is not None for o in live_before)
    assert fresh.check(read_data=True).ok
    again = fresh.gc(grace_hours=0)
    assert again.objects_deleted == 0 and again.packs_rewritten == 0


def test_dry_run_deletes_nothing(repo: Repository, tmp_path: Path) -> None:
    repo.branch("tmp")
    repo.snapshot(str(write_tree(tmp_path / "d", {"x": os.urandom(1000)})), "tmp")
    repo.delete_branch("tmp")
    files_before = sorted(p for p in Path(repo.store.root).rglob("*") if p.is_file())  # type: ignore[attr-defined]
    report = repo.gc(grace_hours=0, dry_run=True)
    assert report.objects_deleted > 0
    assert sorted(p for p in Path(repo.store.root).rglob("*") if p.is_file()) == files_before  # type: ignore[attr-defined]


def test_gc_and_writers_exclude_each_other(repo: Repository, tmp_path: Path) -> None:
    with (
        RepoLock(repo.store, exclusive=False, purpose="snapshot"),
        pytest.raises(RepositoryLockedError, match="snapshot"),
    ):
        repo.gc(grace_hours=0)
    with RepoLock(repo.store, exclusive=True, purpose="gc"), pytest.raises(RepositoryLockedError, match="gc"):
        repo.snapshot(str(write_tree(tmp_path / "d", {"x": b"1"})), "main")
    # Both released: both work.
    repo.snapshot(str(write_tree(tmp_path / "d", {"x": b"1"})), "main")
    repo.gc(grace_hours=0)


def test_lock_of_a_dead_process_does_not_block_gc(repo: Repository) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    doc = {"exclusive": False, "purpose": "snapshot", "pid": pid, "host": socket.gethostname(), "time": time.time()}
    repo.store.put("locks/deadbeef", json.dumps(doc).encode())
    repo.gc(grace_hours=0)
    assert repo.store.head("locks/deadbeef") is None


def test_orphan_pack_and_temp_files_are_removed_after_grace(repo: Repository) -> None:
    root = Path(repo.store.root)  # type: ignore[attr-defined]
    orphan = root / "packs" / "ab" / ("ab" + "0" * 62)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"half-written pack that never got an index")
    tmp = Path(repo.store.staging_dir()) / "pack-crashed.tmp"
    tmp.write_bytes(b"x")
    repo.gc(grace_hours=1)
    assert orphan.exists() and tmp.exists()
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    os.utime(tmp, (old, old))
    repo.gc(grace_hours=1)
    assert not orphan.exists() and not tmp.exists()
    assert repo.check(read_data=True).ok
