"""Edge ingestion: three regions snapshot a new batch of readings and ship only the delta to the hub.

North America runs edges on AWS (S3) and Google Cloud (GCS), Europe on Azure Blob. Each region's batch lands
in its edge's landing area, is snapshotted as the `readings` table on branch `region/<name>` of the edge
repository, and the branch is transferred to the hub (only chunks the hub lacks travel). Run it with
`airflow dags test dacflow_edge_ingestion -c '{"round": 1}'`; settings: see `heart_data.py`.
"""

from __future__ import annotations

import heart_data as hd
from airflow.sdk import DAG, Param, task, task_group
from dacflow.providers.airflow.hooks import DacHook
from dacflow.providers.airflow.operators import DacSnapshotOperator, DacTransferOperator
from dacflow.stores import open_store

with DAG(
    "dacflow_edge_ingestion",
    schedule=None,
    catchup=False,
    params={"round": Param(1, type="integer", minimum=1, description="batch number of this ingestion")},
    tags=["dacflow", "example"],
    doc_md=__doc__,
) as dag:
    for region in hd.REGIONS:

        @task_group(group_id=region.replace("-", "_"))
        def ingest(region: str = region) -> None:
            edge, conn = hd.edge_url(region), hd.conn_id(region)
            landing, repo = f"{edge}/landing", f"{edge}/repo"

            @task
            def land_batch(params: dict | None = None) -> str:
                """Devices of the region deliver a batch of readings to the edge's landing area."""
                round_ = int((params or {})["round"])
                _, options = DacHook(conn, url=landing).store_spec() if conn else (landing, {})
                store = open_store(landing, create=True, **options)
                store.put(f"batch-{round_:04d}.parquet", hd.to_parquet(hd.readings(region, round_)))
                return landing

            snapshot = DacSnapshotOperator(
                task_id="snapshot",
                dacflow_conn_id=conn,
                url=repo,
                source=landing,
                source_conn_id=conn,
                branch=f"region/{region}",
                tables={hd.TABLE: ("*.parquet", hd.KEY)},
                dedupe="last",  # a re-sent reading in a later batch replaces the earlier one
                message=f"{region} batch {{{{ params.round }}}}",
            )
            to_hub = DacTransferOperator(
                task_id="to_hub",
                source_conn_id=conn,
                source_url=repo,
                target_conn_id=hd.conn_id("hub"),
                target_url=hd.hub_url(),
                refs=[f"region/{region}"],
            )
            land_batch() >> snapshot >> to_hub

        ingest()
