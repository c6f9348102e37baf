"""Test DAG: write-audit-publish on a gated, protected `main` — a merge that breaks its gates and a direct write to
it fail with every reason on one line; a merge that passes publishes.

`DACFLOW_TEST_GATES_REPO` (read at parse time) is a local repository whose `main` is gated and protected, with
branches `bad` (breaks the gates) and `good` (passes them).
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG
from dacflow.providers.airflow.operators import DacMergeOperator, DacWriteTableOperator

REPO = os.environ.get("DACFLOW_TEST_GATES_REPO") or os.path.join(tempfile.gettempdir(), "dacflow-test-gates")

with DAG("dacflow_test_gates", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    bad = DacMergeOperator(task_id="merge_bad", dacflow_conn_id=None, url=REPO, source="bad", into="main")
    direct = DacWriteTableOperator(
        task_id="write_main", dacflow_conn_id=None, url=REPO, branch="main", table="vitals",
        data=[{"id": 99, "hr": 70.0}], key=["id"], mode="upsert",
    )  # fmt: skip
    good = DacMergeOperator(
        task_id="merge_good", dacflow_conn_id=None, url=REPO, source="good", into="main", trigger_rule="all_done"
    )
    [bad, direct] >> good
