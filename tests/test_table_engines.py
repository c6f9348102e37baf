"""Tables meet the engines people use: pandas and polars frames go in, and a checkout is one dataset that
pyarrow, pandas, polars and DuckDB all read."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from dacflow import Repository


def test_frames_in_and_datasets_out(repo: Repository, tmp_path: Path) -> None:
    n = 300_000  # several fragments, so the checkout has several part files
    frame = pd.DataFrame(
        {"pid": [f"p{i % 997:04d}" for i in range(n)], "ts": range(n), "hr": [60 + i % 90 for i in range(n)]}
    )
    repo.write_table("main", "vitals", frame, key=["pid", "ts"], mode="overwrite")
    fix = pl.DataFrame({"pid": ["p0001"], "ts": [1], "hr": [199]})
    repo.write_table("main", "vitals", fix, mode="upsert")  # a polars correction; checkout now applies changes
    out = tmp_path / "out"
    repo.checkout("main", str(out))
    parts = sorted((out / "vitals").glob("part-*.parquet"))
    assert len(parts) >= 2
    expected = repo.read_table("main", "vitals")
    assert (
        len(expected) == n
        and expected.filter(pa.compute.equal(expected["pid"], "p0001")).column("hr")[0].as_py() == 199
    )
    got_arrow = (
        ds.dataset(out / "vitals", format="parquet").to_table().sort_by([("pid", "ascending"), ("ts", "ascending")])
    )
    assert got_arrow.equals(expected)
    got_pandas = pd.read_parquet(out / "vitals").sort_values(["pid", "ts"]).reset_index(drop=True)
    assert (
        len(got_pandas) == n
        and int(got_pandas.loc[(got_pandas.pid == "p0001") & (got_pandas.ts == 1), "hr"].iloc[0]) == 199
    )
    got_polars = pl.read_parquet(str(out / "vitals" / "*.parquet")).sort(["pid", "ts"])
    assert got_polars.height == n and got_polars["hr"].sum() == pa.compute.sum(expected["hr"]).as_py()
    count, hr = duckdb.sql(f"SELECT count(*), sum(hr) FROM read_parquet('{out / 'vitals'}/*.parquet')").fetchall()[0]
    assert count == n and hr == pa.compute.sum(expected["hr"]).as_py()
