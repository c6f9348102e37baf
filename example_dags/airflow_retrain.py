"""Differential retraining, started by the hub's `main` branch moving (an AssetWatcher, no polling DAG).

The model is trained on only the rows new or changed since the data commit it was last trained on, and its
commit on branch `models` records that data commit, the row counts and the run (lineage: which data and which
run made which model).
"""

from __future__ import annotations

import json

import heart_data as hd
from airflow.sdk import DAG, Asset, AssetWatcher, task
from airflow.sdk.exceptions import AirflowSkipException
from dacflow.lineage import code_fingerprint
from dacflow.providers.airflow.assets import asset_uri
from dacflow.providers.airflow.hooks import DacHook
from dacflow.providers.airflow.operators import run_meta
from dacflow.providers.airflow.triggers import DacBranchEventTrigger
from dacflow.retrain import commit_model, last_trained_on

HUB, HUB_CONN = hd.hub_url(), hd.conn_id("hub")
MODELS = "models"

hub_main = Asset(
    name="heart_readings_main",
    uri=asset_uri(HUB, "main"),
    watchers=[
        AssetWatcher(
            name="hub_main_commits",
            trigger=DacBranchEventTrigger(dacflow_conn_id=HUB_CONN, url=HUB, branch="main", poke_interval=30),
        )
    ],
)

with DAG("dacflow_retrain", schedule=[hub_main], catchup=False, tags=["dacflow", "example"], doc_md=__doc__) as dag:

    @task
    def retrain(**context) -> dict:
        """Train on the delta since the model's data commit; commit the model with its lineage."""
        repo = DacHook(HUB_CONN, url=HUB).get_repo()
        pinned = "main"
        for event in (context.get("triggering_asset_events") or {}).get(hub_main, []):
            pinned = (event.extra.get("payload") or event.extra).get("commit") or pinned  # the commit that fired
        since = last_trained_on(repo, MODELS, hd.TABLE)
        delta = repo.training_delta(hd.TABLE, since, head=pinned)
        if since is not None and delta.data_commit == since:
            raise AirflowSkipException(f"the model already saw main@{since[:12]}")
        previous = json.loads(repo.read_file(MODELS, "model.json")) if since else None
        model = hd.train(previous, delta.rows)
        lineage = run_meta(context, code=code_fingerprint(hd.train))  # + the data commit, added by commit_model
        result = commit_model(repo, MODELS, {"model.json": hd.model_bytes(model)}, delta, meta=lineage)
        return {
            "model_commit": result.commit,
            "trained_on": delta.data_commit,
            "since": since,
            "rows": len(delta.rows),
            "table_rows": repo.table_object(delta.data_commit, hd.TABLE).rows,
            "accuracy_on_delta": hd.accuracy(model, delta.rows) if len(delta.rows) else None,
        }

    retrain()
