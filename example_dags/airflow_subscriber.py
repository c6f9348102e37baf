"""The subscriber side of publish/subscribe: a store that follows the hub's published `main` branch.

The DAG starts when the followed branch moves at its source (an `AssetWatcher` whose `DacBranchEventTrigger`
polls the source's ref: no polling DAG, no server), its first task syncs the subscription — only the delta
travels, part of it from peers when several stores hold the data — and the next task reports what arrived.

Set-up, once (the publisher, then the subscriber):

    dacflow --repo HUB publish main
    dacflow subscribe HUB main --into SUBSCRIBER --as hub-main [--peer OTHER_STORE]

Settings come from the environment like the other examples (heart_data.py): `DACFLOW_EXAMPLE_PUBLISHER_URL`
(default: the hub), `DACFLOW_EXAMPLE_SUBSCRIBER_URL` (default: a local directory), their connections
`DACFLOW_EXAMPLE_PUBLISHER_CONN` / `DACFLOW_EXAMPLE_SUBSCRIBER_CONN`, and `DACFLOW_EXAMPLE_SUBSCRIPTION`
(the local branch, default `hub-main`).
"""

from __future__ import annotations

import os
import tempfile

import heart_data as hd
from airflow.sdk import DAG, Asset, AssetWatcher, task
from dacflow.providers.airflow.assets import asset_uri
from dacflow.providers.airflow.hooks import DacHook
from dacflow.providers.airflow.operators import DacSyncOperator
from dacflow.providers.airflow.triggers import DacBranchEventTrigger

SOURCE = hd.setting("publisher_url") or hd.hub_url()
SOURCE_CONN = hd.conn_id("publisher") if hd.setting("publisher_url") else hd.conn_id("hub")
BRANCH = "main"
SUBSCRIBER = hd.setting("subscriber_url") or os.path.join(
    hd.setting("root") or os.path.join(tempfile.gettempdir(), "dacflow-example"), "subscriber"
)
SUBSCRIBER_CONN = hd.conn_id("subscriber")
LOCAL = hd.setting("subscription") or "hub-main"

# Following the hub's main, this is the very asset the retraining DAG watches (Airflow keeps asset names and
# URIs unique), so one trigger serves both DAGs; another publisher gets an asset of its own.
_HUB = hd.hub_url() == SOURCE
source_branch = Asset(
    name="heart_readings_main" if _HUB else asset_uri(SOURCE, BRANCH),
    uri=asset_uri(SOURCE, BRANCH),
    watchers=[
        AssetWatcher(
            name="hub_main_commits" if _HUB else "published_branch_commits",
            trigger=DacBranchEventTrigger(dacflow_conn_id=SOURCE_CONN, url=SOURCE, branch=BRANCH, poke_interval=30),
        )
    ],
)

with DAG(
    "dacflow_subscriber", schedule=[source_branch], catchup=False, tags=["dacflow", "example"], doc_md=__doc__
) as dag:
    sync = DacSyncOperator(
        task_id="sync",
        dacflow_conn_id=SUBSCRIBER_CONN,
        url=SUBSCRIBER,
        subscriptions=[LOCAL],
        source_conn_id=SOURCE_CONN,
    )

    @task
    def arrived(**context) -> dict:
        """What the sync brought: the commit that started the run, the local head, and the paths that changed."""
        repo = DacHook(SUBSCRIBER_CONN, url=SUBSCRIBER).get_repo()
        fired = [
            (e.extra.get("payload") or e.extra).get("commit")
            for e in (context.get("triggering_asset_events") or {}).get(source_branch, [])
        ]
        (report,) = context["ti"].xcom_pull(task_ids="sync")["subscriptions"]
        head = repo.head(LOCAL)
        history = {cid for cid, _ in repo.log(LOCAL)} if head else set()
        changed = repo.diff(report["from"], head).to_json() if report["from"] and head else None
        return {
            "head": head,
            "fired_by": fired,
            "has_fired_commits": all(c in history for c in fired if c),
            "status": report["status"],
            "bytes_sent": report["bytes_sent"],
            "changed": {k: changed[k] for k in ("added", "removed", "modified")} if changed else None,
        }

    sync >> arrived()
