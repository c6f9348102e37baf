"""Test DAG: each task feeds the provider one kind of bad input and must fail with a one-line `dacflow:` reason.

Settings come from the environment at parse time: `DACFLOW_TEST_FAIL_REPO` is a local repository whose branch
`conflicting` conflicts with `main`; the connections (`dac_http`, `dac_aws_nourl`) are defined by the test.
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG
from dacflow.providers.airflow.operators import (
    DacBranchOperator,
    DacDiffOperator,
    DacMergeOperator,
    DacTagOperator,
)

REPO = os.environ.get("DACFLOW_TEST_FAIL_REPO") or os.path.join(tempfile.gettempdir(), "dacflow-test-fail")

with DAG("dacflow_test_failures", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    DacBranchOperator(task_id="unknown_conn", dacflow_conn_id="dac_nowhere", branch="x")
    DacBranchOperator(task_id="http_conn", dacflow_conn_id="dac_http", branch="x")
    DacBranchOperator(task_id="foreign_no_url", dacflow_conn_id="dac_aws_nourl", branch="x")
    DacBranchOperator(task_id="aws_gs_url", dacflow_conn_id="dac_aws_nourl", url="gs://bucket/repo", branch="x")
    DacBranchOperator(task_id="bad_scheme", dacflow_conn_id=None, url="ftp://host/repo", branch="x")
    DacMergeOperator(task_id="merge_missing", dacflow_conn_id=None, url=REPO, source="no-such-branch", into="main")
    DacDiffOperator(task_id="diff_missing", dacflow_conn_id=None, url=REPO, base="main", target="no-such-branch")
    DacTagOperator(task_id="tag_missing", dacflow_conn_id=None, url=REPO, tag="v1", ref="no-such-branch")
    DacMergeOperator(
        task_id="merge_conflict", dacflow_conn_id=None, url=REPO, source="conflicting", into="main", policy="fail"
    )
