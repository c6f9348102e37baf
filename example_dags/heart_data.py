"""Settings and a tiny incremental model for the example DAGs; the synthetic heart-monitoring readings and
doctors' corrections come from `dacflow.heartdata` (deterministic per region and round, see there).
Settings (store URLs, connection ids) come from environment variables so the same DAGs run on local
directories (the default), on the emulators the tests start, or on real clouds.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import dacflow.heartdata as hd
import numpy as np
import pyarrow as pa

REGIONS, KEY, TABLE = hd.REGIONS, hd.KEY, hd.TABLE
ROWS_PER_ROUND, RESENT, CORRECTED = hd.ROWS_PER_ROUND, hd.RESENT, hd.CORRECTED
readings, corrections, to_parquet = hd.readings, hd.corrections, hd.to_parquet


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
