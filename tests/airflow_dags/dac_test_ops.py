"""Test DAG: every table/branch operator on one local repository, outputs checked by tests/test_airflow_provider.py.

`DACFLOW_TEST_OPS_REPO` (repository URL), `DACFLOW_TEST_OPS_PARQUET` (rows to upsert first) and
`DACFLOW_TEST_OPS_OUT` (where the diff exports changed rows) are read from the environment at parse time.
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG, task
from dacflow.providers.airflow.operators import (
    DacBranchOperator,
    DacDiffOperator,
    DacMergeOperator,
    DacTagOperator,
    DacWriteTableOperator,
)

_TMP = os.path.join(tempfile.gettempdir(), "dacflow-test-ops")
REPO = os.environ.get("DACFLOW_TEST_OPS_REPO") or os.path.join(_TMP, "repo")
PARQUET = os.environ.get("DACFLOW_TEST_OPS_PARQUET") or os.path.join(_TMP, "people.parquet")
OUT = os.environ.get("DACFLOW_TEST_OPS_OUT") or os.path.join(_TMP, "diff")

with DAG("dacflow_test_ops", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    branch = DacBranchOperator(task_id="branch_dev", dacflow_conn_id=None, url=REPO, branch="dev", from_ref="main")
    from_parquet = DacWriteTableOperator(
        task_id="write_parquet", dacflow_conn_id=None, url=REPO, branch="dev", table="people", data=PARQUET,
        key=["id"], mode="upsert",
    )  # fmt: skip
    tag = DacTagOperator(task_id="tag_v1", dacflow_conn_id=None, url=REPO, tag="v1", ref="dev")

    @task
    def changed_rows() -> list[dict]:
        """Two updated people and one new one, as a downstream write receives them through XCom."""
        return [{"id": 2, "name": "bea", "score": 20.5}, {"id": 4, "name": "dan", "score": 44.0},
                {"id": 7, "name": "gus", "score": 7.0}]  # fmt: skip

    from_xcom = DacWriteTableOperator(
        task_id="write_rows", dacflow_conn_id=None, url=REPO, branch="dev", table="people", data=changed_rows(),
        key=["id"], mode="upsert",
    )  # fmt: skip
    diff = DacDiffOperator(
        task_id="diff", dacflow_conn_id=None, url=REPO, base="v1", target="dev", table="people", output_path=OUT
    )
    merge = DacMergeOperator(task_id="merge", dacflow_conn_id=None, url=REPO, source="dev", into="main")

    branch >> from_parquet >> tag >> from_xcom >> diff >> merge
