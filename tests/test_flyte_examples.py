"""The Flyte example (example_dags/flyte_heart_pipeline.py) end to end against the S3, GCS and Azure emulators:
in process as plain Python calls, and through the real `pyflyte run` command."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import ROOT
from dacflow import Repository
from dacflow.lineage import code_fingerprint
from flytekit.core.local_cache import LocalTaskCache

EXAMPLE = ROOT / "example_dags" / "flyte_heart_pipeline.py"
ROWS = 120  # readings per region in batch 1; batch 2 brings half as many new ones plus a tenth recalibrated


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("flyte_heart_pipeline", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


pipeline = _load()


@pytest.fixture
def flyte_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME in a temp folder, so flytekit's local cache (~/.flyte/local-cache) is this test's own."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    LocalTaskCache._initialized = False
    yield home
    if LocalTaskCache._initialized:
        LocalTaskCache._cache.close()
    LocalTaskCache._initialized = False


@pytest.fixture
def clouds(s3_env: str, gcs_env: str, azure_env: str) -> dict[str, str]:
    """One edge store per cloud (North America on S3 and GCS, Europe on Azure)."""
    return {"na_aws": f"s3://{s3_env}/edge", "na_gcp": f"gs://{gcs_env}/edge", "eu_azure": f"az://{azure_env}/edge"}


def _check_story(hub: Repository, edges: dict[str, str], report: dict[str, Any] | None) -> None:
    """What the story must leave behind, read back from the stores themselves."""
    k, new2 = ROWS // 10, ROWS // 2
    rows = hub.read_table("main", "vitals").to_pylist()
    assert len(rows) == 3 * (ROWS + new2)
    by_region: dict[str, int] = {}
    for r in rows:
        by_region[r["region"]] = by_region.get(r["region"], 0) + 1
    assert by_region == {"na-aws": ROWS + new2, "na-gcp": ROWS + new2, "eu-azure": ROWS + new2}
    # Doctors' corrections won the conflicts with the recalibrated re-send (latest:updated_at) ...
    reviewed = [r for r in rows if r["region"] == "na-aws" and r["ts"] < pipeline.T0 + k]
    assert len(reviewed) == k and {r["updated_at"] for r in reviewed} == {pipeline.DOCTOR_TIME}
    batch1 = {(r["patient_id"], r["ts"]): r for r in pipeline._batch("na-aws", 1, ROWS, 7).to_pylist()}
    for r in reviewed:
        before = batch1[(r["patient_id"], r["ts"])]
        assert (r["heart_rate"], r["label"]) == (before["heart_rate"] - 2, 1 - before["label"])
    # ... and the other regions' recalibrations landed.
    recal = [r for r in rows if r["region"] != "na-aws" and r["updated_at"] == pipeline.RECALIBRATED_TIME]
    assert len(recal) == 2 * k
    # Each edge keeps its own branch, and the hub has the same commit of it.
    for name, url in edges.items():
        branch = f"edge-{name.replace('_', '-')}"
        assert Repository.open(url).head(branch) == hub.head(branch) is not None
    # The model on `models` was retrained on only the rows the first model had not seen, with lineage.
    model_id = hub.head("models")
    assert model_id is not None
    models = [c for _, c in hub.log("models") if "dacflow.trained_on" in c.meta]
    assert len(models) == 2
    second, first = models[0].meta["dacflow.trained_on"], models[1].meta["dacflow.trained_on"]
    assert first["since"] is None and first["rows"] == 3 * ROWS
    assert second["since"] == first["commit"] and second["commit"] == hub.head("main")
    assert (second["rows_inserted"], second["rows_updated"], second["rows_deleted"]) == (3 * new2, 3 * k, 0)
    lineage = models[0].meta["dacflow.lineage"]
    assert lineage["engine"] == "flyte" and lineage["task"] == "train_model"
    assert lineage["pipeline"] == "heart_pipeline" and lineage["inputs"] == [second["commit"]]
    assert lineage["code"] == code_fingerprint(pipeline._fit) and len(lineage["code"]) == 64
    assert b'"rows_seen": ' in hub.read_file("models", "model.json")
    if report is not None:
        assert report["conflicts"] == 2 * k and report["unresolved"] == 0
        assert report["conflict_columns"] == ["heart_rate", "updated_at"]
        assert report["model"]["commit"] == model_id and report["model"]["rows"] == 3 * new2 + 3 * k


def test_heart_pipeline_in_process_on_three_clouds(
    flyte_home: Path, clouds: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    body = pipeline.vitals_summary._task_function

    def counted(data: Any) -> Any:
        ran.append(data.url)
        return body(data=data)

    monkeypatch.setattr(pipeline.vitals_summary, "_task_function", counted)
    hub_url = clouds["na_gcp"].replace("/edge", "/hub")
    story = pipeline.heart_pipeline(hub=hub_url, rows=ROWS, seed=7, **clouds)
    hub = Repository.open(hub_url)
    _check_story(hub, clouds, story.report)
    assert story.model.url == hub.url and story.model.path == "model.json" and story.model.branch == "models"
    # vitals_summary ran once per region and batch, at the edge; the same content at the hub hit the cache.
    assert len(ran) == 6 and all(url.endswith("/edge") for url in ran), ran


def test_edge_ingestion_workflow_alone_sends_only_what_is_new(flyte_home: Path, tmp_path: Path) -> None:
    urls = {name: str(tmp_path / name) for name in ("hub", "na_aws", "na_gcp", "eu_azure")}
    one = pipeline.edge_ingestion(batch=1, rows=2000, seed=3, **urls)
    again = pipeline.edge_ingestion(batch=1, rows=2000, seed=3, **urls)  # same readings: nothing new to send
    two = pipeline.edge_ingestion(batch=2, rows=2000, seed=3, **urls)
    assert one.bytes_pushed > 10_000 and again.bytes_pushed == 0 and 0 < two.bytes_pushed < one.bytes_pushed
    assert again.eu_azure == one.eu_azure
    hub = Repository.open(urls["hub"])
    assert hub.head("edge-eu-azure") == two.eu_azure.commit
    assert hub.read_table(two.eu_azure.commit, "vitals").num_rows == 3000


@pytest.mark.slow
def test_heart_pipeline_through_pyflyte_run(tmp_path: Path, clouds: dict[str, str]) -> None:
    home = tmp_path / "home"
    home.mkdir()
    hub_url = str(tmp_path / "hub")
    args = [f"--{name}={url}" for name, url in clouds.items()]
    cmd = [str(Path(sys.executable).with_name("pyflyte")), "run", str(EXAMPLE), "heart_pipeline", f"--hub={hub_url}"]
    env = {**os.environ, "HOME": str(home)}  # the emulator settings the fixtures put in os.environ go along
    proc = subprocess.run(
        [*cmd, *args, f"--rows={ROWS}", "--seed=7"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Story(model=Snapshot(" in proc.stdout and "'unresolved': 0" in proc.stdout
    _check_story(Repository.open(hub_url), clouds, None)
    assert (home / ".flyte" / "local-cache").is_dir()
