"""The step cache in Airflow: a step run from plain Python and then in a DAG (tests/airflow_dags/dac_test_stepcache.py)
shares one entry, so the DAG task is skipped and its output branch restored; operators with `cache=True` skip
their work on a rerun of the same data and return their cached result."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.csv as pcsv
import pytest
from airflow_support import run_dag
from dacflow import Repository
from dacflow.stepcache import list_entries, step

DAG_FILE = "dac_test_stepcache.py"
PEOPLE = "id,name,score\n1,ann,10\n2,bea,20\n3,cal,30\n"


def load_module(folder: Path) -> Any:
    """The DAG file as a module (its `double_scores` is the step body plain Python runs too)."""
    spec = importlib.util.spec_from_file_location("dac_test_stepcache_plain", folder / DAG_FILE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def counted(counts: Path, name: str) -> int:
    path = counts / name
    return int(path.read_text()) if path.exists() else 0


class _Lines(logging.Handler):
    """Log records of the `dacflow` logger as text. On the `dacflow` logger itself, not the root: Airflow's logging
    set-up, run by the first `dag.test()` in a process, replaces the root's handlers (and so pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def caplog(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Lines]:
    """This module's caplog: the INFO lines of the `dacflow` loggers, whatever Airflow does to the root logger."""
    lines, dacflow_log = _Lines(), logging.getLogger("dacflow")
    monkeypatch.setattr(dacflow_log, "level", logging.INFO)
    dacflow_log.addHandler(lines)
    yield lines
    dacflow_log.removeHandler(lines)


def test_python_and_airflow_share_the_cache(
    airflow_dags: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: _Lines
) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    src, counts = tmp_path / "src", tmp_path / "counts"
    src.mkdir()
    counts.mkdir()
    (src / "people.csv").write_text(PEOPLE)
    monkeypatch.setenv("DACFLOW_TEST_STEPCACHE_REPO", repo.url)
    monkeypatch.setenv("DACFLOW_TEST_STEPCACHE_SRC", str(src))
    monkeypatch.setenv("DACFLOW_TEST_STEPCACHE_COUNTS", str(counts))

    # Plain Python: the raw rows, then the step (its body runs once).
    mod = load_module(airflow_dags)
    repo.write_table("raw", "people", pcsv.read_csv(src / "people.csv"), key=["id"], mode="overwrite")
    doubled = step(repo, output_branch="doubled", inputs=["raw"])(mod.double_scores)("raw")
    assert not doubled.hit and counted(counts, "double_scores") == 1
    assert repo.read_table("doubled", "people")["score"].to_pylist() == [20, 40, 60]
    repo.delete_branch("doubled")  # the DAG must restore it from the cache

    # The DAG: its `double` task is a cache hit (body not run), the branch comes back at the same commit.
    caplog.lines.clear()
    first = run_dag(airflow_dags, DAG_FILE)
    logs = caplog.text
    assert first.state == "success", first.tasks
    assert counted(counts, "double_scores") == 1
    assert first.xcoms[("double", "return_value")] == doubled.commit
    assert repo.head("doubled") == doubled.commit
    assert "skipped: cache hit (step double_scores" in logs
    ops = {t: first.xcoms[(t, "return_value")] for t in ("snapshot", "write", "merge")}
    assert {t: x["cache"]["hit"] for t, x in ops.items()} == {"snapshot": False, "write": False, "merge": False}
    assert all(x["cache"]["recorded"] for x in ops.values())
    assert ops["merge"]["commit"] == doubled.commit and repo.head("published") == doubled.commit  # fast-forward

    # What the operators committed names the run and the cache key.
    landing = repo.get_commit("landing").meta["dacflow.lineage"]
    assert landing["engine"] == "airflow" and landing["pipeline"] == "dacflow_test_stepcache"
    assert landing["task"] == "snapshot" and landing["step"] == ops["snapshot"]["cache"]["key"]
    assert repo.read_table("landing", "people").num_rows == 3

    # Rebuild the published branch from scratch and run again: every cached task is skipped.
    repo.delete_branch("published")
    landing_head, raw_head = repo.head("landing"), repo.head("raw")
    caplog.lines.clear()
    second = run_dag(airflow_dags, DAG_FILE)
    logs = caplog.text
    assert second.state == "success", second.tasks
    again = {t: second.xcoms[(t, "return_value")] for t in ("snapshot", "write", "merge")}
    assert {t: x["cache"]["hit"] for t, x in again.items()} == {"snapshot": True, "write": True, "merge": True}
    assert {t: x["cache"]["key"] for t, x in again.items()} == {t: x["cache"]["key"] for t, x in ops.items()}
    assert again["merge"]["commit"] == repo.head("published") == doubled.commit  # restored
    assert again["merge"]["fast_forward"] is True  # the cached result comes back as it was
    assert second.xcoms[("merge", "conflicts")]["count"] == 0
    assert (repo.head("landing"), repo.head("raw")) == (landing_head, raw_head)
    assert counted(counts, "double_scores") == 1
    assert logs.count("skipped: cache hit") >= 4

    # One entry per step, whichever engine recorded it.
    engines = {e.step: e.record["engine"] for e in list_entries(repo) if e.record}
    assert engines == {
        "double_scores": "python",
        "airflow.DacSnapshotOperator": "airflow",
        "airflow.DacWriteTableOperator": "airflow",
        "airflow.DacMergeOperator": "airflow",
    }

    # New data: the snapshot and the write run again, and so does the step downstream of them.
    (src / "people.csv").write_text(PEOPLE.replace("3,cal,30", "3,cal,31"))
    repo.delete_branch("published")
    third = run_dag(airflow_dags, DAG_FILE)
    assert third.state == "success", third.tasks
    assert not third.xcoms[("snapshot", "return_value")]["cache"]["hit"]
    assert not third.xcoms[("write", "return_value")]["cache"]["hit"]
    assert counted(counts, "double_scores") == 2
    assert repo.read_table("published", "people")["score"].to_pylist() == [20, 40, 62]


def test_operator_rejects_cache_it_cannot_honour() -> None:
    from dacflow.providers.airflow.operators import DacTagOperator

    with pytest.raises(ValueError, match="does not support cache=True"):
        DacTagOperator(task_id="t", tag="v1", ref="main", cache=True)
