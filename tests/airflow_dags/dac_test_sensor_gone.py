"""Test DAG: a deferred `DacSnapshotSensor` whose repository is deleted while it waits must fail with one line.

`DACFLOW_TEST_SENSOR_REPO` (a local repository, deleted 1.5 s after the run starts) and `DACFLOW_TEST_SENSOR_AFTER`
(the head of branch `a`) come from the environment at parse time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time

from airflow.sdk import DAG, task
from dacflow.providers.airflow.sensors import DacSnapshotSensor

REPO = os.environ.get("DACFLOW_TEST_SENSOR_REPO") or os.path.join(tempfile.gettempdir(), "dacflow-test-sensor")
AFTER = os.environ.get("DACFLOW_TEST_SENSOR_AFTER") or None

with DAG("dacflow_test_sensor_gone", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:

    @task
    def delete_later() -> None:
        def delete() -> None:
            time.sleep(1.5)
            shutil.rmtree(REPO)

        threading.Thread(target=delete, daemon=True).start()

    delete_later() >> DacSnapshotSensor(
        task_id="wait_gone", dacflow_conn_id=None, url=REPO, branch="a", after=AFTER, poke_interval=0.2, timeout=60
    )
