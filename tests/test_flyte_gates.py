"""Gates under Flyte (local workflows): a vetoed merge or write fails the task with `GateRejectedError`, whose
one-line message lists every reason, and the guarded branch does not move."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from dacflow import Repository
from dacflow.errors import GateRejectedError
from dacflow.gates import add_gate, protect
from dacflow.providers.flyte import Snapshot, head_task, merge_task, write_table_task
from flytekit import workflow
from flytekit.core.local_cache import LocalTaskCache


@pytest.fixture(autouse=True)
def flyte_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    LocalTaskCache._initialized = False
    yield home
    if LocalTaskCache._initialized:
        LocalTaskCache._cache.close()
    LocalTaskCache._initialized = False


@workflow
def publish_wf(url: str, branch: str, rows: pa.Table) -> Snapshot:
    """Write-audit-publish: write rows on a staging branch, then merge it into the gated main."""
    staged = write_table_task(url=url, branch=branch, table="vitals", rows=rows, key=["id"], mode="upsert")
    return merge_task(source=staged, into="main", policy="fail").snapshot


@workflow
def direct_wf(url: str, rows: pa.Table) -> Snapshot:
    return write_table_task(url=url, branch="main", table="vitals", rows=rows, key=["id"], mode="upsert")


@workflow
def merge_wf(url: str, branch: str) -> Snapshot:
    return merge_task(source=head_task(url=url, branch=branch, table="vitals"), into="main").snapshot


def test_flyte_tasks_fail_with_every_reason_and_main_stays(tmp_path: Path) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.write_table("main", "vitals", pa.table({"id": list(range(10)), "hr": [70.0] * 10}), key=["id"])
    rules = add_gate(repo, "rows", "main", table="vitals", ranges={"hr": [20, 250]}, not_null=["hr"])
    guard = add_gate(repo, "guard", "main", table="vitals", max_delete_pct=20)
    protect(repo, "main")
    before = repo.head("main")

    good = publish_wf(url=repo.url, branch="staging", rows=pa.table({"id": [10, 11], "hr": [80.0, 90.0]}))
    assert good.commit == repo.head("main") != before and good.branch == "main"

    with pytest.raises(GateRejectedError) as err:
        publish_wf(url=repo.url, branch="bad", rows=pa.table({"id": [12, 13], "hr": [300.0, None]}))
    assert err.value.reasons == [
        f"vitals: 1 changed row(s) with a null hr, e.g. key (13) hr=None (gate {rules['id']} rows vitals)",
        f"vitals: 1 changed row(s) with hr outside [20, 250], e.g. key (12) hr=300.0 (gate {rules['id']} rows vitals)",
    ]
    assert "\n" not in str(err.value) and str(err.value).startswith("gates refused the merge into main for 2 reason")
    assert repo.head("main") == good.commit and repo.head("bad") != good.commit

    with pytest.raises(GateRejectedError, match="branch 'main' is protected: commit to another branch"):
        direct_wf(url=repo.url, rows=pa.table({"id": [14], "hr": [70.0]}))
    repo.branch("purge")
    repo.write_table("purge", "vitals", pa.table({"id": list(range(6))}), key=["id"], mode="delete")
    with pytest.raises(GateRejectedError) as err:
        merge_wf(url=repo.url, branch="purge")
    assert err.value.reasons == [
        f"vitals: 6 of 12 rows deleted (50.0%), the guard allows 20% (gate {guard['id']} guard vitals)"
    ]
    assert repo.head("main") == good.commit
