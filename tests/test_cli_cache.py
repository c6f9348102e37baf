"""`dacflow cache list|clear`: what the step cache holds, and forgetting entries by key, by step or all."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from dacflow import Repository
from dacflow.stepcache import lookup, step
from test_cli import run


def three_entries(repo: Repository) -> dict[str, str]:
    """Two runs of step `double` (factor 2 and 3) and one of step `total`; returns label -> key."""
    repo.write_table("raw", "t", pa.table({"id": [1, 2], "v": [5, 7]}), key=["id"])

    @step(repo, output_branch="doubled", inputs=["src"], name="double")
    def double(src: str, factor: int = 2, meta: dict | None = None) -> str:
        rows = repo.read_table(src, "t")
        out = pa.table({"id": rows["id"], "v": [x * factor for x in rows["v"].to_pylist()]})
        return repo.write_table("doubled", "t", out, key=["id"], mode="overwrite", meta=meta).commit

    @step(repo, output_branch="total", inputs=["src"], name="total")
    def total(src: str) -> str:
        value = sum(repo.read_table(src, "t")["v"].to_pylist())
        return repo.commit_changes("total", {"total.txt": str(value).encode()}).commit

    d2, d3 = double("raw"), double("raw", factor=3)
    return {"double2": d2.key, "double3": d3.key, "total": total(d3).key}


def test_cache_list_and_clear(capsys: pytest.CaptureFixture[str], repo: Repository, repo_path: Path) -> None:
    code, out, _ = run(capsys, "--repo", str(repo_path), "cache", "list")
    assert code == 0 and "No cached steps." in out
    keys = three_entries(repo)

    code, out, err = run(capsys, "--repo", str(repo_path), "cache", "list", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["count"] == 3 and [e["step"] for e in doc["entries"]] == ["double", "double", "total"]
    by_key = {e["key"]: e for e in doc["entries"]}
    assert set(by_key) == set(keys.values())
    first = by_key[keys["double2"]]
    assert first["inputs"] == {"src": repo.head("raw")} and first["params"] == {"factor": 2}
    assert first["output"] == lookup(repo, keys["double2"]).output  # type: ignore[union-attr]
    assert first["engine"] == "python" and first["output_branch"] == "doubled" and first["created"]
    assert by_key[keys["total"]]["inputs"] == {"src": by_key[keys["double3"]]["output"]}

    code, out, _ = run(capsys, "--repo", str(repo_path), "cache", "list")
    assert code == 0 and "3 cached step(s)" in out
    row = next(line for line in out.splitlines() if line.strip().startswith(keys["total"][:12]))
    assert "total" in row and f"src={by_key[keys['double3']]['output'][:12]}" in row

    # By key prefix, by step, then all.
    code, out, err = run(capsys, "--repo", str(repo_path), "--json", "cache", "clear", keys["total"][:8])
    assert code == 0, err
    assert json.loads(out) == {"cleared": [keys["total"]], "count": 1}
    code, out, _ = run(capsys, "--repo", str(repo_path), "cache", "clear", "--step", "nope")
    assert code == 0 and "Cleared 0 cache entries" in out
    code, out, _ = run(capsys, "--repo", str(repo_path), "cache", "clear", "--step", "double")
    assert code == 0 and "Cleared 2 cache entries" in out
    assert lookup(repo, keys["double2"]) is None and lookup(repo, keys["double3"]) is None
    three_entries(repo)  # the entries come back (bodies run again)
    code, out, _ = run(capsys, "--repo", str(repo_path), "cache", "clear")
    assert code == 0 and "Cleared 3 cache entries" in out
    assert json.loads(run(capsys, "--repo", str(repo_path), "cache", "list", "--json")[1])["count"] == 0


def test_cache_clear_errors_are_one_line(capsys: pytest.CaptureFixture[str], repo: Repository, repo_path: Path) -> None:
    three_entries(repo)
    code, _, err = run(capsys, "--repo", str(repo_path), "cache", "clear", "beef")
    assert (
        code == 4 and err.strip() == "dacflow: error: no step cache entry matches 'beef' (give 4+ hex digits of a key)"
    )
    code, _, err = run(capsys, "--repo", str(repo_path), "cache", "clear", "")
    assert code == 4 and len(err.strip().splitlines()) == 1
    assert json.loads(run(capsys, "--repo", str(repo_path), "cache", "list", "--json")[1])["count"] == 3
