"""Synthetic heart-monitoring data and a tiny incremental model, shared by the example DAGs and workflows.

Readings come from devices in three edge regions. Round r of a region is deterministic: new readings plus a
re-send of a few readings of round r-1 whose heart rate the device recalibrated. Doctors' corrections touch
some of the same readings (heart rate and label), so merging them after the regions makes real conflicts.
Settings (store URLs, connection ids) come from environment variables so the same DAGs run on local
directories (the default), on the emulators the tests start, or on real clouds.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REGIONS = {"na-aws": "s3", "na-gcp": "gs", "eu-azure": "az"}  # region -> the cloud its edge runs on
KEY = ["ts", "device_id"]  # time first: new readings sort after old ones, so a batch only appends fragments
TABLE = "readings"
ROWS_PER_ROUND = 2000
RESENT = 5  # readings of the previous round each round re-sends, recalibrated
CORRECTED = 3  # of those, how many the doctors also corrected (so: conflicts per region and round)
_BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z


def setting(name: str, default: str | None = None) -> str | None:
    """An example setting from the environment (`DACFLOW_EXAMPLE_<NAME>`)."""
    return os.environ.get(f"DACFLOW_EXAMPLE_{name.upper().replace('-', '_')}", default)


def _root() -> str:
    return setting("root") or os.path.join(tempfile.gettempdir(), "dacflow-example")


def hub_url() -> str:
    """Where the hub repository lives (default: a local directory)."""
    return setting("hub_url") or os.path.join(_root(), "hub")


def edge_url(region: str) -> str:
    """Where a region's edge keeps its landing area and repository (default: local directories)."""
    return setting(f"edge_{region}_url") or os.path.join(_root(), "edge", region)


def conn_id(name: str) -> str | None:
    """The Airflow connection for `hub` or a region (None: the store's own environment credentials)."""
    return setting(f"{name}_conn")


def readings(region: str, round_: int, rows: int = ROWS_PER_ROUND) -> pa.Table:
    """Round `round_` of a region's readings: new ones, then RESENT recalibrated readings of the round before."""
    rng = np.random.default_rng([hash_region(region), round_])
    devices = np.array([f"{region}-dev{i:03d}" for i in rng.integers(0, 50, rows)])
    ts = _BASE_TS + round_ * 86_400 + np.sort(rng.choice(86_400, rows, replace=False))
    sick = rng.random(rows) < 0.12
    heart_rate = np.where(sick, rng.normal(128, 14, rows), rng.normal(74, 9, rows)).round(1)
    spo2 = np.where(sick, rng.normal(91, 3, rows), rng.normal(97.5, 1.2, rows)).clip(70, 100).round(1)
    table = pa.table(
        {
            "device_id": devices,
            "ts": pa.array(ts, pa.int64()),
            "region": pa.array([region] * rows),
            "heart_rate": heart_rate,
            "spo2": spo2,
            "label": pa.array(np.where(sick, "arrhythmia", "normal")),
        }
    )
    if round_ > 1:
        resent = readings(region, round_ - 1, rows).slice(0, RESENT)
        resent = resent.set_column(3, "heart_rate", pc.add(resent["heart_rate"], 2.0))
        table = pa.concat_tables([table, resent])
    return table


def corrections(region: str, round_: int) -> pa.Table:
    """Doctors' corrections made during round `round_`: readings of round `round_`-1 re-read by a cardiologist."""
    seen = readings(region, round_ - 1).slice(0, CORRECTED)
    hr = pc.subtract(seen["heart_rate"], 5.0)
    seen = seen.set_column(3, "heart_rate", hr)
    return seen.set_column(5, "label", pa.array(["arrhythmia"] * len(seen)))


def hash_region(region: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(region)) % 2**31


def to_parquet(table: pa.Table) -> bytes:
    """A table as Parquet bytes (what lands in an edge's landing area)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


# -- a tiny incremental model: logistic regression on (heart_rate, spo2) by SGD, updated with new rows only ---


def _features(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([rows["heart_rate"].to_numpy(), rows["spo2"].to_numpy()]).astype(float)
    x = (x - np.array([90.0, 96.0])) / np.array([25.0, 3.0])
    y = (np.asarray(rows["label"].to_pylist()) == "arrhythmia").astype(float)
    return np.column_stack([x, np.ones(len(x))]), y


def train(model: dict[str, Any] | None, rows: pa.Table, epochs: int = 20, lr: float = 0.5) -> dict[str, Any]:
    """Update `model` (None: a new one) with `rows` only; returns the new model as JSON-able dict."""
    w = np.array(model["weights"]) if model else np.zeros(3)
    seen = int(model["rows_seen"]) if model else 0
    if len(rows):
        x, y = _features(rows)
        for _ in range(epochs):
            p = 1 / (1 + np.exp(-x @ w))
            w -= lr * x.T @ (p - y) / len(y)
    return {"weights": [float(v) for v in w], "rows_seen": seen + len(rows)}


def accuracy(model: dict[str, Any], rows: pa.Table) -> float:
    """Share of `rows` whose label the model predicts."""
    x, y = _features(rows)
    predicted = (1 / (1 + np.exp(-x @ np.array(model["weights"])))) > 0.5
    return float((predicted == (y > 0.5)).mean())


def model_bytes(model: dict[str, Any]) -> bytes:
    return json.dumps(model, sort_keys=True).encode()
