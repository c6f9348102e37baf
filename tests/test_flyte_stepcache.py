"""The core step cache inside a Flyte task: a `Snapshot` input keys on its content id, so a step run from plain
Python and the same step run in a local Flyte workflow share one entry (the task's body is skipped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dacflow import Repository
from dacflow.providers.flyte import Snapshot
from dacflow.stepcache import cached_step, lookup, step
from flytekit import task, workflow

RUNS: list[str] = []


def features_body(clean: str, repo: Any = None, meta: dict | None = None) -> str:
    """The step body both engines run: heart rate times two, on branch features."""
    RUNS.append(clean)
    rows = repo.read_table(clean, "vitals")
    out = pa.table({"id": rows["id"], "hr_x": pc.multiply(rows["hr"], 2)})
    return repo.write_table("features", "features", out, key=["id"], mode="overwrite", meta=meta).commit


@task
def features_task(clean: Snapshot) -> Snapshot:
    repo = clean.repo()
    with cached_step(repo, "features", inputs={"clean": clean}, params={}, code=features_body,
                     output_branch="features", engine="flyte") as s:  # fmt: skip
        if not s.hit:
            s.done(features_body(clean.commit, repo, meta=s.meta))
    assert s.output is not None
    return Snapshot.of(repo, s.output, table="features")


@workflow
def features_wf(clean: Snapshot) -> Snapshot:
    return features_task(clean=clean)


def test_python_and_flyte_share_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    RUNS.clear()
    repo = Repository.init(str(tmp_path / "repo"))
    repo.write_table("clean", "vitals", pa.table({"id": [1, 2], "hr": [60, 70]}), key=["id"])
    repo.write_table("clean", "notes", pa.table({"id": [1], "text": ["x"]}), key=["id"])

    first = step(repo, output_branch="features", inputs=["clean"], name="features",
                 params=lambda args: {})(features_body)("clean:vitals", repo)  # fmt: skip
    assert not first.hit and len(RUNS) == 1
    repo.delete_branch("features")

    out = features_wf(clean=Snapshot.of(repo, "clean", table="vitals"))
    assert len(RUNS) == 1  # the Flyte task found the Python run's entry
    assert out.commit == first.commit == repo.head("features")
    assert out.read_table()["hr_x"].to_pylist() == [120, 140]

    repo.write_table("clean", "vitals", pa.table({"id": [3], "hr": [80]}), key=["id"])
    out2 = features_wf(clean=Snapshot.of(repo, "clean", table="vitals"))
    assert len(RUNS) == 2 and out2.read_table()["hr_x"].to_pylist() == [120, 140, 160]
    meta = repo.get_commit(out2.commit).meta["dacflow.lineage"]
    assert meta["engine"] == "flyte" and meta["inputs"] == [repo.head("clean")]
    entry = lookup(repo, meta["step"])
    assert entry is not None and entry.output == out2.commit and entry.record["engine"] == "flyte"  # type: ignore[index]
