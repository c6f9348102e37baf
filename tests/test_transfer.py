"""Transfer between repositories: only what the destination lacks moves, verified, resumable, multi-source."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import read_tree, write_tree
from dacflow import CorruptObjectError, DacflowError, RefConflictError, Repository, StoreError
from dacflow.odb import index_key, pack_key
from dacflow.stores.local import LocalStore
from dacflow.stores.wrappers import FaultStore, RetryStore
from dacflow.transfer import clone, transfer


@pytest.fixture
def hub(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "hub"))


def snap(repo: Repository, root: Path, files: dict[str, bytes], branch: str = "main", msg: str = "") -> str:
    write_tree(root, files)
    return repo.snapshot(str(root), branch, msg).commit


def test_push_sends_only_the_delta(repo: Repository, hub: Repository, tmp_path: Path) -> None:
    big = os.urandom(4_000_000)
    c1 = snap(repo, tmp_path / "d", {"big": big, "small": b"s"})
    first = transfer(repo, hub)
    assert first.refs["branches/main"]["status"] == "updated"
    assert first.raw_bytes_sent >= len(big) and hub.head("main") == c1
    c2 = snap(repo, tmp_path / "d", {"new.csv": os.urandom(50_000)})
    second = transfer(repo, hub)
    assert hub.head("main") == c2
    # The big file's chunks were not sent again: only the new file plus a little metadata.
    assert 50_000 <= second.raw_bytes_sent < 50_000 + 20_000
    assert second.objects_skipped >= 1
    third = transfer(repo, hub)
    assert third.objects_sent == 0 and third.refs["branches/main"]["status"] == "unchanged"
    out = tmp_path / "out"
    hub.checkout("main", str(out))
    assert read_tree(out) == read_tree(tmp_path / "d")
    assert Repository.open(hub.url).check(read_data=True).ok


def test_whole_data_packs_are_copied_as_they_are(tmp_path: Path) -> None:
    src = Repository.init(str(tmp_path / "src"), pack_size=1 << 20)
    snap(src, tmp_path / "d", {"a": os.urandom(3_000_000)})
    dst = Repository.init(str(tmp_path / "dst"))
    report = transfer(src, dst)
    assert report.packs_copied_whole >= 2
    data_packs = [p for p, objs in src.odb.objects_by_pack().items() if all(loc.kind == "c" for loc in objs.values())]
    for pid in data_packs:
        assert (Path(dst.store.root) / pack_key(pid)).read_bytes() == (
            Path(src.store.root) / pack_key(pid)
        ).read_bytes()
    assert Repository.open(dst.url).check(read_data=True).ok


def test_whole_pack_copy_takes_the_index_from_the_pack_end_or_else_the_index_object(tmp_path: Path) -> None:
    src = Repository.init(str(tmp_path / "src"), pack_size=1 << 20)
    snap(src, tmp_path / "d", {"a": os.urandom(3_000_000)})
    data_packs = [p for p, objs in src.odb.objects_by_pack().items() if all(loc.kind == "c" for loc in objs.values())]
    root = Path(src.store.root)
    first = transfer(src, Repository.init(str(tmp_path / "dst")))
    for pid in data_packs:  # the index object is copied byte for byte, without reading it from the source
        assert (tmp_path / "dst" / index_key(pid)).read_bytes() == (root / index_key(pid)).read_bytes()
    # Damage the trailer of one pack (not its objects): the index object is read instead.
    pack = root / pack_key(data_packs[0])
    data = bytearray(pack.read_bytes())
    data[-16:-8] = bytes(8)  # the index length
    pack.write_bytes(bytes(data))
    second = transfer(Repository.open(src.url), Repository.init(str(tmp_path / "dst2")))
    assert second.packs_copied_whole == first.packs_copied_whole
    assert second.requests == first.requests + 1
    assert (tmp_path / "dst2" / index_key(data_packs[0])).read_bytes() == (root / index_key(data_packs[0])).read_bytes()
    assert Repository.open(str(tmp_path / "dst2")).check(read_data=False).ok


def test_tags_branches_and_divergence(repo: Repository, hub: Repository, tmp_path: Path) -> None:
    snap(repo, tmp_path / "d", {"a": b"1"})
    repo.tag("v1", "main")
    repo.branch("dev")
    transfer(repo, hub)
    assert hub.tags() == repo.tags() and hub.branches() == repo.branches()
    # The hub's main moves on by itself: pushing an older line is refused, not silently overwritten.
    snap(hub, tmp_path / "h", {"hub-only": b"x"})
    snap(repo, tmp_path / "d", {"a": b"2"})
    with pytest.raises(RefConflictError, match="has commits the source lacks"):
        transfer(repo, hub, ["main"])
    hub_head = hub.head("main")
    assert hub_head != repo.head("main")
    forced = transfer(repo, hub, ["main"], force=True)
    assert forced.refs["branches/main"]["status"] == "updated" and hub.head("main") == repo.head("main")
    with pytest.raises(Exception, match="no branch or tag 'nope'"):
        transfer(repo, hub, ["nope"])


def test_clone_copies_config_and_history(repo: Repository, tmp_path: Path) -> None:
    c = snap(repo, tmp_path / "d", {"a": os.urandom(100_000)}, msg="m")
    copy, report = clone(repo, str(tmp_path / "copy"))
    assert copy.head("main") == c and copy.config.chunker == repo.config.chunker and copy.config.id != repo.config.id
    assert [m.message for _, m in copy.log("main")] == [m.message for _, m in repo.log("main")]


def test_resumable_after_failure_sends_only_what_is_missing(repo: Repository, tmp_path: Path) -> None:
    """A transfer that dies halfway and runs again sends only what is still missing; the ref never moved early."""
    src = Repository.init(str(tmp_path / "src"), pack_size=256 * 1024)
    files = {f"f{i}": os.urandom(200_000) for i in range(20)}
    c = snap(src, tmp_path / "d", files)
    dst_path = tmp_path / "dst"
    Repository.init(str(dst_path))
    flaky = Repository.open_store(FaultStore(LocalStore(str(dst_path)), fail_calls={8}))
    with pytest.raises(StoreError):
        transfer(src, flaky, workers=1)
    dst = Repository.open(str(dst_path))
    assert dst.head("main") != c  # nothing half-published under the ref
    assert dst.check(read_data=True).ok
    partial = sum(1 for p in (dst_path / "index").iterdir())
    assert partial > 0
    again = transfer(src, dst)
    assert dst.head("main") == c and again.objects_skipped > 0
    assert again.raw_bytes_sent < sum(map(len, files.values()))
    assert Repository.open(str(dst_path)).check(read_data=True).ok


def test_multi_source_pull_uses_every_peer(tmp_path: Path) -> None:
    hub = Repository.init(str(tmp_path / "hub"))
    files = {f"f{i}": os.urandom(300_000) for i in range(12)}
    snap(hub, tmp_path / "d", files)
    peer, _ = clone(hub, str(tmp_path / "peer"))
    local = Repository.init(str(tmp_path / "local"))
    report = transfer(hub, local, sources=[peer])
    assert len(report.by_source) == 2 and all(v > 0 for v in report.by_source.values())
    out = tmp_path / "out"
    local.checkout("main", str(out))
    assert read_tree(out) == files


def test_multi_source_falls_back_when_a_peer_is_corrupt(tmp_path: Path) -> None:
    hub = Repository.init(str(tmp_path / "hub"))
    snap(hub, tmp_path / "d", {f"f{i}": os.urandom(200_000) for i in range(6)})
    peer, _ = clone(hub, str(tmp_path / "peer"))
    for pack in (tmp_path / "peer" / "packs").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[len(data) // 3] ^= 0xFF
            pack.write_bytes(bytes(data))
    local = Repository.init(str(tmp_path / "local"))
    transfer(hub, local, sources=[peer])
    assert Repository.open(local.url).check(read_data=True).ok


def test_corrupt_source_is_refused(tmp_path: Path) -> None:
    src = Repository.init(str(tmp_path / "src"))
    snap(src, tmp_path / "d", {"a": os.urandom(500_000)})
    for pack in (tmp_path / "src" / "packs").rglob("*"):
        data = bytearray(pack.read_bytes()) if pack.is_file() else None
        if data and len(data) > 400_000:
            data[200_000] ^= 1
            pack.write_bytes(bytes(data))
    dst = Repository.init(str(tmp_path / "dst"))
    with pytest.raises(CorruptObjectError):
        transfer(src, dst)
    assert Repository.open(dst.url).check(read_data=True).ok


def test_faults_are_retried_or_surface_typed(tmp_path: Path, rng) -> None:
    """500 seeded random store operations through RetryStore(FaultStore(...)): every fault is retried to
    success or raises a DacflowError, and no wrong byte is ever accepted."""
    from dacflow.errors import KeyNotFoundError, PreconditionFailedError
    from dacflow.stores.base import CREATE, PutMode

    inner = LocalStore(str(tmp_path / "s"), create=True)
    faulty = FaultStore(inner, seed=rng.randrange(1 << 30), fail_rate=0.2, after_write_rate=0.5, flip_rate=0.0)
    store = RetryStore(faulty, base_delay=0.0)
    model: dict[str, bytes] = {}
    outcomes = {"ok": 0, "typed": 0}
    for _ in range(500):
        op = rng.choice(["put", "create", "cas", "get", "delete"])
        key = f"k/{rng.randrange(12)}"
        data = os.urandom(rng.randrange(0, 2000))
        try:
            if op == "put":
                store.put(key, data)
                model[key] = data
            elif op == "create":
                try:
                    store.put(key, data, CREATE)
                    assert key not in model, "create succeeded on an existing key"
                    model[key] = data
                except PreconditionFailedError:
                    assert key in model
            elif op == "cas":
                try:
                    _, token = store.get_with_token(key)
                except KeyNotFoundError:
                    assert key not in model
                else:
                    store.put(key, data, PutMode.if_match(token))
                    model[key] = data
            elif op == "get":
                try:
                    assert store.get(key) == model[key]
                except KeyNotFoundError:
                    assert key not in model
            else:
                store.delete(key)
                model.pop(key, None)
            outcomes["ok"] += 1
        except DacflowError:
            outcomes["typed"] += 1
            # A typed failure of a write leaves the key either as before or as written; resync the model.
            try:
                model[key] = inner.get(key)
            except KeyNotFoundError:
                model.pop(key, None)
    assert outcomes["ok"] + outcomes["typed"] == 500 and outcomes["ok"] > 400
    assert len(faulty.log) > 50
    for key, data in model.items():
        assert inner.get(key) == data


def test_flipped_bits_on_read_are_never_accepted(tmp_path: Path, rng) -> None:
    src = Repository.init(str(tmp_path / "src"))
    files = {f"f{i}": os.urandom(100_000) for i in range(10)}
    snap(src, tmp_path / "d", files)
    faulty = FaultStore(LocalStore(str(tmp_path / "src")), seed=rng.randrange(1 << 30), flip_rate=0.3)
    noisy = Repository(faulty, src.config)
    out = tmp_path / "out"
    try:
        noisy.checkout("main", str(out))
    except DacflowError:
        pass  # a read that stays bad is a typed error; what matters is what reached the disk
    for rel, data in read_tree(out).items():
        assert files[rel] == data  # whatever was written is right; nothing corrupt was accepted
    assert any(op == "flip" for _, op, _ in faulty.log)
