"""Synthetic heart-monitoring data for the demo and the examples: readings from three edge regions and
doctors' corrections, deterministic per (region, round).

Round r of a region holds `rows` new readings plus a re-send of the first RESENT readings of round r-1 whose heart
rate the device recalibrated (+2 bpm). The doctors' corrections of round r re-read the first CORRECTED readings of
round r-1 (heart rate -5 bpm, label "arrhythmia"), so merging them after the regions meets real cell conflicts.
"""

from __future__ import annotations

import io

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
FEATURES = ["heart_rate", "spo2", "hrv"]
_BASE_TS = 1_767_225_600  # 2026-01-01T00:00:00Z


def _seed(region: str) -> int:
    return sum(ord(c) * 31**i for i, c in enumerate(region)) % 2**31


def readings(region: str, round_: int, rows: int = ROWS_PER_ROUND) -> pa.Table:
    """Round `round_` of a region's readings: `rows` new ones, then RESENT recalibrated ones of the round before."""
    table = new_readings(region, round_, rows)
    if round_ > 1:
        resent = new_readings(region, round_ - 1, rows).slice(0, RESENT)
        resent = resent.set_column(3, "heart_rate", pc.add(resent["heart_rate"], 2.0))
        table = pa.concat_tables([table, resent])
    return table


def new_readings(region: str, round_: int, rows: int = ROWS_PER_ROUND) -> pa.Table:
    """The readings first sent in round `round_` of a region (deterministic; no re-sends)."""
    rng = np.random.default_rng([_seed(region), round_])
    devices = np.array([f"{region}-dev{i:03d}" for i in rng.integers(0, 50, rows)])
    ts = _BASE_TS + round_ * 86_400 + np.sort(rng.choice(86_400, rows, replace=False))
    sick = rng.random(rows) < 0.12
    heart_rate = np.where(sick, rng.normal(112, 18, rows), rng.normal(76, 11, rows)).round(1)
    spo2 = np.where(sick, rng.normal(94, 3, rows), rng.normal(97, 1.6, rows)).clip(70, 100).round(1)
    hrv = np.where(sick, rng.normal(28, 9, rows), rng.normal(52, 12, rows)).clip(1, None).round(1)
    return pa.table(
        {
            "device_id": devices,
            "ts": pa.array(ts, pa.int64()),
            "region": pa.array([region] * rows),
            "heart_rate": heart_rate,
            "spo2": spo2,
            "label": pa.array(np.where(sick, "arrhythmia", "normal")),
            "hrv": hrv,
        }
    )


def corrections(region: str, round_: int, rows: int = ROWS_PER_ROUND) -> pa.Table:
    """Doctors' corrections made during round `round_`: readings of round `round_`-1 re-read by a cardiologist."""
    seen = new_readings(region, round_ - 1, rows).slice(0, CORRECTED)
    seen = seen.set_column(3, "heart_rate", pc.subtract(seen["heart_rate"], 5.0))
    return seen.set_column(5, "label", pa.array(["arrhythmia"] * len(seen)))


def to_parquet(table: pa.Table) -> bytes:
    """A table as Parquet bytes (what lands in an edge's landing area)."""
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def features(rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (heart rate, SpO2, HRV) and labels (1 = arrhythmia) of some readings."""
    x = np.column_stack([rows[c].to_numpy(zero_copy_only=False) for c in FEATURES]).astype(float)
    y = (np.asarray(rows["label"].to_pylist()) == "arrhythmia").astype(int)
    return x, y
