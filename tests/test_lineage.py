"""Lineage: region data -> main merge -> model training, followed upstream and downstream, in Python and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest
from conftest import last_line, run_cli, write_tree
from dacflow import Repository, UsageError
from dacflow.lineage import code_fingerprint, commit_lineage, downstream, lineage_meta, upstream
from dacflow.objects import Commit
from dacflow.retrain import commit_model, last_trained_on, training_delta

KEY = ["patient_id", "ts"]


def _rows(region: str, start: int, n: int) -> pa.Table:
    return pa.table(
        {
            "patient_id": [f"{region}-{i % 5}" for i in range(start, start + n)],
            "ts": list(range(start, start + n)),
            "heart_rate": [60 + i % 40 for i in range(start, start + n)],
        }
    )


def train(rows: pa.Table) -> dict[str, float]:
    """The 'model': the mean heart rate of the rows it saw."""
    hr = rows.column("heart_rate").to_pylist()
    return {"mean": sum(hr) / len(hr), "n": float(len(hr))}


def _train_model(repo: Repository, run: str) -> str:
    since = last_trained_on(repo, "models", "vitals")
    delta = training_delta(repo, "vitals", since, "main")
    meta = lineage_meta("python", pipeline="heart", run=run, task="train", code=code_fingerprint(train))
    files = {"model.json": json.dumps(train(delta.rows)).encode()}
    return commit_model(repo, "models", files, delta, meta=meta).commit


@dataclass
class Chain:
    na: str  # NA region data, fast-forwarded into main
    model0: str  # trained on main before the EU data arrived
    eu: str  # EU region data
    merge: str  # main's merge of the EU data
    model1: str  # trained on main after the merge
    eu_later: str  # a later EU commit, not merged yet
    report: str  # an evaluation that read model1 (a lineage input edge)


@pytest.fixture
def chain(repo: Repository) -> Chain:
    repo.branch("region/eu-azure")
    repo.branch("reports")
    na = repo.write_table("region/na-aws", "vitals", _rows("na", 0, 40), KEY).commit
    assert repo.merge("region/na-aws", "main").fast_forward
    model0 = _train_model(repo, "run-1")
    eu = repo.write_table("region/eu-azure", "vitals", _rows("eu", 1000, 30), KEY).commit
    merged = repo.merge("region/eu-azure", "main")
    assert merged.commit and not merged.fast_forward
    model1 = _train_model(repo, "run-2")
    eu_later = repo.write_table("region/eu-azure", "vitals", _rows("eu", 2000, 5), KEY).commit
    report = repo.commit_changes(
        "reports", {"eval.json": b'{"auc": 0.9}'}, "evaluate", lineage_meta("python", task="evaluate", inputs=[model1])
    ).commit
    return Chain(na, model0, eu, merged.commit, model1, eu_later, report)


def test_lineage_meta_follows_the_contract() -> None:
    cid = "ab" * 32
    assert lineage_meta("airflow", pipeline="dag", run="r1", task="t", inputs=[cid, cid]) == {
        "dacflow.lineage": {"engine": "airflow", "pipeline": "dag", "run": "r1", "task": "t", "inputs": [cid]}
    }
    assert lineage_meta("cli") == {"dacflow.lineage": {"engine": "cli", "inputs": []}}
    with pytest.raises(UsageError, match="lineage inputs must be commit ids, got 'main'"):
        lineage_meta("python", inputs=["main"])
    # Older records read in the contract's names; junk is ignored.
    old = Commit("t" * 64, (), "m", "a", "now", {"dacflow.run": {"engine": "airflow", "dag_id": "d", "run_id": "r",
                                                                  "task_id": "x", "try_number": 1}})  # fmt: skip
    assert commit_lineage(old) == {"engine": "airflow", "pipeline": "d", "run": "r", "task": "x"}
    flyte = Commit("t" * 64, (), "m", "a", "now", {"dacflow.lineage": {"engine": "flyte", "workflow": "w",
                                                                        "execution": "e", "input": cid}})  # fmt: skip
    assert commit_lineage(flyte) == {"engine": "flyte", "pipeline": "w", "run": "e", "inputs": [cid]}
    junk = Commit("t" * 64, (), "m", "a", "now", {"dacflow.lineage": {"engine": ["x"], "inputs": ["../x", 3]}})
    assert commit_lineage(junk) == {"inputs": []}


def test_upstream_of_a_model_shows_its_data_commit_code_and_run(repo: Repository, chain: Chain) -> None:
    doc = upstream(repo, "models", depth=2)
    assert doc["root"] == chain.model1
    model = doc["nodes"][chain.model1]
    assert model["lineage"] == {
        "engine": "python", "pipeline": "heart", "run": "run-2", "task": "train",
        "code": code_fingerprint(train), "inputs": [chain.merge],
    }  # fmt: skip
    assert model["refs"] == ["models"] and model["trained_on"] == {"commit": chain.merge, "table": "vitals", "rows": 30}
    edges = {(e["from"], e["to"]): e["kind"] for e in doc["edges"]}
    assert edges[(chain.model1, chain.merge)] == "trained_on"
    assert edges[(chain.model1, chain.model0)] == "parent"
    assert edges[(chain.merge, chain.eu)] == "merged" and edges[(chain.merge, chain.na)] == "parent"
    # Two edges back: the EU data commit is there, and what lies beyond it is marked, not followed.
    assert doc["nodes"][chain.eu]["more"] is True and not any(e["from"] == chain.eu for e in doc["edges"])
    assert set(doc["nodes"][chain.eu]["tables"]) == {"vitals"}
    assert upstream(repo, "models", depth=0)["edges"] == []


def test_downstream_of_a_region_commit_lists_the_merge_and_the_model_not_the_older_model(
    repo: Repository, chain: Chain
) -> None:
    doc = downstream(repo, chain.eu)
    assert doc["branches"] == {
        "main": [chain.merge],
        "models": [chain.model1],
        "region/eu-azure": [chain.eu_later],
        "reports": [chain.report],
    }
    assert doc["commits"][chain.model1]["via"] == {"from": chain.merge, "kind": "trained_on"}
    assert doc["commits"][chain.merge]["via"] == {"from": chain.eu, "kind": "merged"}
    assert doc["commits"][chain.report]["via"] == {"from": chain.model1, "kind": "input"}
    assert chain.model0 not in doc["commits"] and chain.na not in doc["commits"]
    # Which models saw rows from the EU region: only the one trained after the merge.
    assert downstream(repo, chain.eu, branch="models")["branches"] == {"models": [chain.model1]}
    # The NA data fed both models; nothing derives from the newest EU commit yet.
    assert downstream(repo, chain.na, branch="models")["branches"] == {"models": [chain.model1, chain.model0]}
    assert downstream(repo, "region/eu-azure")["branches"] == {}
    with pytest.raises(UsageError, match="no branch 'nope'"):
        downstream(repo, chain.eu, branch="nope")


def test_a_model_trained_on_data_of_another_repository_names_it_as_missing(repo: Repository) -> None:
    foreign = "cd" * 32
    model = repo.commit_changes("models", {"m": b"1"}, "m", lineage_meta("python", inputs=[foreign])).commit
    doc = upstream(repo, model, depth=1)
    assert doc["nodes"][foreign]["missing"] is True
    assert {"from": model, "to": foreign, "kind": "input"} in doc["edges"]


run = run_cli


def test_cli_lineage_human_and_json(repo: Repository, chain: Chain, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "--repo", repo.url, "lineage", "models", "--depth", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{chain.model1[:12]} (models) model trained on vitals@{chain.merge[:12]}")
    assert f"[python heart/train run run-2 code {code_fingerprint(train)[:12]}]" in lines[0]
    assert "trained on vitals: 30 rows" in lines[0]
    assert any(f"trained_on {chain.merge[:12]} (main)" in line for line in lines)
    assert any(f"merged {chain.eu[:12]}" in line for line in lines)
    assert any(f"parent {chain.model0[:12]}" in line for line in lines)

    code, out, err = run(capsys, "--repo", repo.url, "lineage", "models", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["root"] == chain.model1 and doc["nodes"][chain.model1]["lineage"]["run"] == "run-2"

    code, out, err = run(capsys, "--repo", repo.url, "lineage", chain.eu, "--downstream", "--branch", "models")
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"1 commit(s) on models derived from {chain.eu}")
    assert chain.model1[:12] in out and chain.model0[:12] not in out and f"trained_on {chain.merge[:12]}" in out

    code, out, err = run(capsys, "--repo", repo.url, "--json", "lineage", chain.eu, "--downstream")
    assert code == 0, err
    assert json.loads(out)["branches"]["main"] == [chain.merge]

    code, out, err = run(capsys, "--repo", repo.url, "lineage", "models", "--branch", "models")
    assert code == 2 and last_line(err) == (
        "dacflow: error: --branch goes with --downstream (which commits of a branch derive from REF)"
    )


def test_cli_commits_record_engine_cli_and_merge_inputs(
    repo: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_tree(tmp_path / "d", {"a.csv": b"x\n1\n"})
    code, out, err = run(capsys, "--repo", repo.url, "--json", "snapshot", str(data), "-b", "dev", "--meta", "k=v")
    assert code == 0, err
    snap = json.loads(out)["commit"]
    assert repo.get_commit(snap).meta == {"k": "v", "dacflow.lineage": {"engine": "cli", "inputs": []}}
    repo.commit_changes("main", {"b.csv": b"y\n2\n"}, "main moves")
    code, out, err = run(capsys, "--repo", repo.url, "--json", "merge", "dev", "--into", "main")
    assert code == 0, err
    merged = repo.get_commit(json.loads(out)["commit"])
    assert merged.meta["dacflow.lineage"] == {"engine": "cli", "inputs": [snap]}


def test_airflow_operator_lineage_and_openlineage_versions(repo: Repository) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    from dacflow.providers.airflow.operators import DacMergeOperator, DacWriteTableOperator

    class Events(dict):
        def __missing__(self, key: Any) -> Any:
            self[key] = SimpleNamespace(extra={})
            return self[key]

    def context(task: str) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="heart", task_id=task, run_id="manual__7", try_number=1,
                             xcom_push=lambda key, value: None)  # fmt: skip
        return {"ti": ti, "run_id": "manual__7", "outlet_events": Events()}

    before = repo.head("main")
    write = DacWriteTableOperator(task_id="write", dacflow_conn_id=None, url=repo.url, branch="dev", table="vitals",
                                  data=_rows("eu", 0, 10).to_pylist(), key=KEY, mode="upsert")  # fmt: skip
    written = write.execute(context("write"))["commit"]
    assert repo.get_commit(written).meta["dacflow.lineage"] == {
        "engine": "airflow", "pipeline": "heart", "run": "manual__7", "task": "write", "inputs": [before]
    }  # fmt: skip
    repo.commit_changes("main", {"other": b"1"}, "main moves")
    main_before = repo.head("main")
    merge = DacMergeOperator(task_id="merge", dacflow_conn_id=None, url=repo.url, source="dev", into="main")
    merged = merge.execute(context("merge"))["commit"]
    assert repo.get_commit(merged).meta["dacflow.lineage"]["inputs"] == [written, main_before]
    facets = merge.get_openlineage_facets_on_complete(None)
    local = repo.url.removeprefix("file:///").partition("/")[2]
    assert [(d.name, d.facets["version"].datasetVersion) for d in facets.inputs] == [(f"{local}@dev", written)]
    assert [(d.name, d.facets["version"].datasetVersion) for d in facets.outputs] == [(f"{local}@main", merged)]
    # The lineage links the merge to the rows the write brought in.
    assert downstream(repo, written)["branches"] == {"main": [merged]}
