"""Merge: fan the region branches into `main`, then the doctors' corrections, with a conflict report.

Runs when any region branch on the hub moves (the ingestion DAG's transfers update those assets). Regions
write disjoint readings, so their merges are clean; the doctors corrected readings that a region has since
re-sent recalibrated, so merging the corrections meets cell conflicts: the doctor's value wins
(`policy="theirs"`) and every conflict is reported in XCom (`conflicts`) and by the `report` task.

Write-audit-publish: `main` is protected and gated (task `gates`: a schema contract and row rules on `readings`,
and a guard against deleting more than 5% of its rows), so each merge task is the audit-and-publish step — a
merge that breaks the contract fails its task with every reason and leaves `main` where it was (docs/gates.md).
"""

from __future__ import annotations

import logging

import heart_data as hd
from airflow.sdk import DAG, Param, task
from dacflow.providers.airflow.assets import create_asset
from dacflow.providers.airflow.operators import DacBranchOperator, DacMergeOperator, DacWriteTableOperator

log = logging.getLogger(__name__)
HUB, HUB_CONN = hd.hub_url(), hd.conn_id("hub")
CORRECTIONS = "corrections/round-{{ params.round }}"  # the doctors review main as it was when the round began
region_assets = [create_asset(HUB, f"region/{r}") for r in hd.REGIONS]

with DAG(
    "dacflow_merge",
    schedule=region_assets[0] | region_assets[1] | region_assets[2],
    catchup=False,
    params={"round": Param(1, type="integer", minimum=1), "policy": Param("theirs", type="string")},
    tags=["dacflow", "example"],
    doc_md=__doc__,
) as dag:

    @task
    def gates() -> dict:
        """Protect `main` and declare the data contract its merges must keep (idempotent: same gates, same ids)."""
        from dacflow import gates as dg
        from dacflow.providers.airflow.hooks import DacHook

        repo = DacHook(HUB_CONN, url=HUB).get_repo()
        columns = {"device_id": "string", "ts": "int64", "heart_rate": "double", "label": "string"}
        rules = {
            "not_null": hd.KEY,
            "ranges": {"heart_rate": [20, 250]},
            "allowed": {"label": ["normal", "arrhythmia"]},
        }
        added = [
            dg.add_gate(repo, "schema", "main", table=hd.TABLE, columns=columns, key=hd.KEY),
            dg.add_gate(repo, "rows", "main", table=hd.TABLE, **rules),
            dg.add_gate(repo, "guard", "main", table=hd.TABLE, max_delete_pct=5),
        ]
        return {"protected": list(dg.protect(repo, "main").protected), "gates": [g["id"] for g in added]}

    corrections_branch = DacBranchOperator(
        task_id="corrections_branch", dacflow_conn_id=HUB_CONN, url=HUB, branch=CORRECTIONS, from_ref="main"
    )

    @task
    def doctors_corrections(params: dict | None = None) -> list[dict]:
        """The cardiologists' corrections of this round (rows of earlier batches), as rows for the table write."""
        round_ = int((params or {})["round"])
        rows: list[dict] = []
        if round_ > 1:
            for region in hd.REGIONS:
                rows += hd.corrections(region, round_).to_pylist()
        return rows

    correct = DacWriteTableOperator(
        task_id="write_corrections",
        dacflow_conn_id=HUB_CONN,
        url=HUB,
        branch=CORRECTIONS,
        table=hd.TABLE,
        data=doctors_corrections(),
        key=hd.KEY,
        mode="upsert",
        message="doctors' corrections, round {{ params.round }}",
    )
    merges = [
        DacMergeOperator(
            task_id=f"merge_{r.replace('-', '_')}",
            dacflow_conn_id=HUB_CONN,
            url=HUB,
            source=f"region/{r}",
            into="main",
            policy="theirs",
        )
        for r in hd.REGIONS
    ]
    merge_corrections = DacMergeOperator(
        task_id="merge_corrections",
        dacflow_conn_id=HUB_CONN,
        url=HUB,
        source=CORRECTIONS,
        into="main",
        policy="{{ params.policy }}",
        message="doctors' corrections into main",
    )

    @task
    def report(ti=None) -> dict:
        """The conflict report of the corrections merge (what a data steward reviews)."""
        summary = ti.xcom_pull(task_ids="merge_corrections", key="conflicts") or {"count": 0, "rows": []}
        for c in summary["rows"]:
            log.info("conflict %s %s: ours=%s theirs=%s -> %s", c["key"], c["column"], c["ours"], c["theirs"],
                        c["resolution"])  # fmt: skip
        return summary

    gated = gates()
    gated >> merges[0]
    corrections_branch >> correct
    for m in merges:
        corrections_branch >> m  # the doctors worked on main as it was before this round's merges
        m >> merge_corrections
    merges[0] >> merges[1] >> merges[2]
    correct >> merge_corrections >> report()
