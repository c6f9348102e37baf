"""Test DAG: `DacSnapshotSensor` waiting in poke mode and deferred (its trigger runs inline under `dag.test()`).

A task starts a thread that commits to branch `a` after 1.5 s and to `b` 3 s later; the poke-mode sensor
waits for `a`, the deferrable one for `b` (only commits whose metadata says `source: thread`).
`DACFLOW_TEST_SENSOR_REPO` (a local repository) and `DACFLOW_TEST_SENSOR_AFTER` (the commit both branches are
at when the run starts) come from the environment at parse time.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time

from airflow.sdk import DAG, task
from dacflow.providers.airflow.sensors import DacSnapshotSensor

REPO = os.environ.get("DACFLOW_TEST_SENSOR_REPO") or os.path.join(tempfile.gettempdir(), "dacflow-test-sensor")
AFTER = os.environ.get("DACFLOW_TEST_SENSOR_AFTER") or None


def _commit_later() -> None:
    """Commit to `a` 1.5 s from now, then to `b` 3 s after that (the second sensor has deferred by then)."""
    import pyarrow as pa
    from dacflow import Repository

    for branch, delay in (("a", 1.5), ("b", 3.0)):
        time.sleep(delay)
        rows = pa.Table.from_pylist([{"id": 1, "branch": branch}])
        Repository.open(REPO).write_table(branch, "moves", rows, key=["id"], meta={"source": "thread"})


with DAG("dacflow_test_sensor", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:

    @task
    def commit_later() -> None:
        threading.Thread(target=_commit_later, daemon=True).start()

    poke = DacSnapshotSensor(
        task_id="wait_poke", dacflow_conn_id=None, url=REPO, branch="a", after=AFTER, deferrable=False,
        mode="poke", poke_interval=0.2, timeout=60,
    )  # fmt: skip
    deferred = DacSnapshotSensor(
        task_id="wait_deferred", dacflow_conn_id=None, url=REPO, branch="b", after=AFTER,
        meta_match={"source": "thread"}, poke_interval=0.2, timeout=60,
    )  # fmt: skip
    commit_later() >> poke >> deferred
