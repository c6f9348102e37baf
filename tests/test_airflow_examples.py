"""The example DAGs, run with `dag.test()`: edge ingestion on S3/GCS/Azure emulators, merge, retraining."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow_support import run_dag
from dacflow import Repository

pytestmark = pytest.mark.slow


def test_story_on_local_stores(airflow_dags: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DACFLOW_EXAMPLE_ROOT", str(tmp_path / "example"))
    out = run_dag(airflow_dags, "airflow_edge_ingestion.py", {"round": 1})
    assert out.state == "success", out.tasks
    out = run_dag(airflow_dags, "airflow_merge.py", {"round": 1})
    assert out.state == "success", out.tasks
    hub = Repository.open(str(tmp_path / "example" / "hub"))
    print(hub.branches())
    out = run_dag(airflow_dags, "airflow_retrain.py")
    print(out)
    assert out.state == "success", out.tasks
