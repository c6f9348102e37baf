"""Ready-made Flyte tasks, the sensor, and bad input, run in local workflows (no cluster)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import write_tree
from dacflow import MergeConflictError, RefNotFoundError, Repository
from dacflow.errors import DacflowError, RefExistsError
from dacflow.providers.flyte import (
    Delta,
    Snapshot,
    SnapshotSensor,
    SnapshotSensorTimeout,
    delta_task,
    diff_task,
    head_task,
    merge_task,
    push_task,
    snapshot_task,
    tag_task,
    transfer_task,
    write_table_task,
)
from flytekit import task, workflow
from flytekit.core.local_cache import LocalTaskCache

KEY = ["pid", "ts"]


@pytest.fixture(autouse=True)
def flyte_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME in a temp folder: flytekit's local cache and config stay per test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    LocalTaskCache._initialized = False
    yield home
    if LocalTaskCache._initialized:
        LocalTaskCache._cache.close()
    LocalTaskCache._initialized = False


def _rows(pids: list[int], hr: int = 60, updated_at: int = 1) -> pa.Table:
    n = len(pids)
    return pa.table({"pid": [f"p{i:03d}" for i in pids], "ts": pids, "hr": [hr] * n, "updated_at": [updated_at] * n})


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@task
def table_rows(data: Snapshot) -> int:
    return len(data.read_table())


@task
def file_text(data: Snapshot, path: str) -> str:
    return data.read_file(path).decode()


# -- snapshot, write table, head, tag --------------------------------------------------------------------------


def test_snapshot_task_commits_a_directory_with_lineage(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "batch", {"readings.csv": b"pid,hr\np1,60\n", "devices/d1.json": b"{}"})
    repo = Repository.init(str(tmp_path / "repo"))

    @workflow
    def wf(url: str, src: str) -> tuple[Snapshot, str]:
        snap = snapshot_task(url=url, src=src, branch="edge-eu", message="EU batch")
        return snap, file_text(data=snap, path="readings.csv")

    snap, text = wf(url=repo.url, src=str(src))
    assert text == "pid,hr\np1,60\n"
    assert snap.branch == "edge-eu" and snap.commit == repo.head("edge-eu")
    assert snap.content == repo.get_commit("edge-eu").tree
    commit = repo.get_commit(snap.commit)
    assert commit.message == "EU batch"
    assert commit.meta["dacflow.lineage"] | {"run": None} == {
        "engine": "flyte",
        "task": "snapshot_task",
        "run": None,
        "inputs": [],
    }


def test_write_table_head_and_tag_tasks(tmp_path: Path) -> None:
    url = str(tmp_path / "new-repo")  # write_table_task creates a missing repository

    @workflow
    def wf(url: str, rows: pa.Table) -> tuple[Snapshot, Snapshot, int]:
        written = write_table_task(url=url, branch="edge", table="vitals", rows=rows, key=KEY, mode="upsert")
        head = head_task(url=url, branch="edge", table="vitals")
        written >> head
        tagged = tag_task(snapshot=head, name="batch-1")
        return written, tagged, table_rows(data=tagged)

    written, tagged, n = wf(url=url, rows=_rows(list(range(25))))
    repo = Repository.open(url)
    assert n == 25 and written == tagged and written.table == "vitals"
    assert repo.tags() == {"batch-1": written.commit}
    assert repo.get_commit(written.commit).meta["dacflow.lineage"]["task"] == "write_table_task"
    # tagging the same commit again is fine; tagging another commit under the same name is refused
    wf(url=url, rows=_rows(list(range(25))))
    with pytest.raises(RefExistsError) as err:
        wf(url=url, rows=_rows([99]))
    assert _one_line(err.value) == "tag 'batch-1' already exists"


# -- transfer between clouds -----------------------------------------------------------------------------------


def test_push_and_transfer_between_three_clouds_send_only_the_delta(s3_env: str, gcs_env: str, azure_env: str) -> None:
    edge, hub, backup = f"s3://{s3_env}/heart", f"gs://{gcs_env}/heart", f"az://{azure_env}/heart"

    @workflow
    def ingest(edge: str, hub: str, rows: pa.Table) -> tuple[Snapshot, Snapshot, dict]:
        snap = write_table_task(url=edge, branch="edge-na", table="vitals", rows=rows, key=KEY)
        pushed = push_task(snapshot=snap, dst=hub)
        return snap, pushed.snapshot, pushed.report

    big = pa.table({**_rows(list(range(20_000))).to_pydict(), "note": [f"reading {i:06d} " * 8 for i in range(20_000)]})
    at_edge, at_hub, first = ingest(edge=edge, hub=hub, rows=big)
    assert at_hub.url == Repository.open(hub).url and at_hub.commit == at_edge.commit
    assert at_hub.content == at_edge.content and at_hub.branch == "edge-na"
    assert first["refs"]["branches/edge-na"] == {"from": None, "to": at_edge.commit, "status": "created"}
    assert first["bytes_sent"] > 100_000

    more = _rows([20_000, 20_001], hr=61).append_column("note", pa.array(["late", "late"]))
    _, at_hub2, second = ingest(edge=edge, hub=hub, rows=more)
    assert 0 < second["bytes_sent"] < first["bytes_sent"] / 10  # only the new rows' changeset travels
    assert second["objects_skipped"] > 0

    @workflow
    def copy(src: str, dst: str) -> dict:
        return transfer_task(src=src, dst=dst, refs=["edge-na"])

    report = copy(src=hub, dst=backup)
    assert report["bytes_sent"] > 0 and report["refs"]["branches/edge-na"]["to"] == at_hub2.commit
    assert copy(src=hub, dst=backup)["bytes_sent"] == 0  # nothing new: nothing sent
    assert Repository.open(backup).read_table("edge-na", "vitals").num_rows == 20_002


# -- merge -----------------------------------------------------------------------------------------------------


def _diverged(tmp_path: Path) -> Repository:
    """main and two branches that update the same cell of p001 differently (theirs later)."""
    repo = Repository.init(str(tmp_path / "hub"))
    repo.write_table("main", "vitals", _rows([0, 1, 2]), key=KEY)
    repo.branch("doctors")
    repo.branch("edge")
    repo.write_table("doctors", "vitals", _rows([1], hr=70, updated_at=5), key=KEY)
    repo.write_table("edge", "vitals", _rows([1], hr=80, updated_at=3), key=KEY)
    repo.write_table("edge", "vitals", _rows([3], hr=65, updated_at=3), key=KEY)
    repo.merge("doctors", "main")
    return repo


@workflow
def merge_wf(url: str, branch: str, policy: str, quarantine: str) -> tuple[Snapshot, dict]:
    source = head_task(url=url, branch=branch, table="vitals")
    merged = merge_task(source=source, into="main", policy=policy, quarantine=quarantine)
    return merged.snapshot, merged.report


def test_merge_task_resolves_by_policy_and_reports_conflicts(tmp_path: Path) -> None:
    repo = _diverged(tmp_path)
    snap, report = merge_wf(url=repo.url, branch="edge", policy="latest:updated_at", quarantine="")
    assert snap.commit == repo.head("main") and snap.branch == "main" and snap.table == "vitals"
    assert report["conflicts"] == 2 and report["unresolved"] == 0 and report["source"] == "edge"
    assert sorted(c["column"] for c in report["conflict_list"]) == ["hr", "updated_at"]
    rows = {r["pid"]: r["hr"] for r in repo.read_table("main", "vitals").to_pylist()}
    assert rows == {"p000": 60, "p001": 70, "p002": 60, "p003": 65}  # the doctors' later value won
    assert repo.get_commit(snap.commit).meta["dacflow.lineage"]["task"] == "merge_task"


def test_merge_task_fail_policy_fails_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    repo = _diverged(tmp_path)
    before = repo.head("main")
    with pytest.raises(MergeConflictError) as err:
        merge_wf(url=repo.url, branch="edge", policy="fail", quarantine="")
    text = _one_line(err.value)
    assert "2 unresolved conflict(s)" in text and "'hr'" in text and "choose a policy" in text
    assert repo.head("main") == before


def test_merge_task_quarantines_conflicts_on_a_side_branch(tmp_path: Path) -> None:
    repo = _diverged(tmp_path)
    snap, report = merge_wf(url=repo.url, branch="edge", policy="fail", quarantine="conflicts")
    assert report["unresolved"] == 2 and report["quarantine"] == repo.head("conflicts")
    assert repo.read_table("conflicts", "_dacflow_conflicts").num_rows == 2
    assert {r["pid"] for r in repo.read_table(snap.commit, "vitals").to_pylist()} == {"p000", "p001", "p002", "p003"}


def test_merge_task_takes_per_column_policies_as_json(tmp_path: Path) -> None:
    repo = _diverged(tmp_path)
    merge_wf(url=repo.url, branch="edge", policy='{"hr": "theirs", "*": "ours"}', quarantine="")
    row = [r for r in repo.read_table("main", "vitals").to_pylist() if r["pid"] == "p001"][0]
    assert (row["hr"], row["updated_at"]) == (80, 5)


# -- diff and delta --------------------------------------------------------------------------------------------


def test_diff_and_delta_tasks(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    base = repo.write_table("main", "vitals", _rows(list(range(10))), key=KEY).commit
    repo.write_table("main", "vitals", _rows([2, 50], hr=99), key=KEY)
    repo.commit_changes("main", {"notes.txt": b"n"})

    @task
    def delta_rows(delta: Delta) -> list[str]:
        return sorted(f"{r['pid']}:{r['_change']}" for r in delta.rows().to_pylist())

    @workflow
    def wf(url: str, base: str) -> tuple[dict, dict, Delta, list[str]]:
        a = head_task(url=url, branch=base)
        b = head_task(url=url, branch="main")
        d = delta_task(base=a, target=b, table="vitals")
        return diff_task(a=a, b=b, table="vitals"), diff_task(a=a, b=b, table=""), d, delta_rows(delta=d)

    rows, paths, delta, changed = wf(url=repo.url, base=base)
    assert rows == {"table": "vitals", "inserted": 1, "updated": 1, "deleted": 0}
    assert (paths["added"], paths["modified"], paths["removed"]) == (1, 1, 0)
    assert [(c["path"], c["status"]) for c in paths["changes"]] == [("notes.txt", "added"), ("vitals", "modified")]
    assert delta.base == base and delta.target == repo.head("main") and delta.table == "vitals"
    assert changed == ["p002:update", "p050:insert"]


# -- sensor ----------------------------------------------------------------------------------------------------

quick_sensor = SnapshotSensor(name="quick_sensor", timeout=30, poll_interval=0)
short_sensor = SnapshotSensor(name="short_sensor", timeout=2, poll_interval=0.5)


@workflow
def wait_wf(url: str, branch: str, after: str) -> Snapshot:
    moved = quick_sensor(url=url, branch=branch, after=after)
    head = head_task(url=url, branch=branch)
    moved >> head
    return head


def _later(seconds: float, fn: object) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        fn()  # type: ignore[operator]

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sensor_waits_for_the_branch_to_move(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "hub"))
    before = repo.head("main")
    assert before is not None
    mover = _later(2.0, lambda: repo.commit_changes("main", {"new.txt": b"x"}))
    t0 = time.monotonic()
    head = wait_wf(url=repo.url, branch="main", after=before)
    mover.join()
    assert time.monotonic() - t0 >= 2.0
    assert head.commit == repo.head("main") != before


def test_sensor_waits_for_a_branch_to_appear(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "hub"))
    mover = _later(1.5, lambda: repo.write_table("edge-eu", "vitals", _rows([1]), key=KEY))
    head = wait_wf(url=repo.url, branch="edge-eu", after="")
    mover.join()
    assert head.commit == repo.head("edge-eu")


def test_sensor_times_out_with_a_one_line_reason(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "hub"))
    head = repo.head("main")
    assert head is not None

    @workflow
    def wf(url: str, after: str) -> None:
        short_sensor(url=url, branch="main", after=after)

    t0 = time.monotonic()
    with pytest.raises(SnapshotSensorTimeout) as err:
        wf(url=repo.url, after=head)
    assert 2.0 <= time.monotonic() - t0 < 15
    assert _one_line(err.value) == f"branch 'main' of {repo.url} did not move past {head[:12]} within 2s"


def test_sensor_config_survives_the_sensor_engine_rebuild() -> None:
    rebuilt = SnapshotSensor("sensor", config=short_sensor.config.to_dict())
    assert (rebuilt.config.timeout_seconds, rebuilt.config.poll_seconds) == (2.0, 0.5)


# -- bad input -------------------------------------------------------------------------------------------------


@workflow
def read_wf(data: Snapshot) -> int:
    return table_rows(data=data)


def test_a_snapshot_of_a_missing_commit_fails_with_one_line(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "r"))
    repo.write_table("main", "vitals", _rows([1]), key=KEY)
    ghost = "ab" * 32
    bad = Snapshot(repo.url, ghost, table="vitals", content="cd" * 32)
    with pytest.raises(RefNotFoundError) as err:
        read_wf(data=bad)
    assert _one_line(err.value) == f"commit {ghost} is not in {repo.url} (was it pushed there?)"


def test_a_snapshot_of_a_missing_repository_fails_with_one_line(tmp_path: Path) -> None:
    bad = Snapshot(str(tmp_path / "nowhere"), "ab" * 32, table="vitals", content="cd" * 32)
    with pytest.raises(DacflowError) as err:
        read_wf(data=bad)
    assert _one_line(err.value).startswith(f"no dacflow repository at file://{tmp_path}/nowhere")


def test_a_snapshot_on_an_unreachable_store_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard port: nothing listens
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    bad = Snapshot("s3://gone-bucket/heart", "ab" * 32, table="vitals", content="cd" * 32)
    with pytest.raises(DacflowError) as err:
        read_wf(data=bad)
    text = _one_line(err.value)
    assert "s3://gone-bucket/heart" in text and "Could not connect" in text
