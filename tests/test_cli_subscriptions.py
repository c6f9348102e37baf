"""The publish/subscribe verbs on the command line: --json documents, human text, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import write_tree
from dacflow import Repository
from test_cli import run


def js(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code, out, err = run(capsys, "--json", *args)
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Repository, Repository, Path]:
    src = Repository.init(str(tmp_path / "pub"))
    dst = Repository.init(str(tmp_path / "sub"))
    data = write_tree(tmp_path / "data", {"a.bin": os.urandom(300_000), "b.txt": b"v1\n"})
    src.snapshot(str(data), "main", "first")
    return src, dst, data


def test_publish_subscribe_sync_in_json(capsys: pytest.CaptureFixture[str], stores: tuple, tmp_path: Path) -> None:
    src, dst, data = stores
    pub_path, sub_path = str(src.store.root), str(dst.store.root)
    code, _, err = run(capsys, "subscribe", pub_path, "main", "--into", sub_path)
    assert code == 4 and err == (
        f"dacflow: error: branch 'main' of {src.url} is not published; its owner can run "
        f"`dacflow --repo {src.url} publish main`\n"
    )
    doc = js(capsys, "--repo", pub_path, "publish", "main", "-m", "readings")
    assert (doc["published"], doc["new"], doc["head"], doc["message"]) == (True, True, src.head("main"), "readings")
    assert js(capsys, "published", pub_path)["published"]["main"]["head"] == src.head("main")

    sub = js(capsys, "subscribe", pub_path, "main", "--into", sub_path, "--as", "hub-main", "--peer", pub_path)
    assert (sub["name"], sub["source"], sub["peers"], sub["new"]) == ("hub-main", src.url, [src.url], True)
    listed = js(capsys, "--repo", sub_path, "subscriptions")["subscriptions"]
    assert list(listed) == ["hub-main"] and listed["hub-main"]["head"] is None

    first = js(capsys, "--repo", sub_path, "sync")
    (r1,) = first["subscriptions"]
    assert first["ok"] and (r1["status"], r1["to"]) == ("created", src.head("main"))
    assert r1["bytes_sent"] >= 300_000 and sum(r1["by_source"].values()) == r1["bytes_sent"]

    write_tree(data, {"b.txt": b"v2\n"})
    head = src.snapshot(str(data), "main", "second").commit
    (r2,) = js(capsys, "--repo", sub_path, "sync", "hub-main")["subscriptions"]
    assert (r2["status"], r2["from"], r2["to"], r2["commits"]) == ("updated", r1["to"], head, 1)
    assert r2["bytes_sent"] < r1["bytes_sent"] / 20
    assert Repository.open(sub_path).read_file("hub-main", "b.txt") == b"v2\n"

    unsub = js(capsys, "--repo", sub_path, "unsubscribe", "hub-main")
    assert unsub == {"repo": dst.url, "unsubscribed": "hub-main", "source": src.url, "branch": "main"}
    assert js(capsys, "--repo", pub_path, "publish", "main", "--unpublish")["published"] is False
    assert js(capsys, "published", pub_path)["published"] == {}


def test_human_output_and_failures(capsys: pytest.CaptureFixture[str], stores: tuple, tmp_path: Path) -> None:
    src, dst, _ = stores
    gone = Repository.init(str(tmp_path / "gone"))
    for repo in (src, gone):
        assert run(capsys, "--repo", str(repo.store.root), "publish", "main")[0] == 0
    sub_path = str(dst.store.root)
    code, out, _ = run(capsys, "--repo", sub_path, "subscribe", str(src.store.root), "main", "--as", "live")
    assert code == 0 and f"Subscribed {dst.url} branch live <- main of {src.url}" in out
    assert run(capsys, "--repo", sub_path, "subscribe", gone.url, "main", "--as", "dead")[0] == 0
    shutil.rmtree(str(gone.store.root))

    code, out, err = run(capsys, "--repo", sub_path, "sync")
    assert code == 3  # the first failure's exit code: no repository
    assert f"dead: failed: no dacflow repository at {gone.url}" in out
    assert f"live: (new) -> {src.head('main')[:12]} (created): 1 commits" in out
    assert err.startswith("dacflow: error: 1 subscription(s) failed: dead: no dacflow repository at")
    assert len(err.strip().splitlines()) == 1
    assert Repository.open(sub_path).head("live") == src.head("main")

    code, doc, _ = run(capsys, "--repo", sub_path, "--json", "sync")
    parsed = json.loads(doc)
    assert code == 3 and not parsed["ok"] and [r["status"] for r in parsed["subscriptions"]] == ["failed", "unchanged"]

    code, _, err = run(capsys, "--repo", sub_path, "sync", "nope")
    assert code == 4 and err == f"dacflow: error: no subscription 'nope' in {dst.url} (see `dacflow subscriptions`)\n"
    code, _, err = run(capsys, "--repo", sub_path, "subscribe", "s3://AKID:hunter2@bucket/x", "main")
    assert code == 2 and "hunter2" not in err and "carries credentials or parameters" in err

    code, out, _ = run(capsys, "--repo", sub_path, "watch", "--once", "live")
    assert code == 0 and out == ""  # nothing moved


def test_watch_once_syncs_what_moved(capsys: pytest.CaptureFixture[str], stores: tuple) -> None:
    src, dst, data = stores
    js(capsys, "--repo", str(src.store.root), "publish", "main")
    js(capsys, "--repo", str(dst.store.root), "subscribe", src.url, "main", "--as", "hub")
    code, out, _ = run(capsys, "--repo", str(dst.store.root), "--json", "watch", "--once", "--interval", "0")
    event = json.loads(out)
    assert code == 0 and (event["name"], event["status"], event["to"]) == ("hub", "created", src.head("main"))


def test_registry_commands(capsys: pytest.CaptureFixture[str], stores: tuple, tmp_path: Path) -> None:
    src, dst, _ = stores
    reg = str(tmp_path / "reg.json")
    js(capsys, "--repo", str(src.store.root), "publish", "main", "-m", "hub data")
    added = js(capsys, "registry", "add", reg, str(src.store.root))
    assert added["url"] == src.url and added["published"]["main"]["head"] == src.head("main")
    js(capsys, "registry", "add", reg, dst.url)
    listed = js(capsys, "registry", "list", reg, "--refresh")
    assert [(s["url"], sorted(s["published"])) for s in listed["stores"]] == sorted(
        [(src.url, ["main"]), (dst.url, [])]
    )
    code, out, _ = run(capsys, "registry", "list", reg)
    assert code == 0 and f"{src.url}" in out and "main" in out and "hub data" in out and "publishes nothing" in out
    assert js(capsys, "registry", "remove", reg, dst.url)["removed"] == dst.url
    assert [s["url"] for s in js(capsys, "registry", "list", reg)["stores"]] == [src.url]
    code, _, err = run(capsys, "registry", "remove", reg, dst.url)
    assert code == 4 and err == f"dacflow: error: {dst.url} is not in the registry {reg}\n"
