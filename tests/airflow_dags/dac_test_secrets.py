"""Test DAG: connections whose secrets are canaries; two tasks succeed (S3 on moto), two fail (a wrong Azure key,
an unparsable Google key). The test asserts no canary reaches a log line, an XCom or an error message.

Store URLs come from the environment at parse time: `DACFLOW_TEST_SECRETS_S3`, `_AZ` and `_GS`; the connections
(`dac_canary_s3`, `dac_canary_aws`, `dac_canary_az`, `dac_canary_gcp`) are defined by the test.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG
from dacflow.providers.airflow.operators import DacBranchOperator, DacWriteTableOperator

S3 = os.environ.get("DACFLOW_TEST_SECRETS_S3") or "s3://dacflow-test-secrets/repo"
AZ = os.environ.get("DACFLOW_TEST_SECRETS_AZ") or "az://dacflow-test-secrets/repo"
GS = os.environ.get("DACFLOW_TEST_SECRETS_GS") or "gs://dacflow-test-secrets/repo"

with DAG("dacflow_test_secrets", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    write = DacWriteTableOperator(
        task_id="s3_write", dacflow_conn_id="dac_canary_s3", branch="main", table="t", key=["id"],
        data=[{"id": 1, "v": "one"}, {"id": 2, "v": "two"}],
    )  # fmt: skip
    branch = DacBranchOperator(
        task_id="aws_branch", dacflow_conn_id="dac_canary_aws", url=S3, branch="dev", from_ref="main"
    )
    write >> branch
    DacBranchOperator(task_id="azure_bad_key", dacflow_conn_id="dac_canary_az", url=AZ, branch="x")
    DacBranchOperator(task_id="gcp_bad_key", dacflow_conn_id="dac_canary_gcp", url=GS, branch="x")
