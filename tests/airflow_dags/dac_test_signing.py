"""Test DAG: write rows signed with the connection's key, then ship them only if the tip is signed by a trusted key.

Read from the environment at parse time: `DACFLOW_TEST_SIGN_SRC` and `DACFLOW_TEST_SIGN_DST` (repository paths),
`DACFLOW_TEST_SIGN_TRUSTED` (a public key file, or the id of a connection whose key is trusted). The connection
`dacflow_test_sign` (type dacflow, url = the source, signing_key = a private key) is defined by the test.
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG
from dacflow.providers.airflow.operators import DacTransferOperator, DacWriteTableOperator

_TMP = os.path.join(tempfile.gettempdir(), "dacflow-test-sign")
SRC = os.environ.get("DACFLOW_TEST_SIGN_SRC") or os.path.join(_TMP, "src")
DST = os.environ.get("DACFLOW_TEST_SIGN_DST") or os.path.join(_TMP, "dst")
TRUSTED = os.environ.get("DACFLOW_TEST_SIGN_TRUSTED") or "dacflow_test_sign"

with DAG("dacflow_test_signing", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    write = DacWriteTableOperator(
        task_id="write_signed", dacflow_conn_id="dacflow_test_sign", branch="main", table="vitals",
        data=[{"id": 1, "hr": 61}, {"id": 2, "hr": 72}], key=["id"], mode="upsert", sign=True,
    )  # fmt: skip
    ship = DacTransferOperator(
        task_id="ship", source_conn_id="dacflow_test_sign", target_url=DST, refs=["main"], require_signed=TRUSTED
    )
    write >> ship
