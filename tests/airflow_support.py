"""Running DAGs in tests: one migrated metadata database per run, DAG files copied into its DAG folder,
connections from environment variables, and `dag.test()` with the task states and XComs collected."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAG_SOURCES = [ROOT / "example_dags", ROOT / "tests" / "airflow_dags"]


def airflow_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `airflow` command of this environment."""
    exe = str(Path(sys.executable).with_name("airflow"))
    return subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="session")
def airflow_dags() -> Iterator[Path]:
    """The session's DAG folder (example DAGs and test DAGs) over a migrated SQLite metadata database."""
    folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    folder.mkdir(parents=True, exist_ok=True)
    for source in DAG_SOURCES:
        for f in source.glob("*.py"):
            shutil.copy(f, folder / f.name)
    done = airflow_cli("db", "migrate")
    assert done.returncode == 0, done.stderr[-3000:]
    yield folder


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_type: str, **fields: Any) -> None:
    """Define an Airflow connection through its environment variable (as deployments often do)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields}))


@dataclass
class DagOutcome:
    state: str
    tasks: dict[str, str]
    xcoms: dict[tuple[str, str], Any]
    run_id: str


def load_dag(folder: Path, filename: str) -> Any:
    """Import a DAG file from the DAG folder afresh (settings are read from the environment at import)."""
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"dag_{Path(filename).stem}", folder / filename)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module.dag


def run_dag(folder: Path, filename: str, conf: dict[str, Any] | None = None) -> DagOutcome:
    """`dag.test()` a DAG file; return the run state, each task's state and every XCom it pushed."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag = load_dag(folder, filename)
    dr = dag.test(run_conf=conf or {})
    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dr.run_id).all()
        xcoms = {(r.task_id, r.key): XComModel.deserialize_value(r) for r in rows}
        tasks = {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
                 for ti in dr.get_task_instances(session=session)}  # fmt: skip
    return DagOutcome(str(getattr(dr.state, "value", dr.state)), tasks, xcoms, dr.run_id)
