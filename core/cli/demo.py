"""`dacflow demo`: the main job. For now a scripted walk-through of the core verbs on the local store:
init → snapshot → change → snapshot → log → diff → checkout → check, printing what moved and how long it took.
"""

from __future__ import annotations

import csv
import io
import os
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

import click
from rich.table import Table

from ..repository import Repository
from .main import Ctx, cli, human_bytes, out, pass_ctx

REGIONS = ("na-aws", "na-gcp", "eu-azure")


def readings_csv(rng: random.Random, region: str, start: int, rows: int) -> bytes:
    """Synthetic heart-monitor readings: one row per patient per second."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    if start == 0:
        writer.writerow(["patient_id", "ts", "heart_rate", "spo2", "region"])
    for i in range(start, start + rows):
        patient = f"{region}-{i % 500:04d}"
        writer.writerow([patient, 1_700_000_000 + i, rng.randint(48, 180), rng.randint(88, 100), region])
    return buf.getvalue().encode()


def build_dataset(root: str, rng: random.Random, rows: int) -> None:
    for region in REGIONS:
        os.makedirs(os.path.join(root, region), exist_ok=True)
        with open(os.path.join(root, region, "readings.csv"), "wb") as f:
            f.write(readings_csv(rng, region, 0, rows))
        for n in range(20):
            with open(os.path.join(root, region, f"device-{n:02d}.json"), "w") as f:
                f.write(f'{{"device": "{region}-{n:02d}", "firmware": "1.{n % 4}.0"}}\n')


@cli.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Work here (default: a new temp dir).")
@click.option("--rows", type=int, default=200_000, show_default=True, help="Readings per region.")
@click.option("--seed", type=int, default=7, show_default=True)
@pass_ctx
def demo(ctx: Ctx, directory: str | None, rows: int, seed: int) -> None:
    """Run the walk-through on the embedded local store (no cloud, no server)."""
    base = os.path.abspath(directory or tempfile.mkdtemp(prefix="dacflow-demo-"))
    os.makedirs(base, exist_ok=True)
    data, repo_dir, out_dir = (os.path.join(base, n) for n in ("data", "repo", "checkout"))
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []

    def step(name: str, fn: Callable[[], tuple[str, int]]) -> None:
        t0 = time.perf_counter()
        what, new_bytes = fn()
        steps.append({"step": name, "what": what, "bytes_new": new_bytes, "seconds": time.perf_counter() - t0})

    repo_holder: dict[str, Repository] = {}

    def init() -> tuple[str, int]:
        repo_holder["r"] = Repository.open(repo_dir) if os.path.exists(repo_dir) else Repository.init(repo_dir)
        return f"repository at {repo_dir}", 0

    def generate() -> tuple[str, int]:
        build_dataset(data, rng, rows)
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(data) for f in fs)
        return f"{len(REGIONS)} regions, {human_bytes(total)} of readings", 0

    def snapshot(message: str) -> Callable[[], tuple[str, int]]:
        def run() -> tuple[str, int]:
            r = repo_holder["r"].snapshot(data, "main", message)
            s = r.stats
            verb = "commit" if r.created else "unchanged, no commit"
            return (
                f"{verb} {r.commit[:12]}: {s['files_hashed']} files hashed, {s['files_cached']} from cache",
                s["bytes_new"],
            )

        return run

    def change() -> tuple[str, int]:
        path = os.path.join(data, "eu-azure", "readings.csv")
        with open(path, "ab") as f:
            f.write(readings_csv(rng, "eu-azure", rows, rows // 100))
        with open(os.path.join(data, "na-aws", "device-03.json"), "w") as f:
            f.write('{"device": "na-aws-03", "firmware": "2.0.0"}\n')
        os.unlink(os.path.join(data, "na-gcp", "device-07.json"))
        return "appended 1% rows in eu-azure, updated 1 device, removed 1", 0

    def log() -> tuple[str, int]:
        entries = list(repo_holder["r"].log("main"))
        return " ← ".join(f"{cid[:8]} {c.message}" for cid, c in entries[:3]), 0

    def diff() -> tuple[str, int]:
        d = repo_holder["r"].diff("main~1", "main")
        return (
            f"{len(d.added)} added, {len(d.removed)} removed, {len(d.modified)} modified; "
            f"{human_bytes(d.bytes_changed)} of new content"
        ), 0

    def checkout() -> tuple[str, int]:
        commit, stats = repo_holder["r"].checkout("main~1", out_dir, force=True)
        return f"{commit[:12]} → {out_dir}: {stats.files} files, {human_bytes(stats.bytes)}", 0

    def check() -> tuple[str, int]:
        report = repo_holder["r"].check(read_data=True)
        return (
            "ok" if report.ok else f"{len(report.problems)} problems"
        ) + f", {human_bytes(report.bytes_read)} re-hashed", 0

    step("init", init)
    step("generate", generate)
    step("snapshot", snapshot("edge batch 1"))
    step("re-snapshot", snapshot("no change"))
    step("change", change)
    step("snapshot", snapshot("edge batch 2"))
    step("log", log)
    step("diff", diff)
    step("checkout", checkout)
    step("check", check)

    def human() -> None:
        table = Table(title=f"dacflow walk-through in {base}")
        for col in ("step", "what", "new bytes stored", "seconds"):
            table.add_column(col, justify="right" if col in ("new bytes stored", "seconds") else "left")
        for s in steps:
            table.add_row(s["step"], s["what"], human_bytes(s["bytes_new"]), f"{s['seconds']:.2f}")
        out.print(table)

    ctx.emit({"directory": base, "steps": steps}, human)
