"""The Python API: init/open, branches, tags, refs, snapshots, log, diff, checkout, status, path commits."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import read_tree, write_tree
from dacflow import (
    InvalidRefNameError,
    RefExistsError,
    RefNotFoundError,
    Repository,
    RepositoryExistsError,
    RepositoryNotFoundError,
    UnsupportedFormatError,
    UsageError,
)
from dacflow.objects import hash_bytes


def age(root: Path, seconds: float = 60) -> None:
    """Move every mtime into the past so the stat cache may trust it (recent files are 'racy')."""
    past = time.time() - seconds
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            os.utime(p, (past, past))


def test_init_makes_main_with_an_empty_first_commit(repo: Repository) -> None:
    head = repo.head("main")
    assert head is not None
    commit = repo.odb.get_commit(head)
    assert commit.parents == () and list(repo.odb.get_tree(commit.tree)) == []
    assert repo.branches() == {"main": head}


def test_init_twice_and_open_missing(repo_path: Path, tmp_path: Path) -> None:
    Repository.init(str(repo_path))
    with pytest.raises(RepositoryExistsError):
        Repository.init(str(repo_path))
    with pytest.raises(RepositoryNotFoundError, match="dacflow init"):
        Repository.open(str(tmp_path / "nothing"))


def test_config_records_chunking_and_rejects_unknown_versions(repo: Repository, repo_path: Path) -> None:
    doc = json.loads((repo_path / "config").read_text())
    assert doc["version"] == 1 and doc["hash"] == "blake3"
    assert doc["chunker"]["algorithm"] == "fastcdc2020" and doc["chunker"]["min_size"] > 0
    doc["version"] = 99
    (repo_path / "config").write_text(json.dumps(doc))
    with pytest.raises(UnsupportedFormatError, match="version 99"):
        Repository.open(str(repo_path))


def test_snapshot_checkout_round_trip(repo: Repository, tmp_path: Path) -> None:
    files = {"a.txt": b"hello", "dir/b.bin": os.urandom(700_000), "dir/deeper/c": b"", "x y/é.csv": b"1,2\n"}
    src = write_tree(tmp_path / "src", files)
    (src / "empty").mkdir()
    os.symlink("a.txt", src / "link")
    result = repo.snapshot(str(src), "main", "first", {"k": "v"})
    assert (
        result.created and result.stats["files"] == 4 and result.stats["bytes_total"] == sum(map(len, files.values()))
    )
    commit = repo.get_commit("main")
    assert commit.message == "first" and commit.meta == {"k": "v"} and commit.author == "tester"
    out = tmp_path / "out"
    commit_id, stats = repo.checkout("main", str(out))
    assert commit_id == result.commit and stats.files == 4
    assert read_tree(out) == files
    assert (out / "empty").is_dir() and os.readlink(out / "link") == "a.txt"
    assert repo.read_file("main", "dir/b.bin") == files["dir/b.bin"]


def test_unchanged_snapshot_makes_no_commit_and_uses_the_stat_cache(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {f"f{i}": os.urandom(5000) for i in range(50)})
    age(src)
    first = repo.snapshot(str(src), "main", "one")
    second = repo.snapshot(str(src), "main", "two")
    assert not second.created and second.commit == first.commit
    assert second.stats["files_cached"] == 50 and second.stats["files_hashed"] == 0
    (src / "f3").write_bytes(b"changed")
    third = repo.snapshot(str(src), "main", "three")
    assert third.created and third.stats["files_hashed"] == 1 and third.stats["files_cached"] == 49
    assert repo.read_file("main", "f3") == b"changed"


def test_stat_cache_is_not_trusted_when_objects_are_gone(repo_path: Path, tmp_path: Path) -> None:
    """A cache entry naming objects the repository no longer has must not be used."""
    src = write_tree(tmp_path / "src", {"a": os.urandom(1000)})
    age(src)
    first = Repository.init(str(repo_path))
    first.snapshot(str(src), "main", "x")
    # Same source directory, a brand-new repository that reuses the id is impossible; simulate a gc'd
    # repository by deleting every pack and index of the old one and starting over with the same config.
    other = Repository.init(str(tmp_path / "repo2"))
    other.config.__dict__["id"] = first.config.id  # share the cache key on purpose
    result = other.snapshot(str(src), "main", "y")
    assert result.stats["files_hashed"] == 1 and other.read_file("main", "a") == (src / "a").read_bytes()


def test_dedup_across_files_versions_and_branches(repo: Repository, tmp_path: Path) -> None:
    blob = os.urandom(2_000_000)
    src = write_tree(tmp_path / "src", {"a": blob})
    r1 = repo.snapshot(str(src), "main")
    assert r1.stats["bytes_new"] == len(blob)
    write_tree(src, {"copy": blob})
    r2 = repo.snapshot(str(src), "main")
    assert r2.stats["bytes_new"] == 0
    repo.branch("dev")
    write_tree(src, {"copy2": blob})
    r3 = repo.snapshot(str(src), "dev")
    assert r3.stats["bytes_new"] == 0 and r3.created


def test_branches_and_tags(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"1"})
    base = repo.snapshot(str(src), "main").commit
    dev = repo.branch("feature/x")
    assert dev.head == base and repo.branch("feature/x").head == base  # second call returns the existing one
    with pytest.raises(RefExistsError):
        repo.create_branch("feature/x")
    write_tree(src, {"a": b"2"})
    new = dev.snapshot(str(src), "on dev").commit
    assert repo.head("main") == base and repo.head("feature/x") == new
    assert repo.tag("v1", "feature/x") == new
    with pytest.raises(RefExistsError):
        repo.tag("v1", "main")
    assert repo.tags() == {"v1": new} and repo.resolve("v1") == new
    assert repo.delete_branch("feature/x") == new
    assert "feature/x" not in repo.branches() and repo.resolve("v1") == new
    with pytest.raises(UsageError):
        repo.delete_branch("main")
    assert repo.delete_tag("v1") == new
    with pytest.raises(RefNotFoundError):
        repo.resolve("v1")


@pytest.mark.parametrize("bad", ["", "..", "a..b", "/abs", "a/", ".hidden", "x.lock", "sp ace", "a//b", "a\x00"])
def test_invalid_ref_names(repo: Repository, bad: str) -> None:
    with pytest.raises(InvalidRefNameError):
        repo.branch(bad)


def test_resolve_forms(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"1"})
    c1 = repo.snapshot(str(src), "main").commit
    write_tree(src, {"a": b"2"})
    c2 = repo.snapshot(str(src), "main").commit
    assert repo.resolve("main") == c2 and repo.resolve(c2) == c2
    assert repo.resolve(c2[:10]) == c2 and repo.resolve("main~1") == c1
    with pytest.raises(RefNotFoundError, match="past the first commit"):
        repo.resolve("main~5")
    with pytest.raises(RefNotFoundError):
        repo.resolve("nope")
    with pytest.raises(RefNotFoundError):
        repo.resolve("f" * 64)


def test_log_is_newest_first_with_messages(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for i in range(5):
        write_tree(src, {"a": str(i).encode()})
        repo.snapshot(str(src), "main", f"m{i}")
    messages = [c.message for _, c in repo.log("main")]
    assert messages == ["m4", "m3", "m2", "m1", "m0", "init"]
    assert [c.message for _, c in repo.log("main", limit=2)] == ["m4", "m3"]


def test_diff_reports_paths_sizes_and_changed_bytes(repo: Repository, tmp_path: Path) -> None:
    big = os.urandom(3_000_000)
    src = write_tree(tmp_path / "src", {"keep": b"k", "gone": b"bye", "big": big, "d/x": b"x"})
    a = repo.snapshot(str(src), "main").commit
    (src / "gone").unlink()
    (src / "big").write_bytes(big + b"tail" * 1000)
    write_tree(src, {"new/file": b"12345"})
    b = repo.snapshot(str(src), "main").commit
    d = repo.diff(a, b)
    assert [c.path for c in d.added] == ["new/file"] and d.added[0].new_size == 5
    assert [c.path for c in d.removed] == ["gone"] and d.removed[0].old_size == 3
    assert [c.path for c in d.modified] == ["big"]
    mod = d.modified[0]
    assert mod.old_size == len(big) and mod.new_size == len(big) + 4000
    # Only the last chunk(s) changed: far less than the file, at least the appended bytes.
    assert 4000 <= mod.bytes_changed < 1_200_000
    assert not repo.diff(b, b)


def test_checkout_refuses_non_empty_dir_unless_forced(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"new", "b": b"bee"})
    repo.snapshot(str(src), "main")
    dest = write_tree(tmp_path / "dest", {"a": b"old", "other": b"keep me"})
    with pytest.raises(UsageError, match="not empty"):
        repo.checkout("main", str(dest))
    assert (dest / "a").read_bytes() == b"old"
    repo.checkout("main", str(dest), force=True)
    assert read_tree(dest) == {"a": b"new", "b": b"bee", "other": b"keep me"}


def test_checkout_of_a_subdirectory(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"x/y/z": b"z", "top": b"t"})
    repo.snapshot(str(src), "main")
    out = tmp_path / "out"
    repo.checkout("main", str(out), path="x")
    assert read_tree(out) == {"y/z": b"z"}
    with pytest.raises(UsageError, match="is a file"):
        repo.checkout("main", str(tmp_path / "o2"), path="top")


def test_status_sees_changes_without_storing(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"1", "b": b"2"})
    repo.snapshot(str(src), "main")
    out = tmp_path / "wc"
    repo.checkout("main", str(out))
    branch, d = repo.status(str(out))
    assert branch == "main" and not d
    packs_before = sorted(p.name for p in (Path(repo.store.root) / "index").iterdir())  # type: ignore[attr-defined]
    (out / "a").write_bytes(b"changed")
    (out / "b").unlink()
    (out / "c").write_bytes(b"3")
    _, d = repo.status(str(out))
    assert (sorted(c.path for c in d.modified), sorted(c.path for c in d.removed), sorted(c.path for c in d.added)) == (
        ["a"],
        ["b"],
        ["c"],
    )
    assert sorted(p.name for p in (Path(repo.store.root) / "index").iterdir()) == packs_before  # type: ignore[attr-defined]


def test_snapshot_from_a_checkout_goes_to_its_branch(repo: Repository, tmp_path: Path) -> None:
    repo.branch("dev")
    src = write_tree(tmp_path / "src", {"a": b"1"})
    repo.snapshot(str(src), "dev")
    wc = tmp_path / "wc"
    repo.checkout("dev", str(wc))
    (wc / "a").write_bytes(b"2")
    result = repo.snapshot(str(wc), message="edit in checkout")
    assert result.branch == "dev" and repo.read_file("dev", "a") == b"2"
    with pytest.raises(RefNotFoundError):
        repo.entry("main", "a")  # main never saw the file


def test_commit_changes_sets_and_deletes_paths(repo: Repository, tmp_path: Path) -> None:
    r1 = repo.commit_changes("main", {"a/b.txt": b"one", "c": b"see"}, "add")
    assert r1.created and repo.read_file("main", "a/b.txt") == b"one"
    local = tmp_path / "f"
    local.write_bytes(b"from disk")
    repo.commit_changes("main", {"a/b.txt": None, "d": str(local)}, "edit")
    tree = {
        p: e for p, e in __import__("dacflow.trees", fromlist=["walk"]).walk(repo.odb, repo.get_commit("main").tree)
    }
    assert sorted(tree) == ["c", "d"] and repo.read_file("main", "d") == b"from disk"
    again = repo.commit_changes("main", {"c": b"see"}, "no-op")
    assert not again.created


def test_object_ids_are_content_hashes(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"abc"})
    repo.snapshot(str(src), "main")
    entry = repo.entry("main", "a")
    fobj = repo.odb.get_file(entry.ref)
    assert fobj.chunks[0].id == hash_bytes(b"abc")
    assert hash_bytes(repo.odb.get_bytes(entry.ref)) == entry.ref


def test_snapshot_errors_are_clear(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not a directory"):
        repo.snapshot(str(tmp_path / "missing"), "main")
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(UsageError, match="not a directory"):
        repo.snapshot(str(f), "main")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_a_clear_error(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"x"})
    (src / "a").chmod(0)
    with pytest.raises(UsageError, match="permission denied"):
        repo.snapshot(str(src), "main")


def test_failed_write_to_a_new_branch_leaves_no_branch(repo: Repository, tmp_path: Path) -> None:
    from dacflow import UnsafePathError

    src = write_tree(tmp_path / "src", {"ok": b"1"})
    (src / "bad\x7fname").write_bytes(b"x")  # DEL is a control character: refused
    with pytest.raises(UnsafePathError):
        repo.snapshot(str(src), "feature")
    assert "feature" not in repo.branches()
    (src / "bad\x7fname").unlink()
    result = repo.snapshot(str(src), "feature")
    assert result.created and repo.head("feature") == result.commit
    # Unchanged content on yet another new branch still creates the branch (at the same commit).
    (tmp_path / "empty").mkdir()
    repo.snapshot(str(tmp_path / "empty"), "empty-branch")
    assert repo.head("empty-branch") == repo.head("main")


def test_unusable_chunker_parameters_are_refused(tmp_path: Path) -> None:
    from dacflow.chunking import ChunkerParams

    with pytest.raises(UsageError, match="FastCDC"):
        Repository.init(str(tmp_path / "r"), chunker=ChunkerParams(min_size=64, avg_size=100, max_size=500))


def test_files_written_just_before_a_snapshot_are_cached_after_a_moment(repo: Repository, tmp_path: Path) -> None:
    """On a file system with sub-second mtimes the racy window is 50 ms, not 2 s: write, wait a little,
    snapshot, and the next snapshot trusts the stat cache."""
    src = write_tree(tmp_path / "src", {"fresh.bin": os.urandom(100_000)})
    if os.stat(src / "fresh.bin").st_mtime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps whole-second mtimes")
    time.sleep(0.1)
    repo.snapshot(str(src), "main")
    again = repo.snapshot(str(src), "main")
    assert again.stats["files_cached"] == 1 and again.stats["files_hashed"] == 0


def test_a_deep_change_rewrites_only_the_trees_on_its_path(repo: Repository, tmp_path: Path) -> None:
    files = {f"d{a}/e{b}/f{c}.txt": f"{a}{b}{c}".encode() for a in range(5) for b in range(5) for c in range(8)}
    src = write_tree(tmp_path / "src", files)  # 200 files in 31 directories
    repo.snapshot(str(src), "main")
    before = {oid for oid, loc in repo.odb.entries() if loc.kind == "m"}
    (src / "d3" / "e1" / "f5.txt").write_bytes(b"changed")
    repo.snapshot(str(src), "main")
    fresh = Repository.open(repo.url)
    new = {oid for oid, loc in fresh.odb.entries() if loc.kind == "m"} - before
    assert len(new) == 5  # root, d3, d3/e1 trees + the file object + the commit; nothing else
    assert fresh.head("main") in new


def test_a_hand_edited_checkout_marker_falls_back_to_the_default_branch(repo: Repository, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a": b"1"})
    (src / ".dacflow").mkdir()
    for bogus in ("../../x", "no-such-branch", ""):
        (src / ".dacflow" / "checkout.json").write_text(json.dumps({"ref": bogus}))
        assert repo.snapshot(str(src)).branch == "main"
        assert repo.status(str(src))[0] == "main"
