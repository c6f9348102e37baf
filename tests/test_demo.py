"""`dacflow demo`, the main job: the whole story on the embedded local store (and on the emulators), the summary it
prints, the chart, and a second run on the same directory that the step cache skips."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dacflow import Repository
from dacflow.heartdata import CORRECTED, REGIONS
from dacflow.stepcache import list_entries

pytestmark = pytest.mark.slow

CACHED = {
    "ingest",
    "doctors' corrections",
    "merge into main",
    "retrain (new rows only)",
    "full retrain (for comparison)",
}


def demo(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, as a new user runs it (`--json` is a global option: it goes before `demo`)."""
    pre = ["--json"] if "--json" in args else []
    argv = [sys.executable, "-m", "dacflow", *pre, "demo", *(a for a in args if a != "--json")]
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)


def _kind(step: str) -> str:
    return "ingest" if step.startswith("ingest") else step


def test_demo_tells_the_whole_story_and_a_second_run_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    done = demo("--dir", str(root), "--rows", "3000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    first = json.loads(done.stdout)
    steps = first["steps"]
    assert [s["cached"] for s in steps] == [False] * len(steps)
    by = {(s["round"], s["step"]): s for s in steps}
    for region in REGIONS:
        # round 2 ships about one batch, not the grown table a full copy would send
        ship = by[(2, f"ship {region} → hub")]
        assert 0 < ship["bytes_moved"] < 0.75 * ship["full_copy_bytes"]
    assert by[(2, "merge into main")]["note"] == f"{len(REGIONS) * CORRECTED} conflicts, doctor wins"
    inc, full = first["model"]["incremental"], first["model"]["full"]
    assert inc["rows"] < full["rows"] == 2 * len(REGIONS) * 3000
    assert inc["accuracy"] > 0.9 and full["accuracy"] > 0.9
    pull = by[(2, "subscriber pulls (EU analytics)")]
    assert 0 < pull["bytes_moved"] < pull["full_copy_bytes"]
    png = Path(first["chart"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    hub = Repository.open(first["urls"]["hub"])
    subscriber = Repository.open(first["urls"]["subscriber"])
    heads = {b: hub.head(b) for b in ("main", "models")}
    assert {b: subscriber.head(b) for b in heads} == heads
    model = hub.get_commit("models").meta["dacflow.trained_on"]
    assert model["commit"] == heads["main"] and model["rows"] == inc["rows"]
    assert len(hub.read_table("main", "readings")) == full["rows"]

    done = demo("--dir", str(root), "--rows", "3000", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads(done.stdout)
    skipped = {(s["round"], s["step"]) for s in second["steps"] if s["cached"]}
    assert skipped == {(s["round"], s["step"]) for s in steps if _kind(s["step"]) in CACHED}
    assert all(s["bytes_moved"] == 0 for s in second["steps"])  # nothing left to send anywhere
    hub = Repository.open(first["urls"]["hub"])
    assert {b: hub.head(b) for b in heads} == heads  # skipped steps made no commits
    assert len(list_entries(hub)) == 7  # merge, retrain and full retrain per round, and the corrections
    assert second["model"] == first["model"]  # the cached steps' results, not recomputed


def test_demo_human_output_and_bad_input(tmp_path: Path) -> None:
    done = demo("--dir", str(tmp_path / "d"), "--rows", "500", "--rounds", "1", "--no-chart")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dacflow demo — heart monitoring on local stores" in done.stdout
    assert "the step cache skipped 0" in done.stdout
    assert not (tmp_path / "d" / "demo-summary.png").exists()
    bad = demo("--dir", str(tmp_path / "e"), "--rows", "10")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "at least 100 rows" in bad.stderr
    bad = demo("--clouds", "mars")
    assert bad.returncode == 2 and "mars" in bad.stderr


def test_demo_on_the_emulators(tmp_path: Path) -> None:
    done = demo("--dir", str(tmp_path / "d"), "--clouds", "emulators", "--rows", "500", "--json", "--no-chart")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert sorted(u.split("://")[0] for u in report["urls"].values()) == ["az", "az", "gs", "s3", "s3"]
    assert report["model"]["incremental"]["rows"] < report["model"]["full"]["rows"]
