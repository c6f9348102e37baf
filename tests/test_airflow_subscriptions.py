"""Subscriptions in Airflow (issue 7): `DacSyncOperator`, and the subscriber example DAG whose asset watcher fires
when the followed branch moves at its source and whose first task syncs the delta."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow_support import load_dag, run_dag
from conftest import write_tree
from dacflow import Repository
from dacflow.subscriptions import publish, subscribe

DAG_FILE = "airflow_subscriber.py"


class OutletEvents(dict):
    """`context["outlet_events"]`: an accessor with an `extra` dict per asset."""

    def __missing__(self, asset: Any) -> Any:
        self[asset] = SimpleNamespace(extra={})
        return self[asset]


def context() -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(dag_id="d", task_id="sync", run_id="manual__1", try_number=1,
                         xcom_push=lambda key, value: pushed.update({key: value}))  # fmt: skip
    return {"ti": ti, "run_id": "manual__1", "outlet_events": OutletEvents(), "pushed": pushed}


def snap(repo: Repository, root: Path, files: dict[str, bytes], msg: str = "") -> str:
    write_tree(root, files)
    return repo.snapshot(str(root), "main", msg or "batch").commit


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Repository, Repository]:
    """A publisher with `main` published and data on it, and a subscriber following it as `hub-main`."""
    src = Repository.init(str(tmp_path / "publisher"))
    dst = Repository.init(str(tmp_path / "subscriber"))
    snap(src, tmp_path / "data", {f"part/{i}.bin": os.urandom(40_000) for i in range(50)}, "first batch")
    publish(src, "main")
    subscribe(dst, src.url, "main", as_="hub-main")
    return src, dst


def test_sync_operator_returns_the_reports_and_sets_outlet_extras(
    pair: tuple[Repository, Repository], tmp_path: Path
) -> None:
    from airflow.sdk.exceptions import AirflowFailException
    from dacflow.providers.airflow.assets import asset_uri
    from dacflow.providers.airflow.operators import DacSyncOperator

    src, dst = pair
    op = DacSyncOperator(task_id="sync", dacflow_conn_id=None, url=dst.url, subscriptions=["hub-main"])
    (outlet,) = op.outlets
    assert outlet.uri == asset_uri(dst.url, "hub-main")
    ctx = context()
    out = op.execute(ctx)
    (report,) = out["subscriptions"]
    head = src.head("main")
    assert out["ok"] and (report["name"], report["status"], report["to"]) == ("hub-main", "created", head)
    assert ctx["pushed"]["reports"] == out and dst.head("hub-main") == head
    assert ctx["outlet_events"][outlet].extra["commit"] == head
    assert ctx["outlet_events"][outlet].extra["message"] == "first batch"
    inputs, outputs = op._lineage
    assert [a.uri for a in inputs] == [asset_uri(src.url, "main")] and [a.uri for a in outputs] == [outlet.uri]

    # A second subscription whose source vanished: the task fails with one line after the other one synced.
    doomed = Repository.init(str(tmp_path / "doomed"))
    publish(doomed, "main")
    subscribe(dst, doomed.url, "main", as_="doomed")
    shutil.rmtree(str(doomed.store.root))
    snap(src, tmp_path / "data", {"late.bin": b"late"}, "second batch")
    ctx = context()
    with pytest.raises(AirflowFailException) as err:
        DacSyncOperator(task_id="sync", dacflow_conn_id=None, url=dst.url).execute(ctx)
    assert str(err.value).startswith("dacflow: 1 subscription(s) failed: doomed: no dacflow repository at")
    assert "\n" not in str(err.value)
    assert dst.head("hub-main") == src.head("main")  # the healthy subscription synced anyway
    statuses = {r["name"]: r["status"] for r in ctx["pushed"]["reports"]["subscriptions"]}
    assert statuses == {"doomed": "failed", "hub-main": "updated"}


def _watched_asset(folder: Path, filename: str) -> Any:
    """The asset a DAG file is scheduled on, as the scheduler sees it (serialised and rebuilt)."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(load_dag(folder, filename)))
    (asset,) = dag.timetable.asset_condition.objects
    return asset


def _source_trigger(folder: Path) -> Any:
    """The trigger the subscriber DAG's asset watcher registers, rebuilt as the triggerer would."""
    from airflow.sdk._shared.module_loading import import_string

    asset = _watched_asset(folder, DAG_FILE)
    (watcher,) = asset.watchers
    return asset, import_string(watcher.trigger["classpath"])(**watcher.trigger["kwargs"])


def test_subscriber_dag_is_started_by_the_source_branch_and_syncs_the_delta(
    airflow_dags: Path, monkeypatch: pytest.MonkeyPatch, pair: tuple[Repository, Repository], tmp_path: Path
) -> None:
    from dacflow.providers.airflow.assets import asset_uri

    src, dst = pair
    monkeypatch.setenv("DACFLOW_EXAMPLE_PUBLISHER_URL", str(src.store.root))
    monkeypatch.setenv("DACFLOW_EXAMPLE_SUBSCRIBER_URL", str(dst.store.root))

    asset, trigger = _source_trigger(airflow_dags)
    assert asset.uri == asset_uri(src.url, "main")  # the DAG is scheduled on the *source* branch
    assert (type(trigger).__name__, trigger.url, trigger.branch) == (
        "DacBranchEventTrigger",
        str(src.store.root),
        "main",
    )

    first = run_dag(airflow_dags, DAG_FILE)
    assert first.state == "success", first.tasks
    (r1,) = first.xcoms[("sync", "return_value")]["subscriptions"]
    assert (r1["status"], r1["to"]) == ("created", src.head("main")) and dst.head("hub-main") == src.head("main")
    assert first.xcoms[("arrived", "return_value")]["head"] == src.head("main")

    # The trigger fires for the source branch when a commit lands there (the head at start is the baseline).
    files = {f"part/{i}.bin": os.urandom(40_000) for i in range(50)}
    landed: list[str] = []

    def commit_later() -> None:
        time.sleep(0.6)
        files["part/7.bin"] = os.urandom(40_000)  # 2 % of the data
        landed.append(snap(src, tmp_path / "data", {"part/7.bin": files["part/7.bin"]}, "one part redone"))

    async def first_event() -> dict[str, Any]:
        trigger.poke_interval = 0.1
        agen = trigger.run()
        try:
            return (await asyncio.wait_for(agen.__anext__(), 20)).payload
        finally:
            await agen.aclose()

    mover = threading.Thread(target=commit_later, daemon=True)
    mover.start()
    payload = asyncio.run(first_event())
    mover.join()
    assert (payload["branch"], payload["commit"], payload["previous"]) == ("main", landed[0], r1["to"])

    second = run_dag(airflow_dags, DAG_FILE)
    assert second.state == "success", second.tasks
    (r2,) = second.xcoms[("sync", "return_value")]["subscriptions"]
    assert (r2["status"], r2["from"], r2["to"]) == ("updated", r1["to"], landed[0])
    assert r2["bytes_sent"] < r1["bytes_sent"] / 10  # only the delta travelled
    arrived = second.xcoms[("arrived", "return_value")]
    assert arrived["changed"] == {"added": 0, "removed": 0, "modified": 1} and arrived["head"] == landed[0]
    assert Repository.open(dst.url).read_file("hub-main", "part/7.bin") == files["part/7.bin"]
    print(f"subscriber DAG: first sync {r1['bytes_sent']} B, after one part changed {r2['bytes_sent']} B")


def test_following_the_hub_reuses_the_retrain_dags_asset_and_trigger(
    airflow_dags: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Airflow keeps active asset names and URIs unique: the subscriber of the hub's main must declare the very
    asset (name, URI, watcher, trigger) the retraining DAG watches, so one trigger serves both."""
    monkeypatch.setenv("DACFLOW_EXAMPLE_ROOT", str(tmp_path))
    for name in ("PUBLISHER_URL", "SUBSCRIBER_URL", "HUB_URL", "HUB_CONN"):
        monkeypatch.delenv(f"DACFLOW_EXAMPLE_{name}", raising=False)

    def watched(filename: str) -> Any:
        asset = _watched_asset(airflow_dags, filename)
        return asset.name, asset.uri, [(w.name, w.trigger) for w in asset.watchers]

    ours, retrain = watched(DAG_FILE), watched("airflow_retrain.py")
    assert ours == retrain and ours[0] == "heart_readings_main"
