"""The example DAGs run with `dag.test()`: edge ingestion on the S3, GCS and Azure emulators, the merge with
doctors' corrections and its conflict report, and differential retraining; plus one run of the real
`airflow dags test` command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from airflow_support import DagOutcome, airflow_cli, run_dag, set_connection
from dacflow import Repository
from emulators import AZURITE_ACCOUNT, AZURITE_KEY, unique_name

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "example_dags"))
import heart_data as hd  # noqa: E402

pytestmark = pytest.mark.slow

REGIONS = list(hd.REGIONS)


def _ok(out: DagOutcome) -> DagOutcome:
    assert out.state == "success", out.tasks
    return out


def _rows_by_key(table: Any) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["device_id"], r["ts"]): r for r in table.to_pylist()}


@pytest.fixture
def clouds(
    monkeypatch: pytest.MonkeyPatch, s3_env: str, gcs_env: str, azure_env: str, moto_server: Any, azurite_server: Any
) -> dict[str, str]:
    """Edges on the three emulators through the connection types teams already have; the hub on S3 through
    a dacflow connection. Returns the store URLs."""
    urls = {
        "na-aws": f"s3://{s3_env}/edge",
        "na-gcp": f"gs://{gcs_env}/edge",
        "eu-azure": f"az://{azure_env}/edge",
        "hub": f"s3://{unique_name('hub')}/heart",
    }
    set_connection(monkeypatch, "edge_na_aws", "aws", login="testing", password="testing",
                   extra={"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"})  # fmt: skip
    set_connection(monkeypatch, "edge_na_gcp", "google_cloud_platform", extra={"project": "test"})
    set_connection(monkeypatch, "edge_eu_azure", "wasb", login=AZURITE_ACCOUNT, password=AZURITE_KEY,
                   host=f"http://127.0.0.1:{azurite_server.port}/{AZURITE_ACCOUNT}")  # fmt: skip
    set_connection(monkeypatch, "hub", "dacflow", extra={
        "url": urls["hub"], "endpoint_url": moto_server.endpoint, "region": "us-east-1",
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing"})  # fmt: skip
    for region in REGIONS:
        monkeypatch.setenv(f"DACFLOW_EXAMPLE_EDGE_{region.upper().replace('-', '_')}_URL", urls[region])
        monkeypatch.setenv(
            f"DACFLOW_EXAMPLE_{region.upper().replace('-', '_')}_CONN", f"edge_{region.replace('-', '_')}"
        )
    monkeypatch.setenv("DACFLOW_EXAMPLE_HUB_URL", urls["hub"])
    monkeypatch.setenv("DACFLOW_EXAMPLE_HUB_CONN", "hub")
    # The DAGs open stores through these connections; the test reads them back through the SDKs' env chains.
    return urls


def test_heart_story_on_three_clouds(airflow_dags: Path, clouds: dict[str, str]) -> None:
    hub_url = clouds["hub"]
    sent: dict[int, dict[str, int]] = {}
    seen = 0
    for round_ in (1, 2):
        # 1. edge ingestion: each region snapshots its batch on its edge and ships the delta to the hub
        out = _ok(run_dag(airflow_dags, "airflow_edge_ingestion.py", {"round": round_}))
        hub = Repository.open(hub_url)
        sent[round_] = {}
        for region in REGIONS:
            group = region.replace("-", "_")
            snap = out.xcoms[(f"{group}.snapshot", "return_value")]
            report = out.xcoms[(f"{group}.to_hub", "return_value")]
            edge = Repository.open(f"{clouds[region]}/repo")
            branch = f"region/{region}"
            assert edge.head(branch) == snap["commit"] == hub.head(branch)
            assert report["refs"][f"branches/{branch}"]["to"] == snap["commit"]
            expected = sum(hd.readings(region, r).num_rows - (hd.RESENT if r > 1 else 0) for r in range(1, round_ + 1))
            assert hub.read_table(branch, hd.TABLE).num_rows == expected
            sent[round_][region] = report["bytes_sent"]
            meta = hub.get_commit(branch).meta["dacflow.lineage"]
            assert (meta["engine"], meta["pipeline"], meta["task"]) == (
                "airflow", "dacflow_edge_ingestion", f"{group}.snapshot"
            )  # fmt: skip

        # 2. merge: regions into main, then the doctors' corrections, with a conflict report
        out = _ok(run_dag(airflow_dags, "airflow_merge.py", {"round": round_}))
        hub = Repository.open(hub_url)
        main = hub.read_table("main", hd.TABLE)
        assert main.num_rows == sum(hub.read_table(f"region/{r}", hd.TABLE).num_rows for r in REGIONS)
        conflicts = out.xcoms[("merge_corrections", "conflicts")]
        if round_ == 1:
            assert conflicts["count"] == 0
        else:
            # each region re-sent RESENT recalibrated readings; the doctors corrected CORRECTED of them
            assert conflicts["count"] == len(REGIONS) * hd.CORRECTED
            assert {c["column"] for c in conflicts["rows"]} == {"heart_rate"}
            assert out.xcoms[("report", "return_value")]["count"] == conflicts["count"]
            rows = _rows_by_key(main)
            for region in REGIONS:
                for fixed in hd.corrections(region, round_).to_pylist():
                    got = rows[(fixed["device_id"], fixed["ts"])]
                    assert (got["heart_rate"], got["label"]) == (fixed["heart_rate"], "arrhythmia")  # doctor wins
                for resent in hd.readings(region, round_).slice(hd.ROWS_PER_ROUND + hd.CORRECTED).to_pylist():
                    assert rows[(resent["device_id"], resent["ts"])]["heart_rate"] == resent["heart_rate"]

        # 3. differential retraining on the rows main gained since the model's data commit
        before = hub.head("models")
        out = _ok(run_dag(airflow_dags, "airflow_retrain.py"))
        result = out.xcoms[("retrain", "return_value")]
        hub = Repository.open(hub_url)
        assert hub.head("models") == result["model_commit"] != before
        trained = hub.get_commit("models").meta["dacflow.trained_on"]
        assert trained["commit"] == hub.head("main") == result["trained_on"]
        if round_ == 1:
            assert result["since"] is None and result["rows"] == main.num_rows
        else:
            # new readings plus the re-sent (updated) ones: not the whole table
            new_rows = sum(hd.ROWS_PER_ROUND for _ in REGIONS)
            assert result["rows"] == new_rows + len(REGIONS) * hd.RESENT < main.num_rows
        seen += result["rows"]
        assert json.loads(hub.read_file("models", "model.json"))["rows_seen"] == seen  # updated, not retrained
        assert result["accuracy_on_delta"] > 0.9

    # only the delta travels: the second round's transfer costs about one batch (plus the before-images of the
    # re-sent readings), not the whole history as a full copy would
    for region in REGIONS:
        batch = len(hd.to_parquet(hd.readings(region, 2)))
        print(f"{region}: round 1 sent {sent[1][region]} B, round 2 sent {sent[2][region]} B, batch {batch} B")
        assert sent[2][region] < 1.25 * sent[1][region]


def test_airflow_dags_test_command(airflow_dags: Path, tmp_path: Path) -> None:
    """The real `airflow dags test` runs the ingestion DAG (local stores) and the hub gets all three regions."""
    root = tmp_path / "example"
    done = airflow_cli(
        "dags", "test", "dacflow_edge_ingestion", "-c", json.dumps({"round": 1}),
        env={"DACFLOW_EXAMPLE_ROOT": str(root)},
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    hub = Repository.open(str(root / "hub"))
    assert sorted(hub.branches()) == ["main"] + sorted(f"region/{r}" for r in REGIONS)
    for region in REGIONS:
        rows = hub.read_table(f"region/{region}", hd.TABLE)
        assert rows.num_rows == hd.ROWS_PER_ROUND
        assert pc.all(pc.equal(rows["region"], region)).as_py()
