"""Gates under Airflow: `DacMergeOperator` is the write-audit-publish step — a vetoed merge or a direct write to a
protected branch fails its task with one line listing every reason, and `main` moves only by the passing merge.

The process's first `dag.test()` runs outside `capfd` (fixture `airflow_warm`, like `airflow_ready` of
test_airflow_provider.py), so Airflow's log handlers never hold a captured stream that closes with this test."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from airflow_support import run_dag
from dacflow import Repository
from dacflow.gates import add_gate, protect
from test_airflow_provider import failure_reason, run_logged, task_logs


@pytest.fixture(scope="module")
def airflow_warm(airflow_dags: Path) -> Path:
    """The DAG folder, after a first `dag.test()` outside `capfd` (see the module docstring)."""
    assert run_dag(airflow_dags, "dac_test_watch.py").state == "success"
    return airflow_dags


def test_a_vetoed_merge_fails_its_task_with_every_reason_and_a_passing_one_publishes(
    airflow_warm: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    repo.write_table("main", "vitals", pa.table({"id": list(range(10)), "hr": [70.0] * 10}), key=["id"])
    rules = add_gate(repo, "rows", "main", table="vitals", ranges={"hr": [20, 250]})
    guard = add_gate(repo, "guard", "main", table="vitals", max_delete_pct=10)
    protect(repo, "main")
    repo.branch("bad")
    repo.write_table("bad", "vitals", pa.table({"id": [10], "hr": [400.0]}), key=["id"])
    repo.write_table("bad", "vitals", pa.table({"id": [0, 1]}), key=["id"], mode="delete")
    repo.branch("good")
    repo.write_table("good", "vitals", pa.table({"id": [11], "hr": [80.0]}), key=["id"])
    before = repo.head("main")
    monkeypatch.setenv("DACFLOW_TEST_GATES_REPO", str(tmp_path / "repo"))

    out, text = run_logged(airflow_warm, "dac_test_gates.py", capfd)
    assert out.tasks == {"merge_bad": "failed", "write_main": "failed", "merge_good": "success"}, out.tasks
    logs = task_logs(text)
    assert failure_reason(logs["merge_bad"]) == (
        "dacflow: gates refused the merge into main for 2 reason(s): vitals: 1 changed row(s) with hr outside "
        f"[20, 250], e.g. key (10) hr=400.0 (gate {rules['id']} rows vitals); vitals: 2 of 10 rows deleted (20.0%), "
        f"the guard allows 10% (gate {guard['id']} guard vitals)"
    )
    assert failure_reason(logs["write_main"]) == (
        "dacflow: gates refused the commit to main for 1 reason(s): branch 'main' is protected: commit to another "
        "branch and merge it in"
    )
    after = Repository.open(str(tmp_path / "repo"))
    assert after.head("main") == after.head("good") == out.xcoms[("merge_good", "return_value")]["commit"] != before
    assert sorted(after.read_table("main", "vitals")["id"].to_pylist()) == list(range(10)) + [11]
