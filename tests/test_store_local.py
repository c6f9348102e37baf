"""The local directory store passes the store conformance suite, plus local-only guarantees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dacflow.errors import PreconditionFailedError, StoreError
from dacflow.stores import open_store
from dacflow.stores.base import CREATE, PutMode
from dacflow.stores.local import LocalStore
from dacflow.testing.store_suite import StoreConformance


class TestLocalStore(StoreConformance):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(str(tmp_path / "store"), create=True)


def test_open_store_by_path_and_url(tmp_path: Path) -> None:
    a = open_store(str(tmp_path / "a"), create=True)
    b = open_store(f"file://{tmp_path / 'a'}")
    assert isinstance(a, LocalStore) and isinstance(b, LocalStore)
    assert a.root == b.root


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "tmp/x", "refs/x.lock", "a\x00b", "./a"])
def test_rejects_bad_keys(tmp_path: Path, key: str) -> None:
    store = LocalStore(str(tmp_path / "s"), create=True)
    with pytest.raises(StoreError):
        store.put(key, b"x")


def test_write_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "s"), create=True)
    for i in range(20):
        store.put(f"objects/{i}", os.urandom(100))
    with pytest.raises(PreconditionFailedError):
        store.put("objects/1", b"x", CREATE)
    assert list((tmp_path / "s" / "tmp").iterdir()) == []


def test_stale_lock_of_a_dead_process_is_broken(tmp_path: Path) -> None:
    """A process killed while holding a ref lock must not block that ref forever."""
    store = LocalStore(str(tmp_path / "s"), create=True)
    store.put("refs/branches/main", b"a")
    _, token = store.get_with_token("refs/branches/main")
    lock = tmp_path / "s" / "refs" / "branches" / "main.lock"
    # A child takes the lock the way the store does (O_EXCL + flock) and dies holding it.
    code = (
        "import os, fcntl, signal\n"
        f"fd = os.open({str(lock)!r}, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'123\\n')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert lock.exists()
    store.put("refs/branches/main", b"b", PutMode.if_match(token))
    assert store.get("refs/branches/main") == b"b"
    assert not lock.exists()


def test_live_lock_is_respected(tmp_path: Path) -> None:
    """While a live process holds the lock, a compare-and-swap waits instead of breaking it."""
    import fcntl
    import threading
    import time

    store = LocalStore(str(tmp_path / "s"), create=True)
    store.put("refs/branches/main", b"a")
    _, token = store.get_with_token("refs/branches/main")
    lock = tmp_path / "s" / "refs" / "branches" / "main.lock"
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"1\n")
    done = threading.Event()

    def swap() -> None:
        store.put("refs/branches/main", b"b", PutMode.if_match(token))
        done.set()

    t = threading.Thread(target=swap)
    t.start()
    time.sleep(1.5)
    assert not done.is_set(), "the swap went through a live lock"
    assert store.get("refs/branches/main") == b"a"
    os.unlink(lock)
    os.close(fd)
    t.join(10)
    assert done.is_set()
    assert store.get("refs/branches/main") == b"b"


def test_read_only_wrapper_reads_and_refuses_every_write(tmp_path: Path) -> None:
    from dacflow import Repository
    from dacflow.stores.wrappers import ReadOnlyStore

    repo = Repository.init(str(tmp_path / "r"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    head = repo.snapshot(str(src), "main").commit
    before = sorted(p for p in (tmp_path / "r").rglob("*") if p.is_file())
    ro = Repository.open_store(ReadOnlyStore(LocalStore(str(tmp_path / "r"))))
    assert ro.read_file("main", "f") == b"data" and ro.check(read_data=True).ok
    (src / "f").write_bytes(b"changed")
    with pytest.raises(StoreError, match="read-only"):
        ro.snapshot(str(src), "main")
    with pytest.raises(StoreError, match="read-only"):
        ro.tag("v1", "main")
    assert sorted(p for p in (tmp_path / "r").rglob("*") if p.is_file()) == before
    assert Repository.open(str(tmp_path / "r")).head("main") == head
