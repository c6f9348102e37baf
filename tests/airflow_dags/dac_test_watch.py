"""Test DAG: scheduled by an `AssetWatcher` whose `DacBranchEventTrigger` watches branch `main` of a repository.

`DACFLOW_TEST_WATCH_REPO` (a local repository URL) comes from the environment at parse time.
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG, Asset, AssetWatcher, task
from dacflow.providers.airflow.assets import asset_uri
from dacflow.providers.airflow.triggers import DacBranchEventTrigger

REPO = os.environ.get("DACFLOW_TEST_WATCH_REPO") or os.path.join(tempfile.gettempdir(), "dacflow-test-watch")

watched = Asset(
    uri=asset_uri(REPO, "main"),
    watchers=[
        AssetWatcher(
            name="dacflow_test_main_commits",
            trigger=DacBranchEventTrigger(dacflow_conn_id=None, url=REPO, branch="main", poke_interval=0.2),
        )
    ],
)

with DAG("dacflow_test_watch", schedule=[watched], catchup=False, tags=["dacflow", "test"]) as dag:

    @task
    def seen(**context) -> list:
        """The commits of the events that started this run."""
        events = (context.get("triggering_asset_events") or {}).get(watched, [])
        return [(e.extra.get("payload") or e.extra).get("commit") for e in events]

    seen()
