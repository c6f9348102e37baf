"""Crash safety: a snapshot killed by SIGKILL at any point leaves a whole repository at the old or new commit.

A child interpreter snapshots a directory into the repository and is killed: at times spread over an
uninterrupted run, on the k-th write it makes to the store (before or after the write), and inside the ref's
compare-and-swap lock. After every kill the repository must check clean (every stored byte re-hashed), the
branch must point at either the commit it had before or the commit a completed run makes (recognised by its
tree id, which is the tree id of the same directory snapshotted into a separate repository), and a normal
snapshot in the same repository must then succeed without tripping over anything the dead writer left.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import read_tree, write_tree
from dacflow import Repository

BRANCH = "main"
REF_KEY = f"refs/branches/{BRANCH}"
KILLED = -signal.SIGKILL

CHILD = r'''
import fcntl, json, os, signal, sys, threading
cfg = json.loads(sys.argv[1])
from dacflow import Repository
from dacflow.stores.local import LocalStore


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class KillStore:
    """A LocalStore that SIGKILLs this process right before or after its `at`-th put/put_file (0: never;
    "ref": the write of a ref). Each write's key is traced to a file first: the parent sees where it died."""

    def __init__(self, inner, at, when, trace):
        self.inner, self.url, self.at, self.when = inner, inner.url, at, when
        self.calls = []
        self.lock = threading.Lock()
        self.trace = os.open(trace, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def _write(self, fn, key, *args, **kwargs):
        with self.lock:
            self.calls.append(key)
            n = len(self.calls)
            os.write(self.trace, (key + "\n").encode())
        hit = n == self.at or (self.at == "ref" and key.startswith("refs/"))
        if hit and self.when == "before":
            die()
        out = fn(key, *args, **kwargs)
        if hit and self.when == "after":
            die()
        return out

    def put(self, key, *args, **kwargs):
        return self._write(self.inner.put, key, *args, **kwargs)

    def put_file(self, key, *args, **kwargs):
        return self._write(self.inner.put_file, key, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


mode = cfg["mode"]
if mode == "ref-lock-empty":
    # Die right after creating the ref's lock file, before flock-ing it or writing a pid into it.
    real_flock = fcntl.flock
    def flock(fd, op):
        if op == fcntl.LOCK_EX:
            die()
        return real_flock(fd, op)
    fcntl.flock = flock
elif mode in ("ref-lock-before-replace", "ref-lock-after-replace"):
    # Die holding the ref's lock, just before or just after the new ref replaces the old one.
    real_replace = os.replace
    def replace(src, dst, **kwargs):
        if "/refs/" not in str(dst):
            return real_replace(src, dst, **kwargs)
        if mode == "ref-lock-before-replace":
            die()
        real_replace(src, dst, **kwargs)
        die()
    os.replace = replace

store = KillStore(LocalStore(cfg["repo"]), cfg["at"], cfg["when"], cfg["trace"])
repo = Repository.open_store(store)
print("ready", flush=True)
result = repo.snapshot(cfg["src"], "main", "crash run")
tree = repo.get_commit(result.commit).tree
out = {"commit": result.commit, "created": result.created, "tree": tree, "calls": store.calls}
print(json.dumps(out), flush=True)
'''


@dataclass
class Run:
    rc: int
    seconds: float  # from "ready" (repository open, snapshot about to start) to exit
    result: dict[str, Any] | None
    stderr: str
    writes: list[str]  # keys of the store writes the child started, the last one where it died


def run_child(tmp_path: Path, cfg: dict[str, Any], kill_after: float | None = None) -> Run:
    """Run one snapshot in a child process; kill it `kill_after` seconds after it is ready, if given."""
    err_path = tmp_path / f"child-{time.monotonic_ns()}.err"
    with open(err_path, "w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=subprocess.PIPE, stderr=err, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            t0 = time.perf_counter()
            if kill_after is not None:
                time.sleep(kill_after)
                proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=120)
            seconds = time.perf_counter() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert line.strip() == "ready", f"child did not start: {line!r}\n{stderr}"
    result = json.loads(out) if proc.returncode == 0 else None
    assert proc.returncode in (0, KILLED), f"child failed (rc {proc.returncode}):\n{stderr}"
    trace = Path(cfg["trace"])
    writes = trace.read_text().split() if trace.exists() else []
    return Run(proc.returncode, seconds, result, stderr, writes)


def make_dataset(root: Path, rng: random.Random, *, big: list[int], small: int, small_max: int) -> Path:
    """Many small files in nested directories, a few large ones; some incompressible, some compressible."""
    files: dict[str, bytes] = {}
    words = [rng.randbytes(rng.randint(3, 9)).hex() for _ in range(300)]
    for n, size in enumerate(big):
        if n % 2:
            text = " ".join(rng.choice(words) for _ in range(size // 12 + 1)).encode()
            files[f"large/text-{n}.txt"] = text[:size]
        else:
            files[f"large/blob-{n}.bin"] = rng.randbytes(size)
    for n in range(small):
        depth = rng.randint(0, 3)
        parts = [f"d{rng.randint(0, 5)}" for _ in range(depth)]
        size = rng.randint(0, small_max)
        data = rng.randbytes(size) if rng.random() < 0.6 else (rng.choice(words).encode() * size)[:size]
        files["/".join([*parts, f"f{n:04d}.dat"])] = data
    return write_tree(root, files)


def reference_tree(tmp_path: Path, src: Path) -> str:
    """The tree id a completed snapshot of `src` has, from a separate repository."""
    ref = Repository.init(str(tmp_path / f"reference-{time.monotonic_ns()}"))
    return ref.get_commit(ref.snapshot(str(src), BRANCH, "reference").commit).tree


class Scenario:
    """Fresh repositories holding an older commit, into which a child snapshots `src`."""

    def __init__(self, tmp_path: Path, src: Path, pack_size: int) -> None:
        self.tmp_path = tmp_path
        self.src = src
        self.pack_size = pack_size
        self.new_tree = reference_tree(tmp_path, src)
        self.files = read_tree(src)
        some = sorted(self.files)[:3]
        old_files = {p: self.files[p] for p in some} | {"gone/in/new.txt": b"only in the old commit\n"}
        self.old_dir = write_tree(tmp_path / "old-src", old_files)
        self.count = 0
        self.last = ""

    def fresh_repo(self) -> tuple[str, str]:
        """A new repository whose branch holds an older version; return (path, old head)."""
        self.count += 1
        path = str(self.tmp_path / "repos" / f"r{self.count:03d}")
        repo = Repository.init(path, pack_size=self.pack_size)
        old = repo.snapshot(str(self.old_dir), BRANCH, "old version").commit
        assert repo.get_commit(old).tree != self.new_tree
        return path, old

    def cfg(self, path: str, mode: str = "plain", at: int | str = 0, when: str = "") -> dict[str, Any]:
        trace = f"{path}.trace"
        return {"repo": path, "src": str(self.src), "mode": mode, "at": at, "when": when, "trace": trace}

    def verify(self, path: str, old: str, *, gc: bool = False) -> str:
        """Check the repository after a kill; return 'old' or 'new' for where the branch was found."""
        self.last = path
        repo = Repository.open(path)
        report = repo.check(read_data=True)
        assert report.ok, report.problems
        head = repo.head(BRANCH)
        if head == old:
            outcome = "old"
        else:
            commit = repo.get_commit(head)  # type: ignore[arg-type]
            assert commit.tree == self.new_tree, f"branch at {head}: neither the old nor the new commit"
            assert commit.parents == (old,)
            assert commit.message == "crash run"
            outcome = "new"
        # A normal snapshot in the same repository now succeeds (nothing left locked) and is whole.
        t0 = time.perf_counter()
        again = repo.snapshot(str(self.src), BRANCH, "after the crash")
        assert time.perf_counter() - t0 < 20
        assert again.created == (outcome == "old")
        assert again.parent == head
        after = Repository.open(path)
        assert after.get_commit(BRANCH).tree == self.new_tree
        assert [cid for cid, _ in after.log(BRANCH)][:2] == [after.head(BRANCH), old]
        report = after.check(read_data=True)
        assert report.ok, report.problems
        if gc:
            # gc's exclusive lock is not blocked by the dead writer either; its debris goes, history stays.
            after.gc(grace_hours=0)
            report = Repository.open(path).check(read_data=True)
            assert report.ok, report.problems
            assert report.commits == 3  # init, old, new
        return outcome

    def assert_content(self, path: str) -> None:
        out = self.tmp_path / f"checkout-{time.monotonic_ns()}"
        Repository.open(path).checkout(BRANCH, str(out))
        assert read_tree(out) == self.files


def count_writes(scenario: Scenario) -> list[str]:
    """The store writes (keys, in order) an uninterrupted child snapshot makes."""
    path, old = scenario.fresh_repo()
    run = run_child(scenario.tmp_path, scenario.cfg(path))
    assert run.rc == 0 and run.result is not None
    assert run.result["created"] and run.result["tree"] == scenario.new_tree
    calls: list[str] = run.result["calls"]
    assert calls[0].startswith("locks/") and calls[-1] == REF_KEY
    assert any(k.startswith("packs/") for k in calls) and any(k.startswith("index/") for k in calls)
    assert scenario.verify(path, old) == "new"
    return calls


def when_for(at: int) -> str:
    """before, after, after, before, ...: against lock, pack, index, pack, ... it hits each kind both ways."""
    return ("before", "after")[(at // 2) % 2]


def kill_on_write(scenario: Scenario, at: int | str, when: str, *, gc: bool = False) -> str:
    """Kill a child snapshot before/after its `at`-th store write; return where the branch was found."""
    path, old = scenario.fresh_repo()
    run = run_child(scenario.tmp_path, scenario.cfg(path, "put", at, when))
    assert run.rc == KILLED, f"child was not killed at write {at} ({when}); it made {len(run.writes)}"
    outcome = scenario.verify(path, old, gc=gc)
    # Deterministic: the branch moved exactly if the child died after writing the ref.
    died_at = run.writes[-1]
    expected = "new" if (when == "after" and died_at == REF_KEY) else "old"
    assert outcome == expected, f"killed {when} write {at} ({died_at}): branch at the {outcome} commit"
    return outcome


@pytest.fixture
def small_scenario(tmp_path: Path, rng: random.Random) -> Scenario:
    src = make_dataset(tmp_path / "src", rng, big=[1_500_000, 1_200_000], small=250, small_max=16_000)
    return Scenario(tmp_path, src, pack_size=512 << 10)


def test_kill_on_every_store_write_leaves_old_or_new_commit(small_scenario: Scenario) -> None:
    calls = count_writes(small_scenario)
    n = len(calls)
    print(f"{n} store writes: {[k.split('/')[0] for k in calls]}")
    assert n >= 8  # lock, several packs and indexes, the ref
    # Every write but the last few (whose number varies by a pack from run to run, with thread timing),
    # before and after in turn so that each kind of write is hit both ways; then around the ref itself.
    outcomes = [kill_on_write(small_scenario, at, when_for(at), gc=at % 4 == 0) for at in range(1, n - 3)]
    assert outcomes == ["old"] * len(outcomes)
    assert kill_on_write(small_scenario, "ref", "before") == "old"
    assert kill_on_write(small_scenario, "ref", "after", gc=True) == "new"
    small_scenario.assert_content(small_scenario.last)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("ref-lock-empty", "old"), ("ref-lock-before-replace", "old"), ("ref-lock-after-replace", "new")],
)
def test_kill_inside_the_ref_lock_does_not_block_the_branch(small_scenario: Scenario, mode: str, expected: str) -> None:
    path, old = small_scenario.fresh_repo()
    run = run_child(small_scenario.tmp_path, small_scenario.cfg(path, mode))
    assert run.rc == KILLED
    lock = Path(path) / (REF_KEY + ".lock")
    assert lock.exists()  # the dead writer left its lock file behind ...
    assert small_scenario.verify(path, old, gc=True) == expected  # ... and it blocks nothing
    small_scenario.assert_content(path)
    # Moving the branch goes through the ref's lock whatever the outcome was, and clears the dead one's.
    repo = Repository.open(path)
    head = repo.head(BRANCH)
    moved = repo.commit_changes(BRANCH, {"after/crash.txt": b"moved after the crash\n"}, "move")
    assert moved.created and moved.parent == head and repo.head(BRANCH) == moved.commit
    assert not lock.exists()
    assert repo.check(read_data=True).ok


def test_repeated_kills_in_one_repository_make_progress_and_stay_whole(small_scenario: Scenario) -> None:
    """Kill every run after its fourth store write, in the same repository, until a run gets to the ref."""
    path, old = small_scenario.fresh_repo()
    indexes = []
    for _ in range(40):
        run = run_child(small_scenario.tmp_path, small_scenario.cfg(path, "put", 4, "after"))
        repo = Repository.open(path)
        report = repo.check(read_data=True)
        assert report.ok, report.problems
        indexes.append(sum(1 for _ in repo.store.list("index/")))
        head = repo.head(BRANCH)
        if head != old:
            assert repo.get_commit(BRANCH).tree == small_scenario.new_tree
            assert repo.get_commit(BRANCH).parents == (old,)
            break
        assert run.rc == KILLED
    else:
        pytest.fail("the branch never reached the new commit")
    # Every killed run published at least one more pack than the one before: crashes do not undo progress.
    print(f"{len(indexes)} runs; published indexes after each: {indexes}")
    assert len(indexes) >= 3
    assert all(b > a for a, b in zip(indexes, indexes[1:], strict=False))
    again = Repository.open(path).snapshot(str(small_scenario.src), BRANCH, "after the crashes")
    assert not again.created
    Repository.open(path).gc(grace_hours=0)
    report = Repository.open(path).check(read_data=True)
    assert report.ok, report.problems
    small_scenario.assert_content(path)


@pytest.mark.slow
def test_sigkill_at_times_spread_over_a_large_snapshot(tmp_path: Path, rng: random.Random) -> None:
    src = make_dataset(
        tmp_path / "src", rng, big=[9_000_000, 7_000_000, 8_000_000, 5_000_000], small=1500, small_max=24_000
    )
    scenario = Scenario(tmp_path, src, pack_size=2 << 20)
    total = sum(len(v) for v in scenario.files.values())
    assert 35_000_000 < total < 60_000_000

    # How long an uninterrupted run takes, from the open repository to exit.
    calls = count_writes(scenario)
    durations = []
    for _ in range(2):
        path, old = scenario.fresh_repo()
        run = run_child(tmp_path, scenario.cfg(path))
        assert run.rc == 0 and run.result is not None and run.result["tree"] == scenario.new_tree
        durations.append(run.seconds)
    duration = min(durations)
    print(f"uninterrupted snapshot of {total / 1e6:.1f} MB: {duration:.2f}s, {len(calls)} store writes")

    # Kill at 24 moments spread uniformly over the run (with jitter), each in a fresh repository.
    points = 24
    outcomes = []
    killed = 0
    for i in range(points):
        at = duration * (i + rng.random()) / points
        for _try in range(3):  # a run that finished before its kill time is checked, then tried a bit earlier
            path, old = scenario.fresh_repo()
            run = run_child(tmp_path, scenario.cfg(path), kill_after=at)
            outcomes.append(scenario.verify(path, old))
            if run.rc == KILLED:
                killed += 1
                break
            at *= 0.8
    print(f"timed kills: {killed} of {points} killed the child; outcomes {outcomes}")
    assert killed >= 20

    # And on store writes spread over the run, before and after the write; always once after the ref.
    n = len(calls)
    picks = sorted({round(1 + (n - 4) * j / 11) for j in range(12)})
    for at in picks:
        assert kill_on_write(scenario, at, when_for(at)) == "old"
    assert kill_on_write(scenario, "ref", "before") == "old"
    assert kill_on_write(scenario, "ref", "after") == "new"
    scenario.assert_content(scenario.last)
