#!/usr/bin/env python3
"""Table benchmark of the "Tables" issue: a 10-million-row table, two 1% upserts on branches, diff, merge.

Run by hand (not part of CI); needs numpy, pyarrow, duckdb and psutil besides dacflow:

    python bench/table_bench.py [--rows 10000000] [--out /tmp/dacflow-table-bench] [--overlap N] [--repeat 3]

About 5 minutes at 10M rows once the data exists (generating it takes another minute; cached in OUT/input).
On a shared machine, run it in its own scheduling group (see docs/benchmarks-tables.md).

1. Generates heart-monitoring readings keyed by (patient_id, ts): a base table of N rows and, for each of two
   branches ("eu", "na"), an upsert of 1% of N rows: half updates of existing rows (a re-processing pass: new
   heart_rate, hrv_rmssd, signal_quality, recorded_at), half new readings, at uniformly random positions in
   the key space (a new reading falls between two readings of its patient: not appended, not on any grid).
   `--overlap` keys (default N/20000) are written on both branches with different values (half updates, half
   inserts of the same new key), so the second merge meets conflicts. Generating is not timed.
2. Runs each step in a fresh child process (`--step NAME`) that loads its inputs, resets its peak-RSS mark
   (/proc/self/clear_refs = 5), runs the timed operation, and reports wall time, CPU time (user+sys, all
   threads) and its peak RSS (VmHWM: the high-water mark of the step, including the interpreter, the libraries
   and the inputs it holds, e.g. the 10M input rows of the first write):
     write       repo.write_table("main", "vitals", rows, key=[patient_id, ts], mode="overwrite"); tag v0
     read_v0     repo.read_table("v0", "vitals") (the base run only)
     upsert_eu   repo.branch("eu", "v0"); write_table("eu", ..., mode="upsert") of its 1%
     upsert_na   the same on "na"
     diff        repo.diff("v0", "eu", table="vitals"), best of --repeat, counts checked
     checkout    (baseline input, informational) repo.checkout of v0 and of eu into OUT/co/{v0,eu}
     duckdb      the baseline: DuckDB FULL OUTER JOIN of the two Parquet datasets on the key, keeping
                 inserted, deleted and updated rows (every value column compared with IS DISTINCT FROM) with
                 old and new values, fetched as Arrow; default threads; best of --repeat; counts checked
     merge_eu    repo.merge("eu", into="main", policy="latest:recorded_at"): main has not moved: fast-forward
     merge_na    repo.merge("na", into="main", policy="latest:recorded_at"): the three-way, cell-level merge;
                 best of --repeat (repeat - 1 runs into throwaway branches at main's head, then the real one)
     export      repo.diff("v0", "main", table="vitals"), then TableDiff.export(OUT/export) (timed apart)
     read_main   repo.read_table("main", "vitals") (base + 2 changesets composed), row count checked
3. Prints a table and the targets, and writes OUT/results.json.

Targets: diff / DuckDB <= 0.2; merge / DuckDB <= 1; bytes newly stored by a 1% upsert / zstd Parquet size of
the changed rows alone <= 3; peak RSS < 4 GiB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

MiB = 1 << 20
GiB = 1 << 30
DATA_VERSION = 2
TABLE = "vitals"
KEY = ["patient_id", "ts"]
POLICY = "latest:recorded_at"
READINGS_PER_PATIENT = 500
STEP_MS = 60_000  # a reading every minute per patient, jittered within the first half of the minute
TARGETS = {"diff_vs_duckdb": 0.2, "merge_vs_duckdb": 1.0, "upsert_bytes_ratio": 3.0, "peak_rss_gib": 4.0}
REGIONS = [("EU", "eu-west"), ("NA", "us-east"), ("AP", "ap-south"), ("LA", "sa-east")]


# ----------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------
def _patients(n_patients: int, rng: Any) -> dict[str, Any]:
    import numpy as np

    region = rng.integers(0, len(REGIONS), n_patients)
    names = [f"{REGIONS[r][0]}-{i:06d}" for i, r in enumerate(region.tolist())]
    devices = [f"DEV-{x:08x}" for x in rng.integers(0, 1 << 32, n_patients).tolist()]
    return {
        "name": np.array(names, dtype=object),
        "device": np.array(devices, dtype=object),
        "region": np.array([REGIONS[r][1] for r in region.tolist()], dtype=object),
        "t0": 1_767_225_600_000 + rng.integers(0, 86_400_000, n_patients),  # 2026-01-01 + up to a day
        "hr": rng.integers(58, 95, n_patients),
        "temp": rng.normal(36.7, 0.3, n_patients),
    }


def _values(pat: dict[str, Any], p: Any, ts: Any, rng: Any) -> dict[str, Any]:
    """Value columns for readings of patients `p` (indices) at times `ts` (int64 ms)."""
    import numpy as np
    import pyarrow as pa

    n = len(p)

    def take(a: Any) -> Any:
        return pa.array(a, pa.string()).take(pa.array(p))

    hr = np.clip(pat["hr"][p] + rng.normal(0, 7, n), 35, 200).astype(np.int16)
    systolic = np.clip(rng.normal(122, 14, n), 80, 210).astype(np.int16)
    return {
        "device_id": take(pat["device"]),
        "region": take(pat["region"]),
        "heart_rate": pa.array(hr),
        "spo2": pa.array(np.clip(rng.normal(97, 1.5, n), 80, 100).astype(np.int8)),
        "systolic": pa.array(systolic),
        "diastolic": pa.array((systolic * 0.65 + rng.normal(0, 6, n)).astype(np.int16)),
        "temperature_c": pa.array(pat["temp"][p] + rng.normal(0, 0.15, n)),
        "rr_interval_ms": pa.array(60_000.0 / hr + rng.normal(0, 25, n)),
        "hrv_rmssd": pa.array(np.abs(rng.normal(42, 15, n))),
        "resp_rate": pa.array(rng.normal(15, 2.5, n)),
        "perfusion_index": pa.array(np.abs(rng.lognormal(0.8, 0.5, n))),
        "accel_x": pa.array(rng.normal(0, 0.2, n)),
        "accel_y": pa.array(rng.normal(0, 0.2, n)),
        "accel_z": pa.array(rng.normal(1, 0.2, n)),
        "ecg_qrs_mv": pa.array(rng.normal(1.1, 0.25, n)),
        "pulse_transit_ms": pa.array(rng.normal(210, 20, n)),
        "skin_temp_c": pa.array(pat["temp"][p] - 3 + rng.normal(0, 0.4, n)),
        "signal_quality": pa.array(rng.uniform(0.5, 1.0, n).astype(np.float32)),
        "battery_pct": pa.array(np.clip(100 - (ts % 86_400_000) // 1_000_000, 5, 100).astype(np.int8)),
        "recorded_at": pa.array(ts + rng.integers(500, 120_000, n), pa.timestamp("ms")),
    }


def _table(pat: dict[str, Any], p: Any, ts: Any, values: dict[str, Any]) -> Any:
    import pyarrow as pa

    cols = {"patient_id": pa.array(pat["name"], pa.string()).take(pa.array(p)), "ts": pa.array(ts, pa.timestamp("ms"))}
    return pa.table({**cols, **values})


def generate(rows: int, overlap: int, dest: str) -> dict[str, Any]:
    """Write base.arrow, eu.arrow, na.arrow and meta.json into `dest` (skipped if already there)."""
    meta_path = os.path.join(dest, "meta.json")
    if os.path.exists(meta_path):
        meta = _load(meta_path)
        if meta.get("version") == DATA_VERSION and meta["rows"] == rows and meta["overlap"] == overlap:
            return meta
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    os.makedirs(dest, exist_ok=True)
    rng = np.random.default_rng(20260105)
    n_pat = max(1, rows // READINGS_PER_PATIENT)
    per = rows // n_pat
    n = n_pat * per
    pat = _patients(n_pat, rng)
    order = rng.permutation(n_pat)  # exported patient by patient, not in key order
    p = np.repeat(order, per)
    k = np.tile(np.arange(per, dtype=np.int64), n_pat)
    jitter = rng.integers(0, STEP_MS // 2, n)
    ts = pat["t0"][p] + k * STEP_MS + jitter
    base = _table(pat, p, ts, _values(pat, p, ts, rng))
    _write_ipc(base, os.path.join(dest, "base.arrow"))

    n_up = n // 100
    n_upd, n_ins = n_up // 2, n_up - n_up // 2
    ov_upd, ov_ins = overlap // 2, overlap - overlap // 2
    pick = rng.permutation(n)  # distinct rows: updates and insert anchors for both branches
    eu_upd, eu_ins = pick[:n_upd], pick[n_upd : n_upd + n_ins]
    off = n_upd + n_ins
    na_upd = np.concatenate([eu_upd[:ov_upd], pick[off : off + n_upd - ov_upd]])
    off += n_upd - ov_upd
    na_ins = np.concatenate([eu_ins[:ov_ins], pick[off : off + n_ins - ov_ins]])
    # A new reading at anchor row i: in the second half of its minute, where no base reading is.
    gap = rng.integers(STEP_MS // 2, STEP_MS, n)
    new_ts = pat["t0"][p] + k * STEP_MS + gap
    sizes = {}
    for name, upd, ins in (("eu", eu_upd, eu_ins), ("na", na_upd, na_ins)):
        brng = np.random.default_rng(1 if name == "eu" else 2)
        # Updates: the same reading re-processed — new heart_rate, hrv_rmssd, signal_quality, recorded_at.
        upd_rows = base.take(pa.array(upd))
        m = len(upd)
        hr_new = (upd_rows.column("heart_rate").to_numpy() + brng.integers(1, 6, m)).astype(np.int16)
        upd_rows = upd_rows.set_column(upd_rows.column_names.index("heart_rate"), "heart_rate", pa.array(hr_new))
        upd_rows = upd_rows.set_column(
            upd_rows.column_names.index("hrv_rmssd"), "hrv_rmssd", pa.array(np.abs(brng.normal(42, 15, m)))
        )
        upd_rows = upd_rows.set_column(
            upd_rows.column_names.index("signal_quality"),
            "signal_quality",
            pa.array(brng.uniform(0.5, 1.0, m).astype(np.float32)),
        )
        rec = upd_rows.column("ts").cast(pa.int64()).to_numpy() + 86_400_000 + brng.integers(0, 3_600_000, m)
        upd_rows = upd_rows.set_column(
            upd_rows.column_names.index("recorded_at"), "recorded_at", pa.array(rec, pa.timestamp("ms"))
        )
        ins_rows = _table(pat, p[ins], new_ts[ins], _values(pat, p[ins], new_ts[ins], brng))
        up = pa.concat_tables([upd_rows, ins_rows])
        up = up.take(pa.array(brng.permutation(len(up))))  # arrival order
        _write_ipc(up, os.path.join(dest, f"{name}.arrow"))
        # The reference for stored bytes: the changed rows alone as zstd Parquet (key-sorted, defaults).
        ref = os.path.join(dest, f"{name}-changed.parquet")
        pq.write_table(up.sort_by([(c, "ascending") for c in KEY]), ref, compression="zstd")
        sizes[name] = os.path.getsize(ref)
    full = os.path.join(dest, "base-zstd.parquet")
    pq.write_table(base.sort_by([(c, "ascending") for c in KEY]), full, compression="zstd")
    meta = {
        "version": DATA_VERSION,
        "rows": n,
        "overlap": overlap,
        "patients": n_pat,
        "upsert_rows": n_up,
        "updates": n_upd,
        "inserts": n_ins,
        "overlap_updates": ov_upd,
        "overlap_inserts": ov_ins,
        "changed_parquet_bytes": sizes,
        "base_parquet_bytes": os.path.getsize(full),
        "arrow_bytes": base.nbytes,
        "columns": base.schema.names,
        "schema": [f"{f.name}: {f.type}" for f in base.schema],
        "expected_final_rows": n + n_ins + n_ins - ov_ins,
        "generate_seconds": round(time.perf_counter() - t0, 1),
    }
    os.remove(full)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _load(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def _write_ipc(table: Any, path: str) -> None:
    import pyarrow as pa

    with pa.OSFile(path + ".tmp", "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table, max_chunksize=1 << 20)
    os.replace(path + ".tmp", path)


def _read_ipc(path: str) -> Any:
    import pyarrow as pa

    with pa.OSFile(path, "rb") as src:  # read into memory (not mapped): rows a user holds
        return pa.ipc.open_file(src).read_all()


# ----------------------------------------------------------------------------------------------------------
# Steps (each in a child process)
# ----------------------------------------------------------------------------------------------------------
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu_pressure() -> float | None:
    """Share of the last 10 s in which a runnable task waited for a CPU (/proc/pressure/cpu), in percent."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return None


class Meter:
    """Times one operation: wall, CPU (user+sys, all threads), load average; peak RSS since `start`."""

    def __init__(self) -> None:
        self.reset_ok = False

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            self.reset_ok = True
        except OSError:
            self.reset_ok = False
        self.rss_before = _status("VmRSS")
        self.load_before = os.getloadavg()[0]
        self.pressure_before = _cpu_pressure()
        ru = resource.getrusage(resource.RUSAGE_SELF)
        self.cpu0 = ru.ru_utime + ru.ru_stime
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "seconds": wall,
            "cpu_seconds": ru.ru_utime + ru.ru_stime - self.cpu0,
            "rss_before": self.rss_before,
            "peak_rss": _status("VmHWM"),
            "peak_is_step_only": self.reset_ok,
            "load1": [self.load_before, os.getloadavg()[0]],
            "cpu_pressure_avg10": [self.pressure_before, _cpu_pressure()],
        }


def _timed(fn: Any, repeat: int = 1) -> tuple[Any, dict[str, Any]]:
    """Run fn `repeat` times; the figures are the fastest run's (the one least disturbed by other processes on
    a shared machine), with the median beside them; the peak RSS is the maximum over runs."""
    runs, out = [], None
    m = Meter()
    for _ in range(repeat):
        out = None  # free the previous result first
        m.start()
        out = fn()
        runs.append(m.stop())
    return out, _best(runs)


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(runs, key=lambda r: r["seconds"])
    res = dict(ordered[0])
    res["peak_rss"] = max(r["peak_rss"] for r in runs)
    if len(runs) > 1:
        res["median_seconds"] = ordered[len(ordered) // 2]["seconds"]
        res["median_cpu_seconds"] = sorted(r["cpu_seconds"] for r in runs)[len(runs) // 2]
        res["all_seconds"] = [round(r["seconds"], 3) for r in runs]
        res["all_cpu_seconds"] = [round(r["cpu_seconds"], 3) for r in runs]
    return res


def step(name: str, out: str, repeat: int) -> dict[str, Any]:
    # Everything a table operation imports is imported before the clock starts (this environment may not write
    # bytecode caches, which makes a cold import of numpy + pyarrow cost seconds): the figures are the work.
    import dacflow.merge  # noqa: F401
    import dacflow.tables.diff  # noqa: F401
    import dacflow.tables.merge  # noqa: F401
    import numpy  # noqa: F401
    import pyarrow.acero  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    from dacflow import Repository

    inp = os.path.join(out, "input")
    meta = _load(os.path.join(inp, "meta.json"))
    url = os.path.join(out, "repo")
    res: dict[str, Any] = {}
    if name != "write" and name != "duckdb":
        repo = Repository.open(url)
        repo.table_object("v0", TABLE)  # warm: the pack indexes are loaded, as in any open repository
    if name == "write":
        rows = _read_ipc(os.path.join(inp, "base.arrow"))
        shutil.rmtree(url, ignore_errors=True)
        repo = Repository.init(url)
        cr, res = _timed(lambda: repo.write_table("main", TABLE, rows, key=KEY, mode="overwrite"))
        repo.tag("v0", "main")
        res["stats"] = cr.stats
        res["input_arrow_bytes"] = rows.nbytes
        t = repo.table_object("main", TABLE)
        res["fragments"] = len(t.base)
        res["stored_bytes"] = sum(f.size for f in t.base)
    elif name in ("read_v0", "read_main"):
        ref = "v0" if name == "read_v0" else "main"
        t, res = _timed(lambda: repo.read_table(ref, TABLE))
        res["rows"] = len(t)
        expected = meta["rows"] if ref == "v0" else meta["expected_final_rows"]
        res["expected_rows"] = expected
        res["ok"] = len(t) == expected
    elif name in ("upsert_eu", "upsert_na"):
        br = name.split("_")[1]
        rows = _read_ipc(os.path.join(inp, f"{br}.arrow"))
        repo.branch(br, "v0")
        before = _du(os.path.join(url))
        cr, res = _timed(lambda: repo.write_table(br, TABLE, rows, mode="upsert"))
        res["stats"] = cr.stats
        res["repo_growth_bytes"] = _du(url) - before
        res["changed_parquet_bytes"] = meta["changed_parquet_bytes"][br]
        res["ok"] = (cr.stats["inserted"], cr.stats["updated"]) == (meta["inserts"], meta["updates"])
    elif name == "diff":
        d, res = _timed(lambda: repo.diff("v0", "eu", table=TABLE), repeat)
        res["counts"] = d.counts
        res["ok"] = d.counts == {"inserted": meta["inserts"], "updated": meta["updates"], "deleted": 0}
    elif name == "checkout":
        for ref in ("v0", "eu"):
            dest = os.path.join(out, "co", ref)
            shutil.rmtree(dest, ignore_errors=True)
            _, r = _timed(lambda ref=ref, dest=dest: repo.checkout(ref, dest))
            res[ref] = r
        res["seconds"] = res["v0"]["seconds"] + res["eu"]["seconds"]
        res["peak_rss"] = max(res["v0"]["peak_rss"], res["eu"]["peak_rss"])
        res["cpu_seconds"] = res["v0"]["cpu_seconds"] + res["eu"]["cpu_seconds"]
    elif name == "duckdb":
        res = duckdb_diff(out, meta, repeat)
    elif name in ("merge_eu", "merge_na"):
        br = name.split("_")[1]
        runs = []
        if name == "merge_na":
            # The same three-way merge (base v0, ours = main's head, theirs = na) into throwaway branches at
            # main's head, repeat - 1 times, then the real one into main: the figures are the fastest of all.
            head = repo.resolve("main")
            for i in range(repeat - 1):
                scratch = f"bench-merge-{i}"
                if repo.head(scratch):
                    repo.delete_branch(scratch)
                repo.branch(scratch, head)
                _, r = _timed(lambda scratch=scratch: repo.merge(br, into=scratch, policy=POLICY))
                runs.append(r)
                repo.delete_branch(scratch)
        mr, r = _timed(lambda: repo.merge(br, into="main", policy=POLICY))
        res = _best([*runs, r])
        res["result"] = mr.to_json()
        res["conflicts"] = len(mr.conflict_list)
        res["conflict_cells_by_column"] = _by_column(mr.conflict_list)
        res["fast_forward"] = mr.fast_forward
    elif name == "export":
        d, res = _timed(lambda: repo.diff("v0", "main", table=TABLE))
        dest = os.path.join(out, "export")
        shutil.rmtree(dest, ignore_errors=True)
        paths, ex = _timed(lambda: d.export(dest))
        res["export"] = ex
        res["peak_rss"] = max(res["peak_rss"], ex["peak_rss"])
        res["counts"] = d.counts
        res["export_bytes"] = sum(os.path.getsize(p) for p in paths.values())
        want_ins = meta["inserts"] * 2 - meta["overlap_inserts"]
        want_upd = meta["updates"] * 2 - meta["overlap_updates"]
        res["ok"] = d.counts == {"inserted": want_ins, "updated": want_upd, "deleted": 0}
    else:
        raise SystemExit(f"unknown step {name}")
    return res


def _by_column(conflicts: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in conflicts:
        out[c["column"]] = out.get(c["column"], 0) + 1
    return out


def _du(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def _fetch(cur: Any) -> Any:
    """The result as an Arrow table (the method's name changed across DuckDB versions)."""
    for name in ("to_arrow_table", "fetch_arrow_table"):
        if hasattr(cur, name):
            return getattr(cur, name)()
    return cur.arrow()


def duckdb_diff(out: str, meta: dict[str, Any], repeat: int) -> dict[str, Any]:
    import warnings

    import duckdb

    warnings.filterwarnings("ignore", message="Arrow output on a DB-API result")
    values = [c for c in meta["columns"] if c not in KEY]
    old = os.path.join(out, "co", "v0", TABLE, "*.parquet")
    new = os.path.join(out, "co", "eu", TABLE, "*.parquet")
    on = " AND ".join(f"o.{k} = n.{k}" for k in KEY)
    distinct = " OR ".join(f"o.{v} IS DISTINCT FROM n.{v}" for v in values)
    keys = ", ".join(f"coalesce(n.{k}, o.{k}) AS {k}" for k in KEY)
    cols = ", ".join([f"o.{v} AS old_{v}" for v in values] + [f"n.{v} AS new_{v}" for v in values])
    sql = (
        f"SELECT CASE WHEN o.{KEY[0]} IS NULL THEN 'inserted' WHEN n.{KEY[0]} IS NULL THEN 'deleted' "
        f"ELSE 'updated' END AS change, {keys}, {cols} "
        f"FROM read_parquet('{old}') o FULL OUTER JOIN read_parquet('{new}') n ON {on} "
        f"WHERE o.{KEY[0]} IS NULL OR n.{KEY[0]} IS NULL OR {distinct}"
    )
    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    result, res = _timed(lambda: _fetch(con.execute(sql)), repeat)
    import pyarrow.compute as pc

    counts = {k: 0 for k in ("inserted", "updated", "deleted")}
    for row in pc.value_counts(result.column("change")).to_pylist():
        counts[row["values"]] = row["counts"]
    res.update(
        {
            "threads": threads,
            "duckdb_version": duckdb.__version__,
            "counts": counts,
            "sql": sql,
            "ok": counts == {"inserted": meta["inserts"], "updated": meta["updates"], "deleted": 0},
            "files": [len(os.listdir(os.path.dirname(p))) - 1 for p in (old, new)],
        }
    )
    return res


# ----------------------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------------------
STEPS = [
    "write",
    "read_v0",
    "upsert_eu",
    "upsert_na",
    "diff",
    "checkout",
    "duckdb",
    "merge_eu",
    "merge_na",
    "export",
    "read_main",
]


def run_child(name: str, out: str, repeat: int) -> dict[str, Any]:
    path = os.path.join(out, "steps", f"{name}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.remove(path)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--step", name, "--out", out, "--repeat", str(repeat)]
    )
    if proc.returncode != 0:
        raise SystemExit(f"step {name} failed with exit code {proc.returncode}")
    res = _load(path)
    res["process_seconds"] = time.perf_counter() - t0
    return res


def machine() -> dict[str, Any]:
    import psutil

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / GiB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_at_start": os.getloadavg(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--out", default="/tmp/dacflow-table-bench")
    ap.add_argument("--overlap", type=int, default=None, help="keys written on both branches (default rows/20000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the diff and of the DuckDB query (median)")
    ap.add_argument("--only", default="", help="comma-separated steps to run (the repository must exist)")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    if args.step:
        res = step(args.step, out, args.repeat)
        with open(os.path.join(out, "steps", f"{args.step}.json"), "w") as f:
            json.dump(res, f, indent=1, default=str)
        return

    import numpy as np  # noqa: F401 - fail early if missing
    import pyarrow as pa

    overlap = args.overlap if args.overlap is not None else max(10, args.rows // 20000)
    os.makedirs(out, exist_ok=True)
    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "pyarrow": pa.__version__,
        "rows_requested": args.rows,
    }
    print(f"generating {args.rows:,} rows (cached in {out}/input) ...", flush=True)
    meta = generate(args.rows, overlap, os.path.join(out, "input"))
    print(
        f"  {meta['rows']:,} rows, {meta['patients']:,} patients, {meta['arrow_bytes'] / MiB:,.0f} MiB in "
        f"Arrow, {meta['base_parquet_bytes'] / MiB:,.0f} MiB as zstd Parquet; upserts of "
        f"{meta['upsert_rows']:,} rows "
        f"({meta['updates']:,} updates + {meta['inserts']:,} inserts), {overlap} keys on both branches",
        flush=True,
    )
    steps = [s for s in args.only.split(",") if s] or STEPS
    if not args.only:
        shutil.rmtree(os.path.join(out, "repo"), ignore_errors=True)
        shutil.rmtree(os.path.join(out, "co"), ignore_errors=True)
    results: dict[str, Any] = {}
    prev = os.path.join(out, "results.json")
    if args.only and os.path.exists(prev):
        results = _load(prev).get("steps", {})
    for name in steps:
        print(f"step {name} ...", flush=True)
        results[name] = r = run_child(name, out, args.repeat)
        print(
            f"  {r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s CPU, "
            f"peak RSS {r['peak_rss'] / MiB:,.0f} MiB, "
            f"load {r.get('load1', ['?'])[0]}" + (f", ok={r['ok']}" if "ok" in r else ""),
            flush=True,
        )
    report = summarize(info, meta, results)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print_report(report)
    print(f"\nwrote {os.path.join(out, 'results.json')}")


def summarize(info: dict[str, Any], meta: dict[str, Any], steps: dict[str, Any]) -> dict[str, Any]:
    duck = steps["duckdb"]["seconds"]
    up = {
        br: steps[f"upsert_{br}"]["stats"]["bytes_new"] / steps[f"upsert_{br}"]["changed_parquet_bytes"]
        for br in ("eu", "na")
    }
    peak = max(s["peak_rss"] for s in steps.values())
    ratios = {
        "diff_vs_duckdb": steps["diff"]["seconds"] / duck,
        "merge_vs_duckdb": steps["merge_na"]["seconds"] / duck,
        "upsert_bytes_ratio": max(up.values()),
        "peak_rss_gib": peak / GiB,
    }
    d, m, q = steps["diff"], steps["merge_na"], steps["duckdb"]
    other = {  # the same ratios from CPU time (user+sys, all threads) and from median wall times
        "diff_vs_duckdb_cpu": d["cpu_seconds"] / q["cpu_seconds"],
        "merge_vs_duckdb_cpu": m["cpu_seconds"] / q["cpu_seconds"],
        "diff_vs_duckdb_median": d.get("median_seconds", d["seconds"]) / q.get("median_seconds", duck),
        "merge_vs_duckdb_median": m.get("median_seconds", m["seconds"]) / q.get("median_seconds", duck),
        "peak_rss_step": max(steps, key=lambda k: steps[k]["peak_rss"]),
        "peak_rss_dacflow_gib": max(s["peak_rss"] for k, s in steps.items() if k != "duckdb") / GiB,
    }
    verdict = {k: ratios[k] < v if k == "peak_rss_gib" else ratios[k] <= v for k, v in TARGETS.items()}
    checks = {k: s["ok"] for k, s in steps.items() if "ok" in s}
    info["machine"]["load_at_end"] = os.getloadavg()
    return {
        "info": info,
        "data": meta,
        "steps": steps,
        "ratios": ratios,
        "other_ratios": other,
        "upsert_bytes_ratio_by_branch": up,
        "targets": TARGETS,
        "pass": verdict,
        "checks": checks,
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"\n{'step':<11} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13} {'load1':>6} {'psi%':>5}  notes")
    for name, s in r["steps"].items():
        notes = []
        if "stats" in s:
            st = s["stats"]
            notes.append(
                f"+{st['inserted']} ~{st['updated']} bytes_new={st['bytes_new']:,} "
                f"frags new/reused={st['fragments_new']}/{st['fragments_reused']}"
            )
        if "counts" in s:
            notes.append(f"counts={s['counts']}")
        if "all_seconds" in s:
            notes.append(f"runs={s['all_seconds']}")
        if "conflicts" in s:
            notes.append(f"conflicts={s['conflicts']} ff={s['fast_forward']}")
        if "ok" in s:
            notes.append(f"ok={s['ok']}")
        load = s.get("load1", ["", ""])[0]
        load = f"{load:.1f}" if isinstance(load, float) else ""
        psi = (s.get("cpu_pressure_avg10") or [None])[0]
        psi = f"{psi:.0f}" if isinstance(psi, float) else ""
        print(
            f"{name:<11} {s['seconds']:>8.2f} {s['cpu_seconds']:>8.2f} {s['peak_rss'] / MiB:>13,.0f} "
            f"{load:>6} {psi:>5}  " + "; ".join(notes)
        )
    print("\ntarget                     value   limit   pass")
    for k, v in r["ratios"].items():
        print(f"{k:<22} {v:>9.3f} {r['targets'][k]:>7}   {'PASS' if r['pass'][k] else 'FAIL'}")
    for k, v in r["other_ratios"].items():
        print(f"  ({k}: {v:.3f})" if isinstance(v, float) else f"  ({k}: {v})")
    bad = [k for k, ok in r["checks"].items() if not ok]
    print("correctness checks: " + ("all ok" if not bad else "FAILED: " + ", ".join(bad)))


if __name__ == "__main__":
    main()
