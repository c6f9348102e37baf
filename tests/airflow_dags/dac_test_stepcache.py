"""Test DAG: the step cache in Airflow, checked by tests/test_airflow_stepcache.py.

`double_scores` is a plain function the test also runs from plain Python (`dacflow.stepcache.step`) before the
DAG runs it through `@dac_step`: both share one cache entry. The snapshot, write-table and merge operators run
with `cache=True`. Read from the environment at parse time: `DACFLOW_TEST_STEPCACHE_REPO` (repository URL),
`DACFLOW_TEST_STEPCACHE_SRC` (folder with people.csv) and `DACFLOW_TEST_STEPCACHE_COUNTS` (a folder where step
bodies count their runs).
"""

from __future__ import annotations

import os
import tempfile

from airflow.sdk import DAG, task
from dacflow.providers.airflow.decorators import dac_step
from dacflow.providers.airflow.operators import (
    DacBranchOperator,
    DacMergeOperator,
    DacSnapshotOperator,
    DacWriteTableOperator,
)

_TMP = os.path.join(tempfile.gettempdir(), "dacflow-test-stepcache")
REPO = os.environ.get("DACFLOW_TEST_STEPCACHE_REPO") or os.path.join(_TMP, "repo")
SRC = os.environ.get("DACFLOW_TEST_STEPCACHE_SRC") or os.path.join(_TMP, "src")
COUNTS = os.environ.get("DACFLOW_TEST_STEPCACHE_COUNTS") or os.path.join(_TMP, "counts")


def count_run(name: str) -> None:
    """Add one to the run counter of a step body (a file per step)."""
    path = os.path.join(COUNTS, name)
    n = 0
    if os.path.exists(path):
        with open(path) as f:
            n = int(f.read())
    with open(path, "w") as f:
        f.write(str(n + 1))


def double_scores(raw: str, factor: int = 2, meta: dict | None = None) -> str:
    """Multiply every score in table people of `raw` by `factor` and commit it on branch doubled."""
    import pyarrow.compute as pc
    from dacflow import Repository

    count_run("double_scores")
    repo = Repository.open(REPO)
    rows = repo.read_table(raw, "people")
    rows = rows.set_column(rows.schema.get_field_index("score"), "score", pc.multiply(rows["score"], factor))
    return repo.write_table("doubled", "people", rows, key=["id"], mode="overwrite", meta=meta).commit


with DAG("dacflow_test_stepcache", schedule=None, catchup=False, tags=["dacflow", "test"]) as dag:
    snapshot = DacSnapshotOperator(
        task_id="snapshot", dacflow_conn_id=None, url=REPO, source=SRC, branch="landing", cache=True,
        tables={"people": ("people.csv", ["id"])},
    )  # fmt: skip
    write = DacWriteTableOperator(
        task_id="write", dacflow_conn_id=None, url=REPO, branch="raw", table="people",
        data=os.path.join(SRC, "people.csv"), key=["id"], mode="overwrite", cache=True,
    )  # fmt: skip
    double = task(task_id="double")(dac_step(url=REPO, output_branch="doubled", inputs=["raw"])(double_scores))
    publish = DacBranchOperator(task_id="publish", dacflow_conn_id=None, url=REPO, branch="published", from_ref="main")
    merge = DacMergeOperator(
        task_id="merge", dacflow_conn_id=None, url=REPO, source="doubled", into="published", cache=True
    )

    snapshot >> write >> double(raw="raw") >> publish >> merge
