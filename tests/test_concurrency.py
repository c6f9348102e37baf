"""Concurrent writers on one branch: nothing is ever lost, conflicts are refused, snapshots land on top.

The multi-writer tests run real OS processes (each a fresh interpreter) that all wait for a common "go" and
then write to the same branch of the same local repository. The race tests make "the branch moved meanwhile"
happen deterministically: a second `Repository` instance commits at a chosen seam of the first one's write
(after the base was read but before the first ref read, or right before the compare-and-swap).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import read_tree, write_tree
from dacflow import RefConflictError, Repository

BRANCH = "main"

# The content every commit worker writes; exec-ed here and in the workers so both sides agree on the bytes.
PAYLOAD_SRC = """
import hashlib
def payload(i, j):
    head = f"process {i} commit {j}\\n".encode()
    body = hashlib.blake2b(head).digest() * (1 + (i * 37 + j * 11) % 97)
    return head + body
"""
_ns: dict[str, Any] = {}
exec(PAYLOAD_SRC, _ns)
payload: Callable[[int, int], bytes] = _ns["payload"]

COMMIT_WORKER = (
    PAYLOAD_SRC
    + r"""
import json, sys
from dacflow import Repository
repo_path, idx, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
repo = Repository.open(repo_path)
print("ready", flush=True)
sys.stdin.readline()
out = []
for j in range(count):
    r = repo.commit_changes("main", {f"p{idx}/c{j}": payload(idx, j)}, f"p{idx} c{j}")
    out.append({"commit": r.commit, "created": r.created, "parent": r.parent})
print(json.dumps(out), flush=True)
"""
)

SNAPSHOT_WORKER = r"""
import json, sys
from dacflow import Repository
repo_path, dirs = sys.argv[1], sys.argv[2:]
repo = Repository.open(repo_path)
print("ready", flush=True)
sys.stdin.readline()
out = []
for d in dirs:
    r = repo.snapshot(d, "main", f"snapshot of {d}")
    out.append({"dir": d, "commit": r.commit, "created": r.created, "parent": r.parent})
print(json.dumps(out), flush=True)
"""


def run_together(tmp_path: Path, code: str, argvs: list[list[str]], timeout: float = 120.0) -> list[Any]:
    """Start one interpreter per argv, release them all at once, return each one's JSON result."""
    procs = []
    errs = []
    for n, argv in enumerate(argvs):
        err = open(tmp_path / f"worker{n}.err", "w+")  # noqa: SIM115 - closed below
        errs.append(err)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        )
    try:
        for p in procs:  # every worker has imported dacflow and opened the repository
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", f"worker did not start: {line!r}"
        for p in procs:  # release them as close together as possible
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        deadline = time.monotonic() + timeout
        for n, p in enumerate(procs):
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            errs[n].seek(0)
            assert p.returncode == 0, f"worker {n} failed (rc {p.returncode}):\n{errs[n].read()}"
            results.append(json.loads(out))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for err in errs:
            err.close()


def history(repo: Repository, ref: str = BRANCH) -> list[tuple[str, Any]]:
    return list(repo.log(ref))


def ancestors(repo: Repository, commit: str) -> set[str]:
    return {cid for cid, _ in repo.log(commit)}


def tree_of_dir(tmp_path: Path, src: Path) -> str:
    """The tree id of a directory, computed in a separate scratch repository (ids are content addresses)."""
    scratch = tmp_path / "scratch-repos" / f"r{time.monotonic_ns()}"
    ref = Repository.init(str(scratch))
    return ref.get_commit(ref.snapshot(str(src), BRANCH, "reference").commit).tree


# -- many processes, one branch -----------------------------------------------------------------------------


def test_eight_processes_commit_to_one_branch_and_nothing_is_lost(tmp_path: Path, repo: Repository) -> None:
    procs, per_proc = 8, 25
    init = repo.head(BRANCH)
    assert init is not None

    results = run_together(tmp_path, COMMIT_WORKER, [[repo.url, str(i), str(per_proc)] for i in range(procs)])

    # Every call made a new commit and reports it.
    made = [r for res in results for r in res]
    assert len(made) == procs * per_proc
    assert all(r["created"] for r in made)
    made_ids = [r["commit"] for r in made]
    assert len(set(made_ids)) == procs * per_proc

    fresh = Repository.open(repo.url)
    log = history(fresh)
    ids = [cid for cid, _ in log]
    # Exactly 200 new commits plus the init commit, each reachable from the branch head, none twice.
    assert len(ids) == procs * per_proc + 1
    assert len(set(ids)) == len(ids)
    assert set(ids) == set(made_ids) | {init}
    # A single line of history: every commit has one parent, the previous one; the init commit is the root.
    by_id = dict(log)
    cur, chain = fresh.head(BRANCH), []
    while cur is not None:
        chain.append(cur)
        parents = by_id[cur].parents
        assert len(parents) <= 1
        cur = parents[0] if parents else None
    assert len(chain) == len(ids) and chain[-1] == init
    # Each process's commits appear in its own order, each message exactly once.
    messages = [c.message for _, c in log if c.parents]
    assert sorted(messages) == sorted(f"p{i} c{j}" for i in range(procs) for j in range(per_proc))
    position = {cid: n for n, cid in enumerate(reversed(chain))}
    for res in results:
        order = [position[r["commit"]] for r in res]
        assert order == sorted(order)
    # Each commit's reported parent is its parent in history.
    for r in made:
        assert by_id[r["commit"]].parents == (r["parent"],)

    # The final tree holds every path with the right bytes, and nothing else.
    expected = {f"p{i}/c{j}": payload(i, j) for i in range(procs) for j in range(per_proc)}
    for path, data in expected.items():
        assert fresh.read_file(BRANCH, path) == data, path
    out = tmp_path / "out"
    fresh.checkout(BRANCH, str(out))
    assert read_tree(out) == expected

    report = fresh.check(read_data=True)
    assert report.ok, report.problems
    assert report.commits == procs * per_proc + 1


def test_processes_snapshotting_different_directories_to_one_branch(tmp_path: Path, repo: Repository) -> None:
    procs, per_proc = 6, 3
    init = repo.head(BRANCH)
    dirs: dict[str, dict[str, bytes]] = {}
    argvs = []
    for i in range(procs):
        mine = []
        for j in range(per_proc):
            files = {
                "common/shared.txt": b"the same in every snapshot\n" * 100,
                f"owner/p{i}-s{j}.txt": f"snapshot {j} of process {i}\n".encode() * (50 + 13 * j),
                f"data/part-{j}.bin": payload(i, j) * 40,
                f"data/nested/{i}/{j}/leaf": payload(j, i),
            }
            src = write_tree(tmp_path / "src" / f"p{i}-s{j}", files)
            dirs[str(src)] = files
            mine.append(str(src))
        argvs.append([repo.url, *mine])
    trees = {d: tree_of_dir(tmp_path, Path(d)) for d in dirs}
    assert len(set(trees.values())) == len(dirs)  # every snapshot is a different tree

    results = run_together(tmp_path, SNAPSHOT_WORKER, argvs)

    made = [r for res in results for r in res]
    assert len(made) == procs * per_proc and all(r["created"] for r in made)
    fresh = Repository.open(repo.url)
    log = history(fresh)
    ids = {cid for cid, _ in log}
    assert len(log) == procs * per_proc + 1
    assert ids == {r["commit"] for r in made} | {init}
    by_id = dict(log)
    for r in made:
        # Each commit's tree is exactly the directory it snapshotted, on top of what was the head then.
        assert by_id[r["commit"]].tree == trees[r["dir"]]
        assert by_id[r["commit"]].parents == (r["parent"],)
    # Linear history, so every one of them is an ancestor of the final head.
    parents = [c.parents for _, c in log]
    assert sorted(len(p) for p in parents) == [0] + [1] * (procs * per_proc)
    assert len({p[0] for p in parents if p}) == procs * per_proc

    head = fresh.head(BRANCH)
    assert head is not None
    last = next(r for r in made if r["commit"] == head)
    out = tmp_path / "out"
    fresh.checkout(BRANCH, str(out))
    assert read_tree(out) == dirs[last["dir"]]
    report = fresh.check(read_data=True)
    assert report.ok, report.problems


# -- deterministic races ------------------------------------------------------------------------------------

SEAMS = ["before_first_read", "before_swap"]


def race(repo: Repository, monkeypatch: pytest.MonkeyPatch, seam: str, other_write: Callable[[], None]) -> list[int]:
    """Make `other_write` (through another Repository instance) happen once, at `seam` of repo's next write.

    before_first_read: after the writer read its base and stored its objects, before it first reads the head.
    before_swap: after it read the head and published its commit, right before the compare-and-swap.
    Returns a one-element counter of how often the other write ran.
    """
    fired = [0]

    def fire() -> None:
        if not fired[0]:
            fired[0] += 1
            other_write()

    if seam == "before_first_read":
        original = repo._commit

        def wrapped_commit(*args: Any, **kwargs: Any) -> Any:
            fire()
            return original(*args, **kwargs)

        monkeypatch.setattr(repo, "_commit", wrapped_commit)
    else:
        original_swap = repo.refs.swap

        def wrapped_swap(*args: Any, **kwargs: Any) -> Any:
            fire()
            return original_swap(*args, **kwargs)

        monkeypatch.setattr(repo.refs, "swap", wrapped_swap)
    return fired


BASE_FILES = {
    "a.txt": b"alpha\n",
    "b.txt": b"bravo\n",
    "d/x": b"x in d\n",
    "d/y": b"y in d\n",
    "d/sub/z": b"z deep in d\n",
}


@pytest.fixture
def based(repo: Repository) -> tuple[Repository, Repository, str]:
    """(repo, a second instance on the same repository, head after committing BASE_FILES)."""
    result = repo.commit_changes(BRANCH, dict(BASE_FILES), "base")
    return repo, Repository.open(repo.url), result.commit


def files_at(repo: Repository, ref: str, tmp_path: Path) -> dict[str, bytes]:
    out = tmp_path / f"co-{time.monotonic_ns()}"
    repo.checkout(ref, str(out))
    return read_tree(out)


DISJOINT = {
    # name: (their change, my change, expected files afterwards)
    "different_files": (
        {"b.txt": b"bravo by them\n"},
        {"a.txt": b"alpha by me\n", "new/mine": b"mine\n"},
        BASE_FILES | {"b.txt": b"bravo by them\n", "a.txt": b"alpha by me\n", "new/mine": b"mine\n"},
    ),
    "same_directory_other_file": (
        {"d/x": b"x by them\n", "d/theirs": b"theirs\n"},
        {"d/y": None, "d/mine": b"mine\n"},
        {k: v for k, v in BASE_FILES.items() if k != "d/y"}
        | {"d/x": b"x by them\n", "d/theirs": b"theirs\n", "d/mine": b"mine\n"},
    ),
    "they_delete_elsewhere": (
        {"a.txt": None, "d/sub/z": None},
        {"d/mine": b"mine\n"},
        {k: v for k, v in BASE_FILES.items() if k not in ("a.txt", "d/sub/z")} | {"d/mine": b"mine\n"},
    ),
}


@pytest.mark.parametrize("seam", SEAMS)
@pytest.mark.parametrize("case", sorted(DISJOINT))
def test_disjoint_path_change_is_rebased_on_the_moved_head(
    based: tuple[Repository, Repository, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    seam: str,
    case: str,
) -> None:
    repo, other, base = based
    theirs, mine, expected = DISJOINT[case]
    landed: list[str] = []

    def other_write() -> None:
        landed.append(other.commit_changes(BRANCH, theirs, "their change").commit)

    fired = race(repo, monkeypatch, seam, other_write)
    result = repo.commit_changes(BRANCH, mine, "my change")

    assert fired == [1] and len(landed) == 1
    their_commit = landed[0]
    assert their_commit != base
    assert result.created
    # Rebased: my commit sits directly on theirs, the branch points at mine, theirs stays in history.
    assert result.parent == their_commit
    assert repo.head(BRANCH) == result.commit
    assert repo.get_commit(result.commit).parents == (their_commit,)
    assert their_commit in ancestors(repo, result.commit)
    assert [cid for cid, _ in repo.log(BRANCH)][:3] == [result.commit, their_commit, base]
    # Both changes are present, with the right bytes.
    assert files_at(repo, BRANCH, tmp_path) == expected
    assert repo.check(read_data=True).ok


OVERLAPPING = {
    # name: (their change, my change, the path(s) the error must name)
    "same_path_both_write": ({"a.txt": b"alpha by them\n"}, {"a.txt": b"alpha by me\n"}, ["a.txt"]),
    "same_path_they_delete": ({"a.txt": None}, {"a.txt": b"alpha by me\n", "c.txt": b"c\n"}, ["a.txt"]),
    "same_path_i_delete": ({"d/x": b"x by them\n"}, {"d/x": None}, ["d/x"]),
    "they_delete_dir_i_write_existing_file_in_it": (
        {"d/x": None, "d/y": None, "d/sub/z": None},
        {"d/x": b"x by me\n"},
        ["d/x"],
    ),
    "they_delete_dir_i_add_file_in_it": (
        {"d/x": None, "d/y": None, "d/sub/z": None},
        {"d/new": b"new by me\n"},
        ["d/new"],
    ),
    "they_delete_subdir_i_add_deeper_file": (
        {"d/sub/z": None},
        {"d/sub/deeper/new": b"new by me\n"},
        ["d/sub/deeper/new"],
    ),
    "they_replace_dir_by_file_i_add_file_in_it": (
        {"d": b"d is a file now\n"},
        {"d/new": b"new by me\n"},
        ["d/new"],
    ),
    "they_replace_file_by_dir_i_write_the_file": (
        {"a.txt/inner": b"a.txt is a directory now\n"},
        {"a.txt": b"alpha by me\n"},
        ["a.txt"],
    ),
    "they_write_into_dir_i_delete": ({"d/theirs": b"theirs\n"}, {"d": None}, ["d"]),
}


@pytest.mark.parametrize("seam", SEAMS)
@pytest.mark.parametrize("case", sorted(OVERLAPPING))
def test_overlapping_path_change_raises_and_branch_stays(
    based: tuple[Repository, Repository, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    seam: str,
    case: str,
) -> None:
    repo, other, base = based
    theirs, mine, clash = OVERLAPPING[case]
    landed: list[str] = []

    def other_write() -> None:
        landed.append(other.commit_changes(BRANCH, theirs, "their change").commit)

    fired = race(repo, monkeypatch, seam, other_write)
    with pytest.raises(RefConflictError) as excinfo:
        repo.commit_changes(BRANCH, mine, "my change")

    assert fired == [1] and len(landed) == 1
    their_commit = landed[0]
    assert excinfo.value.data["paths"] == clash
    # The branch stays where the other writer put it; my commit is nowhere in its history.
    fresh = Repository.open(repo.url)
    assert fresh.head(BRANCH) == their_commit
    init = fresh.get_commit(base).parents[0]
    assert [cid for cid, _ in fresh.log(BRANCH)] == [their_commit, base, init]
    assert "my change" not in {c.message for _, c in fresh.log(BRANCH)}
    their_files = files_at(fresh, BRANCH, tmp_path)
    assert their_files == files_at(other, their_commit, tmp_path)
    assert fresh.check(read_data=True).ok
    # Nothing was left locked: the same change on top of the new head now goes through (the race fires once).
    retry = repo.commit_changes(BRANCH, mine, "my change again")
    assert retry.created and retry.parent == their_commit
    assert fired == [1]


# -- a whole-directory snapshot racing a commit -------------------------------------------------------------


@pytest.mark.parametrize("seam", SEAMS)
@pytest.mark.parametrize("their_kind", ["path_commit", "snapshot"])
def test_snapshot_racing_a_commit_lands_on_top_of_it(
    based: tuple[Repository, Repository, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    seam: str,
    their_kind: str,
) -> None:
    repo, other, base = based
    mine = {
        "a.txt": b"alpha in my directory\n",
        "d/x": b"x in my directory\n",
        "only/mine.bin": payload(1, 2) * 300,
    }
    src = write_tree(tmp_path / "mine", mine)
    their_src = write_tree(tmp_path / "theirs", {"theirs.txt": b"a whole other tree\n"})
    expected_tree = tree_of_dir(tmp_path, src)
    landed: list[str] = []

    def other_write() -> None:
        if their_kind == "path_commit":
            landed.append(other.commit_changes(BRANCH, {"b.txt": b"bravo by them\n"}, "their change").commit)
        else:
            landed.append(other.snapshot(str(their_src), BRANCH, "their snapshot").commit)

    fired = race(repo, monkeypatch, seam, other_write)
    result = repo.snapshot(str(src), BRANCH, "my snapshot")

    assert fired == [1] and len(landed) == 1
    their_commit = landed[0]
    assert their_commit != base and result.created
    # On top of the concurrent commit, which stays in history ...
    assert result.parent == their_commit
    fresh = Repository.open(repo.url)
    assert fresh.head(BRANCH) == result.commit
    assert fresh.get_commit(result.commit).parents == (their_commit,)
    assert [cid for cid, _ in fresh.log(BRANCH)][:3] == [result.commit, their_commit, base]
    # ... and the new head's tree is exactly the snapshotted directory (their change is not mixed in).
    assert fresh.get_commit(BRANCH).tree == expected_tree
    assert files_at(fresh, BRANCH, tmp_path) == mine
    # Their commit is intact.
    if their_kind == "path_commit":
        assert fresh.read_file(their_commit, "b.txt") == b"bravo by them\n"
    else:
        assert files_at(fresh, their_commit, tmp_path) == {"theirs.txt": b"a whole other tree\n"}
    assert fresh.check(read_data=True).ok
