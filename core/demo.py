"""The heart-monitoring story end to end, on the embedded local store or on cloud emulators (`dacflow demo`).

Three edge regions (North America on AWS and Google Cloud, Europe on Azure) snapshot batches of readings; only
the delta travels to the hub; regions and doctors' corrections merge into `main` with a conflict report; a model
is retrained incrementally on only the new rows and compared with a full retrain; the model is published and a
subscriber in another region pulls each new version. Every step runs through the step cache, so a second run
on the same directory skips what did not change. Returns plain data for the CLI's table and chart.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import heartdata as hd
from .errors import RepositoryNotFoundError, UsageError
from .repository import Repository
from .retrain import commit_model, last_trained_on
from .stepcache import cached_step
from .subscriptions import publish, subscribe, subscriptions, sync
from .transfer import open_or_init_like, transfer

log = logging.getLogger(__name__)

CLOUDS = ("local", "emulators")
POLICY = "theirs"  # the doctor's value wins a cell conflict
MODELS = "models"
HOLDOUT_ROUND = 999


@dataclass
class Step:
    """One line of the demo's summary: what moved, compared with a full copy, and whether the cache skipped it."""

    name: str
    round: int
    rows: int = 0
    bytes_moved: int = 0
    full_copy_bytes: int = 0
    seconds: float = 0.0
    cached: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "round": self.round,
            "rows": self.rows,
            "bytes_moved": self.bytes_moved,
            "full_copy_bytes": self.full_copy_bytes,
            "seconds": round(self.seconds, 3),
            "cached": self.cached,
            "note": self.note,
        }


@dataclass
class DemoReport:
    """Everything the demo did: its stores, each step, and the model comparison."""

    root: str
    clouds: str
    urls: dict[str, str]
    steps: list[Step] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "clouds": self.clouds,
            "urls": self.urls,
            "steps": [s.to_json() for s in self.steps],
            "model": self.model,
            "seconds": round(self.seconds, 3),
            "cache_hits": sum(s.cached for s in self.steps),
        }


def _need_sklearn() -> Any:
    try:
        from sklearn.linear_model import SGDClassifier
    except ImportError:
        raise UsageError("the demo's model needs scikit-learn: pip install 'dacflow[demo]'") from None
    return SGDClassifier


@contextmanager
def _clouds(kind: str, root: str) -> Iterator[dict[str, str]]:
    """Store URLs for the story: local directories, or buckets on emulators started for the run."""
    if kind == "local":
        yield {
            **{f"edge/{r}": os.path.join(root, "edges", r, "repo") for r in hd.REGIONS},
            "hub": os.path.join(root, "hub"),
            "subscriber": os.path.join(root, "subscriber-eu-analytics"),
        }
        return
    from .testing.emulators import azurite_connection_string, start_azurite, start_fake_gcs, start_moto

    started = []
    saved = dict(os.environ)
    try:
        s3, gcs, azure = (start() for start in (start_moto, start_fake_gcs, start_azurite))
        started = [s3, gcs, azure]
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": s3.endpoint,
                "AWS_ACCESS_KEY_ID": "demo",
                "AWS_SECRET_ACCESS_KEY": "demo",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true",
                "STORAGE_EMULATOR_HOST": gcs.endpoint,
                "AZURE_STORAGE_CONNECTION_STRING": azurite_connection_string(azure.port),
            }
        )
        yield {
            "edge/na-aws": "s3://dacflow-demo-na-aws/repo",
            "edge/na-gcp": "gs://dacflow-demo-na-gcp/repo",
            "edge/eu-azure": "az://dacflow-demo-eu-azure/repo",
            "hub": "s3://dacflow-demo-hub/heart",
            "subscriber": "az://dacflow-demo-eu-analytics/heart",
        }
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for emulator in started:
            emulator.stop()


def _open_or_init(url: str) -> Repository:
    try:
        return Repository.open(url)
    except RepositoryNotFoundError:  # the first run creates it
        return Repository.init(url)


class Story:
    """The demo's state while it runs: repositories, landing areas, the report and a progress callback."""

    def __init__(self, root: str, urls: dict[str, str], rows: int, say: Callable[[str], None]) -> None:
        self.root, self.urls, self.rows, self.say = root, urls, rows, say
        self.hub = _open_or_init(urls["hub"])
        self.edges = {r: _open_or_init(urls[f"edge/{r}"]) for r in hd.REGIONS}
        self.steps: list[Step] = []

    def landing(self, region: str) -> Path:
        path = Path(self.root, "edges", region, "landing")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record(self, step: Step, t0: float) -> Step:
        step.seconds = time.perf_counter() - t0
        self.steps.append(step)
        self.say(f"{step.name} (round {step.round}){' — cached' if step.cached else ''}")
        return step

    # -- the steps ---------------------------------------------------------------------------------------------
    def ingest(self, region: str, round_: int) -> str:
        """Land a batch on the edge and snapshot the landing area as the `readings` table of `region/<name>`."""
        t0 = time.perf_counter()
        batch = self.landing(region) / f"batch-{round_:04d}.parquet"
        table = hd.readings(region, round_, self.rows)
        if not batch.exists():
            batch.write_bytes(hd.to_parquet(table))
        repo = self.edges[region]
        full = sum(p.stat().st_size for p in self.landing(region).glob("batch-*.parquet"))
        step = Step(f"ingest {region}", round_, rows=table.num_rows, full_copy_bytes=full)
        params = {"region": region}
        with cached_step(repo, "demo.ingest", inputs={"batch": batch}, params=params, code=Story.ingest) as s:
            if s.hit:
                step.cached = True
            else:
                result = repo.snapshot(
                    str(self.landing(region)), f"region/{region}", f"{region} batch {round_}", s.meta,
                    tables={hd.TABLE: ("batch-*.parquet", hd.KEY)}, dedupe="last",
                )  # fmt: skip
                step.bytes_moved = int(result.stats.get("bytes_stored", 0))
                s.done(result.commit)
        self.record(step, t0)
        return str(s.output)

    def ship(self, region: str, round_: int, commit: str) -> None:
        """Send the region's branch to the hub: only the objects the hub lacks travel."""
        t0 = time.perf_counter()
        edge = self.edges[region]
        report = transfer(edge, self.hub, [f"region/{region}"])
        step = Step(f"ship {region} → hub", round_, bytes_moved=report.bytes_sent)
        step.full_copy_bytes = _full_copy_bytes(edge, [f"region/{region}"])
        step.note = "up to date" if not report.bytes_sent else f"{report.objects_sent} objects"
        self.record(step, t0)

    def corrections(self, round_: int) -> str | None:
        """The doctors' corrections of this round, on `corrections/round-N` from main as it was."""
        if round_ < 2:
            return None
        t0 = time.perf_counter()
        branch = f"corrections/round-{round_}"
        rows = sum(hd.corrections(r, round_, self.rows).num_rows for r in hd.REGIONS)
        step = Step("doctors' corrections", round_, rows=rows)
        with cached_step(
            self.hub, "demo.corrections", params={"round": round_, "rows": self.rows}, code=Story.corrections
        ) as s:
            if s.hit:
                step.cached = True
            else:
                import pyarrow as pa

                fixes = pa.concat_tables([hd.corrections(r, round_, self.rows) for r in hd.REGIONS])
                self.hub.branch(branch, "main")
                result = self.hub.write_table(branch, hd.TABLE, fixes, hd.KEY, "upsert", meta=s.meta)
                step.bytes_moved = int(result.stats.get("bytes_new", 0))
                s.done(result.commit)
        self.record(step, t0)
        return str(s.output)

    def merge(self, round_: int, regions: dict[str, str], fixes: str | None) -> str:
        """Merge each region's snapshot, then the corrections, into main; report the conflicts."""
        t0 = time.perf_counter()
        inputs: dict[str, Any] = {**regions, **({"corrections": fixes} if fixes else {})}
        step = Step("merge into main", round_)
        with cached_step(self.hub, "demo.merge", inputs=inputs, params={"policy": POLICY}, code=Story.merge) as s:
            if s.hit:
                step.cached = True
                step.note = str((s.result or {}).get("note", ""))
            else:
                conflicts, changed = 0, 0
                for name, commit in inputs.items():
                    result = self.hub.merge(commit, "main", POLICY, message=f"merge {name}", meta=s.meta)
                    conflicts += len(result.conflict_list)
                    changed += sum(result.tables.values())
                step.rows = changed
                step.note = f"{conflicts} conflicts, doctor wins" if conflicts else "no conflicts"
                s.done(self.hub.resolve("main"), {"note": step.note, "rows": changed})
        if s.hit:
            step.rows = int((s.result or {}).get("rows", 0))
        self.record(step, t0)
        return str(s.output)

    def retrain(self, round_: int, data: str) -> dict[str, Any]:
        """Train incrementally on only the rows new since the model's data commit; compare a full retrain."""
        sgd = _need_sklearn()
        holdout_x, holdout_y = hd.features(_holdout(self.rows))
        t0 = time.perf_counter()
        step = Step("retrain (new rows only)", round_)
        params = {"model": "sgd"}
        with cached_step(self.hub, "demo.retrain", inputs={"data": data}, params=params, code=Story.retrain) as s:
            if s.hit:
                step.cached = True
                metrics = dict(s.result or {})
            else:
                since = last_trained_on(self.hub, MODELS, hd.TABLE)
                delta = self.hub.training_delta(hd.TABLE, since, head=data)
                x, y = hd.features(delta.rows)
                model = pickle.loads(self.hub.read_file(MODELS, "model.pkl")) if since else sgd(loss="log_loss")
                t_fit = time.perf_counter()
                model.partial_fit(_scale(x), y, classes=[0, 1])
                fit_seconds = time.perf_counter() - t_fit
                accuracy = float(model.score(_scale(holdout_x), holdout_y))
                buf = io.BytesIO()
                pickle.dump(model, buf)
                result = commit_model(self.hub, MODELS, {"model.pkl": buf.getvalue()}, delta, meta=s.meta)
                metrics = {"rows": len(delta.rows), "fit_seconds": fit_seconds, "accuracy": accuracy}
                s.done(result.commit, metrics)
        step.rows = int(metrics.get("rows", 0))
        step.note = f"accuracy {metrics.get('accuracy', 0):.3f}"
        self.record(step, t0)

        t0 = time.perf_counter()
        full = Step("full retrain (for comparison)", round_)
        with cached_step(
            self.hub, "demo.full-retrain", inputs={"data": data}, params={"model": "sgd"}, code=Story.retrain
        ) as s:
            if s.hit:
                full.cached = True
                baseline = dict(s.result or {})
            else:
                rows = self.hub.read_table(data, hd.TABLE)
                x, y = hd.features(rows)
                t_fit = time.perf_counter()
                model = sgd(loss="log_loss", max_iter=20, tol=None).fit(_scale(x), y)
                fit_seconds = time.perf_counter() - t_fit
                baseline = {"rows": rows.num_rows, "fit_seconds": fit_seconds,
                            "accuracy": float(model.score(_scale(holdout_x), holdout_y))}  # fmt: skip
                s.done(data, baseline)
        full.rows = int(baseline.get("rows", 0))
        full.note = f"accuracy {baseline.get('accuracy', 0):.3f}"
        self.record(full, t0)
        return {"round": round_, "incremental": metrics, "full": baseline}

    def subscriber(self, round_: int) -> None:
        """Publish main and the model; the EU analytics team's store follows both and pulls only the delta."""
        t0 = time.perf_counter()
        for branch in ("main", MODELS):
            publish(self.hub, branch, "heart readings and the arrhythmia model")
        sub = open_or_init_like(self.hub, self.urls["subscriber"])
        have = subscriptions(sub)
        for branch in ("main", MODELS):
            if branch not in have:
                subscribe(sub, self.hub.url, branch)
        reports = sync(sub)
        step = Step("subscriber pulls (EU analytics)", round_)
        step.bytes_moved = sum(r.bytes_sent for r in reports)
        step.full_copy_bytes = _full_copy_bytes(self.hub, ["main", MODELS])
        failed = [r for r in reports if not r.ok]
        if failed:
            raise UsageError(f"the subscriber could not sync {failed[0].name}: {failed[0].error}")
        step.note = ", ".join(f"{r.local} {r.status}" for r in reports)
        self.record(step, t0)


def _scale(x: Any) -> Any:
    """Fixed feature scaling (known physiological ranges), so incremental and full models see the same inputs."""
    import numpy as np

    return (x - np.array([85.0, 96.0, 45.0])) / np.array([20.0, 3.0, 15.0])


def _holdout(rows: int) -> Any:
    import pyarrow as pa

    return pa.concat_tables([hd.new_readings(r, HOLDOUT_ROUND, max(rows // 4, 500)) for r in hd.REGIONS])


def _full_copy_bytes(src: Repository, refs: list[str]) -> int:
    """What a transfer of `refs` to an empty repository would send (the cost without deltas)."""
    with tempfile.TemporaryDirectory(prefix="dacflow-demo-full-") as tmp:
        empty = open_or_init_like(src, os.path.join(tmp, "repo"))
        return transfer(src, empty, refs).bytes_sent


def run_demo(
    root: str,
    *,
    clouds: str = "local",
    rows: int = 20_000,
    rounds: int = 2,
    say: Callable[[str], None] | None = None,
) -> DemoReport:
    """Run the story for `rounds` rounds of `rows` readings per region under directory `root`."""
    if clouds not in CLOUDS:
        raise UsageError(f"unknown --clouds {clouds!r}; choose one of {', '.join(CLOUDS)}")
    if rows < 100 or rounds < 1:
        raise UsageError("the demo needs at least 100 rows per batch and one round")
    _need_sklearn()
    os.makedirs(root, exist_ok=True)
    t0 = time.perf_counter()
    with _clouds(clouds, root) as urls:
        report = DemoReport(os.path.abspath(root), clouds, dict(urls))
        story = Story(root, urls, rows, say or (lambda _msg: None))
        for round_ in range(1, rounds + 1):
            snapshots = {}
            for region in hd.REGIONS:
                snapshots[region] = story.ingest(region, round_)
                story.ship(region, round_, snapshots[region])
            fixes = story.corrections(round_)
            data = story.merge(round_, snapshots, fixes)
            report.model = story.retrain(round_, data)
            story.subscriber(round_)
        report.steps = story.steps
    report.seconds = time.perf_counter() - t0
    return report
