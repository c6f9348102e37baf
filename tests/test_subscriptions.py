"""Publish/subscribe (issue 7): published branches, subscriptions as objects in the subscriber's store, sync that
moves only deltas (from several sources), refusals with one-line reasons, watch, the renamed-ref transfer and
the shared-nothing registry."""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import write_tree
from dacflow import InvalidRefNameError, RefExistsError, RefNotFoundError, Repository, UsageError
from dacflow.errors import UnsupportedFormatError
from dacflow.refs import BRANCHES
from dacflow.registry import read_registry, registry_add, registry_list, registry_remove
from dacflow.subscriptions import (
    NotPublishedError,
    Subscription,
    failures,
    publish,
    published,
    subscribe,
    subscriptions,
    sync,
    unpublish,
    unsubscribe,
    watch,
)
from dacflow.transfer import transfer

FILES = 100
FILE_SIZE = 40_000  # below the minimum chunk size: one chunk per file, so 1 file of 100 is 1 % of the data


def dataset(rng: random.Random, n: int = FILES) -> dict[str, bytes]:
    return {f"part/{i:03d}.bin": rng.randbytes(FILE_SIZE) for i in range(n)}


def snap(repo: Repository, root: Path, files: dict[str, bytes], branch: str = "main", msg: str = "") -> str:
    write_tree(root, files)
    return repo.snapshot(str(root), branch, msg or f"{len(files)} files").commit


@pytest.fixture
def src(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "publisher"))


@pytest.fixture
def dst(tmp_path: Path) -> Repository:
    return Repository.init(str(tmp_path / "subscriber"))


# -- publishing ----------------------------------------------------------------------------------------------


def test_publish_records_a_versioned_object_per_branch_and_refuses_a_missing_branch(src: Repository) -> None:
    src.branch("team/eu")
    record, created = publish(src, "team/eu", "EU readings")
    assert created and record.head == src.head("team/eu") and record.author == "tester"
    key = Path(src.store.root) / "published" / "team%2Feu"  # quoted like refs: 'team' and 'team/eu' both fit
    doc = json.loads(key.read_bytes())
    assert {k: doc[k] for k in ("type", "v", "branch", "message")} == {
        "type": "published", "v": 1, "branch": "team/eu", "message": "EU readings"
    }  # fmt: skip
    again, created = publish(src, "team/eu", "other words")
    assert not created and again.message == "EU readings" and again.time == record.time  # the first record stays
    publish(src, "main")
    assert sorted(published(src)) == ["main", "team/eu"]

    with pytest.raises(RefNotFoundError) as err:
        publish(src, "nope")
    assert str(err.value) == f"no branch 'nope' in {src.url} to publish"

    assert unpublish(src, "team/eu").branch == "team/eu"
    assert sorted(published(src)) == ["main"] and src.head("team/eu") is not None  # the branch itself stays
    with pytest.raises(NotPublishedError):
        unpublish(src, "team/eu")


def test_records_of_an_unknown_version_are_refused(src: Repository, dst: Repository) -> None:
    src.store.put("published/main", json.dumps({"type": "published", "v": 2, "branch": "main"}).encode())
    with pytest.raises(UnsupportedFormatError) as err:
        published(src)
    assert (
        str(err.value)
        == "published record published/main has format version 2; this dacflow reads version 1 (upgrade dacflow)"
    )
    dst.store.put("subscriptions/x", json.dumps({"type": "subscription", "v": 9}).encode())
    with pytest.raises(UnsupportedFormatError):
        subscriptions(dst)


# -- subscribing ---------------------------------------------------------------------------------------------


def test_an_unpublished_branch_is_refused_with_a_hint(src: Repository, dst: Repository) -> None:
    with pytest.raises(NotPublishedError) as err:
        subscribe(dst, src.url, "main")
    assert str(err.value) == (
        f"branch 'main' of {src.url} is not published; its owner can run `dacflow --repo {src.url} publish main`"
    )
    assert subscriptions(dst) == {}


def test_subscription_is_an_object_in_the_subscribers_store(src: Repository, dst: Repository, tmp_path: Path) -> None:
    publish(src, "main")
    path = str(src.store.root)  # a plain path: the canonical URL is recorded
    sub, created = subscribe(dst, path, "main", as_="hub/main")
    assert created and sub == Subscription(src.url, "main", "hub/main", (), sub.created)
    stored = json.loads((Path(dst.store.root) / "subscriptions" / "hub%2Fmain").read_bytes())
    assert stored == {"type": "subscription", "v": 1, "source": src.url, "branch": "main", "local": "hub/main",
                      "peers": [], "created": sub.created}  # fmt: skip
    assert subscribe(dst, src.url, "main", as_="hub/main") == (sub, False)  # the same again: nothing new
    other = Repository.init(str(tmp_path / "other"))
    publish(other, "main")
    with pytest.raises(RefExistsError) as err:
        subscribe(dst, other.url, "main", as_="hub/main")
    assert "already follows 'main' of " + src.url in str(err.value)
    assert subscriptions(dst) == {"hub/main": sub}
    assert unsubscribe(dst, "hub/main") == sub and subscriptions(dst) == {}
    with pytest.raises(RefNotFoundError):
        unsubscribe(dst, "hub/main")


def test_urls_with_credentials_are_refused_and_never_echoed(src: Repository, dst: Repository) -> None:
    publish(src, "main")
    for url in ("s3://AKIDLEAK:secretLEAK@bucket/repo", "az://container/repo?sig=secretLEAK&se=2030"):
        with pytest.raises(UsageError) as err:
            subscribe(dst, url, "main")
        assert "LEAK" not in str(err.value) and "carries credentials or parameters" in str(err.value)
        with pytest.raises(UsageError) as err:
            subscribe(dst, src.url, "main", peers=[url])
        assert "LEAK" not in str(err.value)
    assert subscriptions(dst) == {}
    stored = b"".join(p.read_bytes() for p in Path(dst.store.root).rglob("*") if p.is_file())
    assert b"LEAK" not in stored


# -- syncing -------------------------------------------------------------------------------------------------


def test_sync_sends_the_whole_data_first_then_about_the_delta(
    src: Repository, dst: Repository, tmp_path: Path, rng: random.Random
) -> None:
    files = dataset(rng)
    c1 = snap(src, tmp_path / "d", files)
    publish(src, "main")
    subscribe(dst, src.url, "main", as_="hub-main")
    (first,) = sync(dst)
    assert (first.status, first.from_, first.to, first.ok) == ("created", None, c1, True)
    assert first.bytes_sent >= FILES * FILE_SIZE and dst.head("hub-main") == c1
    assert dst.read_file("hub-main", "part/007.bin") == files["part/007.bin"]

    files["part/042.bin"] = rng.randbytes(FILE_SIZE)  # 1 % of the data changes
    write_tree(tmp_path / "d", files)
    c2 = src.snapshot(str(tmp_path / "d"), "main", "1 % changed").commit
    (second,) = sync(dst, ["hub-main"])
    assert (second.status, second.from_, second.to, second.commits) == ("updated", c1, c2, 1)
    ratio = second.bytes_sent / first.bytes_sent
    print(f"local sync: first {first.bytes_sent} B, after a 1 % change {second.bytes_sent} B ({ratio:.2%})")
    assert second.bytes_sent >= FILE_SIZE and ratio < 0.02  # the changed file and a little metadata
    assert dst.read_file("hub-main", "part/042.bin") == files["part/042.bin"]
    (third,) = sync(dst)
    assert (third.status, third.bytes_sent, third.to) == ("unchanged", 0, c2)
    assert dst.head("main") == src.get_commit(c1).parents[0]  # the subscriber's own main did not move
    assert dst.check(read_data=True).ok


def test_a_peer_serves_part_of_the_data(src: Repository, dst: Repository, tmp_path: Path, rng: random.Random) -> None:
    c1 = snap(src, tmp_path / "d", dataset(rng))
    publish(src, "main")
    peer = Repository.init(str(tmp_path / "peer"))
    transfer(src, peer, ["main"])  # a peer region holding the same data
    gone = str(tmp_path / "gone")
    subscribe(dst, src.url, "main", peers=[peer.url])
    # A second subscription whose recorded peer disappeared later: it syncs from the source alone.
    other = Repository.init(str(tmp_path / "subscriber2"))
    Repository.init(gone)
    subscribe(other, src.url, "main", peers=[gone])
    shutil.rmtree(gone)

    (report,) = sync(dst)
    assert report.ok and dst.head("main") == c1
    assert set(report.by_source) == {src.url, peer.url}
    assert report.by_source[peer.url] > FILES * FILE_SIZE // 4 and report.by_source[src.url] > FILES * FILE_SIZE // 4
    assert sum(report.by_source.values()) == report.bytes_sent
    stored = sum(p.stat().st_size for p in (Path(dst.store.root) / "packs").rglob("*") if p.is_file())
    assert FILES * FILE_SIZE <= report.bytes_sent <= stored  # each byte counted once, though two sources wrote
    assert dst.check(read_data=True).ok

    (alone,) = sync(other)
    assert alone.ok and alone.peers_unreachable == [f"file://{gone}"] and set(alone.by_source) == {src.url}
    assert other.head("main") == c1


def test_a_subscribers_own_main_is_never_clobbered(
    src: Repository, dst: Repository, tmp_path: Path, rng: random.Random
) -> None:
    theirs = snap(src, tmp_path / "a", {"x.bin": rng.randbytes(1000)})
    ours = snap(dst, tmp_path / "b", {"mine.txt": b"local work"})
    publish(src, "main")
    with pytest.raises(RefExistsError) as err:
        subscribe(dst, src.url, "main")
    assert str(err.value) == (
        f"branch 'main' in {dst.url} has its own history; subscribe --as another name so it is not clobbered"
    )
    subscribe(dst, src.url, "main", as_="upstream")
    (report,) = sync(dst)
    assert report.to == theirs and dst.head("upstream") == theirs and dst.head("main") == ours
    assert set(report.to_json()) >= {"name", "from", "to", "bytes_sent", "by_source", "error"}


def test_a_rewritten_source_is_refused_then_followed_with_force(
    src: Repository, dst: Repository, tmp_path: Path, rng: random.Random
) -> None:
    c1 = snap(src, tmp_path / "a", {"x.bin": rng.randbytes(5000)})
    publish(src, "main")
    subscribe(dst, src.url, "main")
    sync(dst)
    root = src.get_commit(c1).parents[0]
    src.refs.swap(BRANCHES, "rewrite", root, None)
    rewritten = snap(src, tmp_path / "b", {"y.bin": rng.randbytes(5000)}, branch="rewrite")
    _, token = src.refs.read(BRANCHES, "main")
    src.refs.swap(BRANCHES, "main", rewritten, token)  # a forced push rewrote the published branch

    packs_before = sorted(p.name for p in (Path(dst.store.root) / "packs").rglob("*"))
    (report,) = sync(dst)
    assert (report.status, report.error_type, report.exit_code) == ("failed", "RefConflictError", 5)
    assert report.error == (
        f"subscription 'main': branch 'main' of {src.url} was rewritten (its head {rewritten[:12]} does not contain "
        f"{c1[:12]}, synced before); sync --force to follow it, or unsubscribe"
    )
    assert dst.head("main") == c1
    assert sorted(p.name for p in (Path(dst.store.root) / "packs").rglob("*")) == packs_before  # nothing copied
    err = failures([report])
    assert err is not None and err.exit_code == 5 and isinstance(err, Exception)

    (forced,) = sync(dst, force=True)
    assert (forced.status, forced.from_, forced.to) == ("updated", c1, rewritten)
    assert dst.read_file("main", "y.bin") == src.read_file("main", "y.bin")


def test_an_unreachable_source_fails_alone(
    src: Repository, dst: Repository, tmp_path: Path, rng: random.Random
) -> None:
    c1 = snap(src, tmp_path / "a", {"x.bin": rng.randbytes(5000)})
    publish(src, "main")
    doomed = Repository.init(str(tmp_path / "doomed"))
    publish(doomed, "main")
    subscribe(dst, doomed.url, "main", as_="a-doomed")
    subscribe(dst, src.url, "main", as_="b-live")
    shutil.rmtree(str(doomed.store.root))
    failed, live = sync(dst)
    assert (failed.name, failed.status, failed.error_type, failed.exit_code) == (
        "a-doomed", "failed", "RepositoryNotFoundError", 3
    )  # fmt: skip
    assert failed.error is not None and failed.error.startswith(f"no dacflow repository at {doomed.url}")
    assert "\n" not in failed.error
    assert (live.name, live.status, live.to) == ("b-live", "created", c1) and dst.head("b-live") == c1
    err = failures([failed, live])
    assert err is not None and str(err).startswith("1 subscription(s) failed: a-doomed: no dacflow repository at")

    unpublish(src, "main")  # a withdrawn branch is not followed any more
    (withdrawn,) = sync(dst, ["b-live"])
    assert withdrawn.error == f"branch 'main' of {src.url} is no longer published"
    with pytest.raises(RefNotFoundError):
        sync(dst, ["no-such-subscription"])


def test_watch_syncs_on_every_new_commit(src: Repository, dst: Repository, tmp_path: Path, rng: random.Random) -> None:
    publish(src, "main")
    subscribe(dst, src.url, "main", as_="hub")
    start = src.head("main")
    made: list[str] = []
    problems: list[str] = []

    def publisher() -> None:
        for i in range(3):
            made.append(snap(src, tmp_path / "d", {f"f{i}.bin": rng.randbytes(20_000)}, msg=f"commit {i}"))
            deadline = time.monotonic() + 20
            while dst.head("hub") != made[-1]:  # the subscriber catches up before the next commit lands
                if time.monotonic() > deadline:
                    problems.append(f"commit {i} was not synced")
                    return
                time.sleep(0.02)

    (caught_up,) = watch(dst, 0.05, once=True)  # the local branch does not exist yet: `once` creates it
    assert (caught_up.status, caught_up.to) == ("created", start)
    assert watch(dst, 0.05, once=True) == []  # nothing moved since
    thread = threading.Thread(target=publisher, daemon=True)
    seen: list[str] = []
    thread.start()
    t_end = time.monotonic() + 30
    events = watch(dst, 0.05, max_events=3, on_event=lambda r: seen.append(str(r.to)),
                   stop=lambda: time.monotonic() > t_end)  # fmt: skip
    thread.join(10)
    assert not problems
    assert [e.to for e in events] == made == seen and [e.status for e in events] == ["updated"] * 3
    assert [e.from_ for e in events] == [start, made[0], made[1]]
    assert dst.head("hub") == made[-1] == src.head("main")


# -- transfer under another name -----------------------------------------------------------------------------


def test_transfer_can_land_a_ref_under_another_name(src: Repository, dst: Repository, tmp_path: Path) -> None:
    c1 = snap(src, tmp_path / "a", {"x.bin": os.urandom(3000)})
    dst_main = dst.head("main")
    report = transfer(src, dst, {"main": "mirror/main"})
    assert report.refs == {"branches/mirror/main": {"from": None, "to": c1, "status": "created"}}
    assert dst.head("mirror/main") == c1 and dst.head("main") == dst_main
    src.tag("v1", "main")
    assert transfer(src, dst, {"tags/v1": "release-1"}).refs["tags/release-1"]["to"] == c1
    assert dst.tags() == {"release-1": c1}
    packs = sorted((Path(dst.store.root) / "index").iterdir())
    with pytest.raises(InvalidRefNameError):
        transfer(src, Repository.open(dst.url), {"main": "bad..name"})
    assert sorted((Path(dst.store.root) / "index").iterdir()) == packs  # refused before copying anything


# -- registry ------------------------------------------------------------------------------------------------


def test_registry_round_trip(src: Repository, tmp_path: Path) -> None:
    reg = str(tmp_path / "registry.json")
    assert registry_list(reg) == []
    publish(src, "main", "hub readings")
    other = Repository.init(str(tmp_path / "other"))
    entry = registry_add(reg, str(src.store.root))
    assert entry.url == src.url and entry.published["main"]["head"] == src.head("main")
    assert entry.published["main"]["message"] == "hub readings"
    registry_add(reg, other.url)
    doc = json.loads(Path(reg).read_text())
    assert (doc["type"], doc["v"], sorted(doc["stores"])) == ("dacflow-registry", 1, sorted([src.url, other.url]))
    assert [(e.url, sorted(e.published)) for e in registry_list(reg)] == sorted([(src.url, ["main"]), (other.url, [])])

    src.branch("eu")
    publish(src, "eu")
    publish(other, "main")
    assert sorted(registry_list(reg)[0 if src.url < other.url else 1].published) == ["main"]  # not read again
    shutil.rmtree(str(other.store.root))
    listed = {e.url: e for e in registry_list(reg, refresh=True)}
    assert sorted(listed[src.url].published) == ["eu", "main"] and listed[src.url].error is None
    assert listed[other.url].error is not None and listed[other.url].error.startswith("no dacflow repository at")
    assert listed[other.url].published == {}  # the last known list stays

    assert registry_remove(reg, str(other.store.root)).url == other.url
    assert [e.url for e in registry_list(reg)] == [src.url]
    with pytest.raises(RefNotFoundError):
        registry_remove(reg, other.url)
    Path(reg).write_text(json.dumps({"type": "dacflow-registry", "v": 7, "stores": {}}))
    with pytest.raises(UnsupportedFormatError):
        read_registry(reg)


def test_registry_edits_from_many_threads_lose_nothing(tmp_path: Path) -> None:
    repos = [Repository.init(str(tmp_path / f"r{i}")) for i in range(8)]
    reg = str(tmp_path / "registry.json")
    errors: list[BaseException] = []

    def add(repo: Repository) -> None:
        try:
            registry_add(reg, repo.url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(r,)) for r in repos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(e.url for e in registry_list(reg)) == sorted(r.url for r in repos)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".registry-")]  # no temp files left


# -- across clouds -------------------------------------------------------------------------------------------


def test_s3_publisher_to_azure_subscriber_sends_about_the_delta(
    s3_env: str, azure_env: str, tmp_path: Path, rng: random.Random
) -> None:
    publisher = Repository.init(f"s3://{s3_env}/hub")
    subscriber = Repository.init(f"az://{azure_env}/edge")
    files = dataset(rng)
    c1 = snap(publisher, tmp_path / "d", files)
    publish(publisher, "main")
    registry = f"s3://{s3_env}/shared/registry.json"  # the registry itself may live on any store
    registry_add(registry, publisher.url)
    (listed,) = registry_list(registry)
    assert (listed.url, sorted(listed.published)) == (publisher.url, ["main"])

    subscribe(subscriber, listed.url, "main", as_="hub-main")
    (first,) = sync(subscriber)
    assert (first.status, first.to) == ("created", c1) and first.bytes_sent >= FILES * FILE_SIZE

    files["part/013.bin"] = rng.randbytes(FILE_SIZE)  # 1 %
    c2 = snap(publisher, tmp_path / "d", files, msg="1 % changed")
    (second,) = sync(Repository.open(subscriber.url))
    ratio = second.bytes_sent / first.bytes_sent
    print(f"S3 -> Azure sync: first {first.bytes_sent} B, after a 1 % change {second.bytes_sent} B ({ratio:.2%})")
    assert (second.status, second.from_, second.to) == ("updated", c1, c2)
    assert second.bytes_sent >= FILE_SIZE and ratio < 0.02
    fresh = Repository.open(f"az://{azure_env}/edge")
    assert fresh.head("hub-main") == c2 and fresh.read_file("hub-main", "part/013.bin") == files["part/013.bin"]
    assert fresh.check(read_data=True).ok


def test_sync_with_require_signed_refuses_an_unsigned_head_and_copies_nothing(
    src: Repository, dst: Repository, tmp_path: Path, rng: random.Random
) -> None:
    from dacflow.signing import generate_key, sign_commit

    key = tmp_path / "publisher.key"
    generate_key(key)
    first = snap(src, tmp_path / "d1", dataset(rng, 5))
    sign_commit(src, first, str(key))
    publish(src, "main")
    subscribe(dst, src.url, "main", as_="hub-main")
    [ok] = sync(dst, require_signed=[str(key) + ".pub"])
    assert ok.ok and dst.head("hub-main") == first
    second = snap(src, tmp_path / "d2", dataset(rng, 5))  # not signed
    keys_before = sorted(i.key for i in dst.store.list(""))
    [refused] = sync(dst, require_signed=[str(key) + ".pub"])
    assert not refused.ok and refused.error_type == "SignatureError" and "\n" not in (refused.error or "")
    assert dst.head("hub-main") == first and sorted(i.key for i in dst.store.list("")) == keys_before
    sign_commit(src, second, str(key))
    [ok] = sync(dst, require_signed=[str(key) + ".pub"])
    assert ok.ok and dst.head("hub-main") == second
