"""The heart-monitoring story as Flyte workflows, on dacflow snapshots.

Edge regions record heart-monitor readings — North America on S3 (`na-aws`) and on GCS (`na-gcp`), Europe on Azure
(`eu-azure`) — each as a batch written to table `vitals` on its own branch of its own store. Each region pushes
its branch to the hub (only the delta travels) and the hub merges the regions into `main`. Doctors correct
readings on a `doctors` branch; a second batch re-sends recalibrated values for some of the same readings, so the
merge meets conflicts and resolves them with `latest:updated_at` (the conflict report says which). A sensor sees
`main` move past the data the model was trained on, and the model retrains on only the rows it has not seen; its
commit on `models` records the data commit it was trained on and the workflow and task that made it.

Workflows (each runs locally with no cluster):

    pyflyte run example_dags/flyte_heart_pipeline.py heart_pipeline                      # temp local stores
    pyflyte run example_dags/flyte_heart_pipeline.py heart_pipeline --hub /tmp/hub \\
        --na_aws s3://edge-na/heart --na_gcp gs://edge-na-gcp/heart --eu_azure az://edge-eu/heart
    pyflyte run example_dags/flyte_heart_pipeline.py edge_ingestion --hub /tmp/hub --batch 1 ...
    python example_dags/flyte_heart_pipeline.py /tmp/demo                                 # plain Python

`vitals_summary` is cached on the snapshot's content: summarising a region's batch at the edge and again at the
hub (another store, same content) runs its body once.
"""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from dataclasses import replace
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dacflow.lineage import code_fingerprint
from dacflow.providers.flyte import (
    Snapshot,
    SnapshotSensor,
    flyte_lineage,
    head_task,
    init_task,
    merge_task,
    push_task,
    write_table_task,
)
from dacflow.retrain import commit_model, last_trained_on, training_delta
from flytekit import Cache, task, workflow

TABLE = "vitals"
KEY = ["patient_id", "ts"]
MODELS = "models"
PIPELINE = "heart_pipeline"
T0 = 1_763_700_000  # readings start here (epoch seconds)
EDGE_TIME, RECALIBRATED_TIME, DOCTOR_TIME = 1_000, 2_000, 3_000  # updated_at of each kind of write


def _rng(region: str, batch: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, batch, zlib.crc32(region.encode())])


def _labels(heart_rate: np.ndarray, spo2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    risk = (heart_rate - 100) / 15 + (94 - spo2) / 2 + rng.normal(0, 0.5, len(heart_rate))
    return (risk > 0.5).astype(np.int64)


# -- edge --------------------------------------------------------------------------------------------------------
def _batch(region: str, batch: int, rows: int, seed: int) -> pa.Table:
    """The new readings of one batch: `rows` in batch 1, half as many in each later one."""
    rng = _rng(region, batch, seed)
    start = 0 if batch == 1 else rows + (batch - 2) * (rows // 2)
    n = rows if batch == 1 else rows // 2
    i = np.arange(start, start + n)
    hr, spo2 = rng.integers(50, 170, n), rng.integers(86, 101, n)
    return pa.table(
        {
            "patient_id": [f"{region}-{p:03d}" for p in i % 40],
            "ts": T0 + i,
            "region": [region] * n,
            "heart_rate": hr,
            "spo2": spo2,
            "label": _labels(hr, spo2, rng),
            "updated_at": np.full(n, EDGE_TIME),
        }
    )


@task
def generate_readings(region: str, batch: int, rows: int, seed: int) -> pa.Table:
    """Synthetic readings of one region's batch. Later batches also re-send the first tenth of batch 1 with the
    heart rate recalibrated (+3 bpm) and a newer `updated_at`."""
    new = _batch(region, batch, rows, seed)
    if batch == 1:
        return new
    k = max(1, rows // 10)
    old = _batch(region, 1, rows, seed).slice(0, k)
    recalibrated = old.set_column(
        old.schema.get_field_index("heart_rate"), "heart_rate", pc.add(old.column("heart_rate"), 3)
    ).set_column(old.schema.get_field_index("updated_at"), "updated_at", pa.array(np.full(k, RECALIBRATED_TIME)))
    return pa.concat_tables([recalibrated, new])


@task(cache=Cache(version="1"))
def vitals_summary(data: Snapshot) -> dict:
    """Readings, patients and mean heart rate per region; cached on the snapshot's content, not its store."""
    rows = data.read_table(TABLE)
    out = {}
    for region in sorted(set(rows.column("region").to_pylist())):
        part = rows.filter(pc.equal(rows.column("region"), region))
        out[region] = {
            "readings": len(part),
            "patients": len(set(part.column("patient_id").to_pylist())),
            "mean_heart_rate": round(float(pc.mean(part.column("heart_rate")).as_py()), 2),
        }
    return out


class Region(NamedTuple):
    edge: Snapshot
    hub: Snapshot
    summary: dict
    pushed: dict


@workflow
def ingest_region(
    edge: str, hub: str, region: str, branch: str, batch: int = 1, rows: int = 300, seed: int = 7
) -> Region:
    """One region: write a batch on `branch` at the edge, summarise it, push the branch to the hub."""
    readings = generate_readings(region=region, batch=batch, rows=rows, seed=seed)
    snap = write_table_task(url=edge, branch=branch, table=TABLE, rows=readings, key=KEY, mode="upsert")
    summary = vitals_summary(data=snap)
    pushed = push_task(snapshot=snap, dst=hub)
    vitals_summary(data=pushed.snapshot)  # same content at the hub: a cache hit
    return Region(edge=snap, hub=pushed.snapshot, summary=summary, pushed=pushed.report)


class Ingested(NamedTuple):
    na_aws: Snapshot
    na_gcp: Snapshot
    eu_azure: Snapshot
    bytes_pushed: int


@task
def bytes_sent(na_aws: dict, na_gcp: dict, eu_azure: dict) -> int:
    """Bytes the three pushes sent to the hub."""
    return int(sum(r["bytes_sent"] for r in (na_aws, na_gcp, eu_azure)))


@workflow
def edge_ingestion(
    hub: str, na_aws: str, na_gcp: str, eu_azure: str, batch: int = 1, rows: int = 300, seed: int = 7
) -> Ingested:
    """Batch `batch` in all three regions, each on its own cloud, pushed to the hub."""
    a = ingest_region(edge=na_aws, hub=hub, region="na-aws", branch="edge-na-aws", batch=batch, rows=rows, seed=seed)
    g = ingest_region(edge=na_gcp, hub=hub, region="na-gcp", branch="edge-na-gcp", batch=batch, rows=rows, seed=seed)
    e = ingest_region(
        edge=eu_azure, hub=hub, region="eu-azure", branch="edge-eu-azure", batch=batch, rows=rows, seed=seed
    )
    moved = bytes_sent(na_aws=a.pushed, na_gcp=g.pushed, eu_azure=e.pushed)
    return Ingested(na_aws=a.hub, na_gcp=g.hub, eu_azure=e.hub, bytes_pushed=moved)


# -- hub ---------------------------------------------------------------------------------------------------------
class MergeReport(NamedTuple):
    main: Snapshot
    report: dict


@task
def merge_summary(na_aws: dict, na_gcp: dict, eu_azure: dict) -> dict:
    """One report of three merges: per region the commit, counts and the conflicts met and how they resolved."""
    per = {"na-aws": na_aws, "na-gcp": na_gcp, "eu-azure": eu_azure}
    return {
        "conflicts": sum(r["conflicts"] for r in per.values()),
        "unresolved": sum(r["unresolved"] for r in per.values()),
        "regions": {
            k: {n: r[n] for n in ("commit", "fast_forward", "conflicts", "rows_changed")} for k, r in per.items()
        },
        "conflict_list": [c for r in per.values() for c in r["conflict_list"]],
    }


@workflow
def merge_regions(
    na_aws: Snapshot, na_gcp: Snapshot, eu_azure: Snapshot, policy: str = "latest:updated_at"
) -> MergeReport:
    """Merge the three region branches at the hub into `main`, one after another, with a conflict report."""
    a = merge_task(source=na_aws, into="main", policy=policy)
    g = merge_task(source=na_gcp, into="main", policy=policy)
    e = merge_task(source=eu_azure, into="main", policy=policy)
    a.snapshot >> g.snapshot
    g.snapshot >> e.snapshot
    return MergeReport(main=e.snapshot, report=merge_summary(na_aws=a.report, na_gcp=g.report, eu_azure=e.report))


@task
def doctor_corrections(data: Snapshot) -> pa.Table:
    """Doctors review the first tenth of na-aws readings: they correct heart rate (-2 bpm) and flip the label."""
    rows = data.read_table(TABLE)
    mine = rows.filter(pc.equal(rows.column("region"), "na-aws")).sort_by([("ts", "ascending")])
    k = max(1, len(mine) // 10)
    mine = mine.slice(0, k)
    return pa.table(
        {
            "patient_id": mine.column("patient_id"),
            "ts": mine.column("ts"),
            "heart_rate": pc.subtract(mine.column("heart_rate"), 2),
            "label": pc.subtract(1, mine.column("label")),
            "updated_at": pa.array(np.full(k, DOCTOR_TIME)),
        }
    )


@workflow
def review(main: Snapshot) -> Snapshot:
    """Doctors' corrections on branch `doctors` (from `main`), merged back into `main`."""
    corrections = doctor_corrections(data=main)
    doctors = write_table_task(
        url=main.url, branch="doctors", table=TABLE, rows=corrections, key=KEY, mode="upsert", create=False
    )
    return merge_task(source=doctors, into="main", policy="latest:updated_at").snapshot


# -- model -------------------------------------------------------------------------------------------------------
class Trained(NamedTuple):
    model: Snapshot
    trained_on: str
    rows: int
    full: bool


def _fit(weights: dict | None, x: np.ndarray, y: np.ndarray, steps: int = 300, lr: float = 0.5) -> dict:
    """Logistic regression by gradient descent, continuing from `weights` (differential retraining)."""
    if weights is None:
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
        w, b, seen = np.zeros(x.shape[1]), 0.0, 0
    else:
        mean, std = np.array(weights["mean"]), np.array(weights["std"])
        w, b, seen = np.array(weights["w"]), float(weights["b"]), int(weights["rows_seen"])
    z = (x - mean) / std
    for _ in range(steps if len(y) else 0):
        p = 1 / (1 + np.exp(-(z @ w + b)))
        w -= lr * z.T @ (p - y) / len(y)
        b -= lr * float(np.mean(p - y))
    acc = float(np.mean(((z @ w + b) > 0) == y)) if len(y) else None
    return {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "w": w.tolist(),
        "b": b,
        "rows_seen": seen + len(y),
        "accuracy_on_batch": acc,
    }


@task
def train_model(data: Snapshot, pipeline: str = PIPELINE) -> Trained:
    """Train on the rows of `vitals` the last model on `models` has not seen (all rows the first time), and commit
    the model with its lineage: the data commit, and the workflow and task that trained it."""
    repo = data.repo()
    since = last_trained_on(repo, MODELS, TABLE)
    delta = training_delta(repo, TABLE, since, head=data.commit)
    previous = None
    if since is not None:
        previous = json.loads(repo.read_file(MODELS, "model.json"))
        if since == data.commit:  # nothing new: keep the model
            head = Snapshot.of(repo, MODELS, path="model.json")  # its branch is `models`
            return Trained(model=head, trained_on=since, rows=0, full=False)
    rows = delta.rows
    x = np.column_stack([rows.column("heart_rate").to_numpy(), rows.column("spo2").to_numpy()]).astype(float)
    y = rows.column("label").to_numpy().astype(float)
    weights = _fit(previous, x, y)
    lineage = flyte_lineage("train_model", pipeline=pipeline, inputs=[data.commit], code=code_fingerprint(_fit))
    files = {"model.json": json.dumps(weights, indent=1).encode()}
    result = commit_model(repo, MODELS, files, delta, meta={"dacflow.lineage": lineage})
    model = replace(Snapshot.of(repo, result.commit, path="model.json"), branch=MODELS)
    return Trained(model=model, trained_on=delta.data_commit, rows=len(rows), full=delta.full)


#: Re-running the story on the same stores with the same seed brings nothing new, so `main` never moves and the
#: sensor gives up after two minutes with a one-line reason: use fresh stores or another --seed.
main_moved = SnapshotSensor(name="main_moved", timeout=120, poll_interval=1)


@workflow
def retrain(hub: str, after: str, pipeline: str = PIPELINE) -> Trained:
    """Wait for `main` to move past commit `after` (the last model's data), then retrain on the new rows only."""
    moved = main_moved(url=hub, branch="main", after=after)
    head = head_task(url=hub, branch="main", table=TABLE)
    moved >> head
    return train_model(data=head, pipeline=pipeline)


# -- the whole story ---------------------------------------------------------------------------------------------
class Stores(NamedTuple):
    hub: str
    na_aws: str
    na_gcp: str
    eu_azure: str


@task
def demo_stores(hub: str, na_aws: str, na_gcp: str, eu_azure: str) -> Stores:
    """The store URLs to use: each empty one becomes a fresh local directory."""
    base = ""
    urls = []
    for name, url in (("hub", hub), ("na-aws", na_aws), ("na-gcp", na_gcp), ("eu-azure", eu_azure)):
        if not url:
            base = base or tempfile.mkdtemp(prefix="dacflow-flyte-demo-")
            url = os.path.join(base, name)
        urls.append(url)
    return Stores(*urls)


@task
def story_report(first_rows: int, first_trained_on: str, model: Snapshot, model_rows: int, merges: dict) -> dict:
    """What happened: conflicts met and resolved, rows each model trained on, the new model's lineage."""
    meta = model.repo().get_commit(model.commit).meta
    return {
        "conflicts": merges["conflicts"],
        "unresolved": merges["unresolved"],
        "conflict_columns": sorted({c["column"] for c in merges["conflict_list"]}),
        "first_model": {"rows": first_rows, "trained_on": first_trained_on},
        "model": {
            "commit": model.commit,
            "rows": model_rows,
            "trained_on": meta["dacflow.trained_on"],
            "lineage": meta.get("dacflow.lineage", {}),
        },
    }


class Story(NamedTuple):
    model: Snapshot
    report: dict


@workflow
def heart_pipeline(
    hub: str = "", na_aws: str = "", na_gcp: str = "", eu_azure: str = "", rows: int = 300, seed: int = 7
) -> Story:
    """Edge ingestion on three clouds → merge at the hub → doctors' review → second batch with conflicts →
    sensor → differential retraining → model commit with lineage."""
    s = demo_stores(hub=hub, na_aws=na_aws, na_gcp=na_gcp, eu_azure=eu_azure)
    hub_url = init_task(url=s.hub)
    one = edge_ingestion(
        hub=hub_url, na_aws=s.na_aws, na_gcp=s.na_gcp, eu_azure=s.eu_azure, batch=1, rows=rows, seed=seed
    )
    merged1 = merge_regions(na_aws=one.na_aws, na_gcp=one.na_gcp, eu_azure=one.eu_azure, policy="latest:updated_at")
    first = train_model(data=merged1.main)
    reviewed = review(main=merged1.main)
    two = edge_ingestion(
        hub=hub_url, na_aws=s.na_aws, na_gcp=s.na_gcp, eu_azure=s.eu_azure, batch=2, rows=rows, seed=seed
    )
    merged2 = merge_regions(na_aws=two.na_aws, na_gcp=two.na_gcp, eu_azure=two.eu_azure, policy="latest:updated_at")
    first.model >> reviewed
    reviewed >> merged2.main
    second = retrain(hub=hub_url, after=first.trained_on)
    merged2.main >> second.model
    report = story_report(
        first_rows=first.rows,
        first_trained_on=first.trained_on,
        model=second.model,
        model_rows=second.rows,
        merges=merged2.report,
    )
    return Story(model=second.model, report=report)


if __name__ == "__main__":
    import sys

    base = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="dacflow-flyte-demo-")
    story = heart_pipeline(**{k: os.path.join(base, k) for k in ("hub", "na_aws", "na_gcp", "eu_azure")})
    print(json.dumps(story.report, indent=2))
