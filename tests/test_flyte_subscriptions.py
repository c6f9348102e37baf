"""Subscriptions in Flyte (issue 7): `SnapshotSensor` on the source branch followed by `sync_task` brings the
subscriber up to date, in a local workflow (no cluster)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest
from conftest import write_tree
from dacflow import Repository
from dacflow.providers.flyte import SnapshotSensor, sync_task
from dacflow.subscriptions import SyncError, publish, subscribe
from flytekit import workflow

source_moved = SnapshotSensor(name="source_moved", timeout=30, poll_interval=0)


@workflow
def follow(source: str, branch: str, after: str, subscriber: str) -> dict:
    """Wait for the source branch to move past `after`, then sync the subscriber's subscriptions."""
    moved = source_moved(url=source, branch=branch, after=after)
    synced = sync_task(url=subscriber)
    moved >> synced
    return synced


def test_sensor_then_sync_task_brings_the_subscriber_up_to_date(tmp_path: Path) -> None:
    src = Repository.init(str(tmp_path / "publisher"))
    dst = Repository.init(str(tmp_path / "subscriber"))
    files = {f"part/{i}.bin": os.urandom(40_000) for i in range(50)}
    write_tree(tmp_path / "data", files)
    first = src.snapshot(str(tmp_path / "data"), "main", "first").commit
    publish(src, "main")
    subscribe(dst, src.url, "main", as_="hub-main")
    initial = sync_task(url=dst.url)  # a task runs as a plain call too
    assert initial["subscriptions"][0]["to"] == first

    landed: list[str] = []

    def publisher() -> None:
        time.sleep(1.5)
        write_tree(tmp_path / "data", {"part/3.bin": os.urandom(40_000)})
        landed.append(src.snapshot(str(tmp_path / "data"), "main", "one part redone").commit)

    mover = threading.Thread(target=publisher, daemon=True)
    mover.start()
    t0 = time.monotonic()
    out = follow(source=src.url, branch="main", after=first, subscriber=dst.url)
    mover.join()
    assert time.monotonic() - t0 >= 1.4  # the sensor waited for the commit
    (report,) = out["subscriptions"]
    assert out["ok"] and (report["status"], report["from"], report["to"]) == ("updated", first, landed[0])
    assert report["bytes_sent"] < initial["subscriptions"][0]["bytes_sent"] / 10  # only the delta
    assert dst.head("hub-main") == src.head("main") == landed[0]
    assert dst.read_file("hub-main", "part/3.bin") == src.read_file("main", "part/3.bin")


def test_sync_task_fails_with_one_line_when_a_source_is_gone(tmp_path: Path) -> None:
    src = Repository.init(str(tmp_path / "publisher"))
    dst = Repository.init(str(tmp_path / "subscriber"))
    publish(src, "main")
    subscribe(dst, src.url, "main")
    shutil.rmtree(str(src.store.root))
    with pytest.raises(SyncError) as err:
        sync_task(url=dst.url)
    assert str(err.value).startswith(f"1 subscription(s) failed: main: no dacflow repository at {src.url}")
    assert "\n" not in str(err.value)
