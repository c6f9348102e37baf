"""The table verbs of the CLI: write/read/schema/list, row diff with export, merge with policies, snapshot --table."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from test_cli import js, run


def parquet(path: Path, **cols: list) -> str:
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_table_verbs_and_merge(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    base = parquet(tmp_path / "b.parquet", pid=["a", "b", "c"], ts=[1, 1, 1], hr=[60, 70, 80])
    w = js(capsys, repo, "table", "write", "vitals", base, "--key", "pid,ts", "--mode", "overwrite")
    assert w["created"] and w["inserted"] == 3 and w["table"] == "vitals"
    schema = js(capsys, repo, "table", "schema", "main", "vitals")
    assert schema["key"] == ["pid", "ts"] and [c["name"] for c in schema["columns"]] == ["pid", "ts", "hr"]
    assert js(capsys, repo, "table", "list")["tables"] == {"vitals": 3}
    js(capsys, repo, "branch", "eu")
    js(capsys, repo, "branch", "na")
    js(
        capsys,
        repo,
        "table",
        "write",
        "vitals",
        parquet(tmp_path / "eu.parquet", pid=["a", "d"], ts=[1, 1], hr=[61, 90]),
        "-b",
        "eu",
    )
    js(
        capsys,
        repo,
        "table",
        "write",
        "vitals",
        parquet(tmp_path / "na.parquet", pid=["a"], ts=[1], hr=[62]),
        "-b",
        "na",
    )
    d = js(capsys, repo, "diff", "main", "eu", "--table", "vitals", "--export", str(tmp_path / "delta"))
    assert (d["inserted"], d["updated"], d["deleted"]) == (1, 1, 0)
    assert pq.read_table(d["exported"]["inserted"]).to_pylist() == [{"pid": "d", "ts": 1, "hr": 90}]
    assert pq.read_table(d["exported"]["updated_before"]).column("hr").to_pylist() == [60]
    code, _, err = run(capsys, "--repo", str(repo), "merge", "eu", "--into", "na")
    assert code == 5 and "unresolved conflict" in err and len(err.strip().splitlines()) == 1
    m = js(capsys, repo, "merge", "eu", "--into", "na", "--policy", "hr=theirs,*=fail")
    assert m["conflicts"] == 1 and m["unresolved"] == 0 and m["rows_changed"] == {"vitals": 2}
    rows = js(capsys, repo, "table", "read", "na", "vitals")
    assert rows["rows"] == 4 and {r["pid"]: r["hr"] for r in rows["head"]} == {"a": 61, "b": 70, "c": 80, "d": 90}
    out = tmp_path / "na.csv"
    js(capsys, repo, "table", "read", "na", "vitals", "-o", str(out))
    assert out.read_text().splitlines()[0] == '"pid","ts","hr"'


def test_snapshot_declares_tables_and_checkout_writes_a_dataset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    src = tmp_path / "src"
    (src / "raw").mkdir(parents=True)
    parquet(src / "raw" / "day1.parquet", pid=["a", "b"], ts=[1, 1], hr=[60, 70])
    (src / "raw" / "day2.csv").write_text("pid,ts,hr\nc,2,80\n")
    (src / "notes.txt").write_text("hello")
    s = js(capsys, repo, "snapshot", str(src), "--table", "vitals=raw/*:pid,ts")
    assert s["files"] == 1  # notes.txt; the table's sources are not stored as files
    shown = js(capsys, repo, "show", "main")
    kinds = {e["name"]: e["kind"] for e in shown["entries"]}
    assert kinds["vitals"] == "table" and kinds["notes.txt"] == "file"
    co = tmp_path / "co"
    js(capsys, repo, "checkout", "main", str(co))
    table = ds.dataset(co / "vitals", format="parquet").to_table().sort_by("pid")
    assert table.to_pylist() == [
        {"pid": "a", "ts": 1, "hr": 60},
        {"pid": "b", "ts": 1, "hr": 70},
        {"pid": "c", "ts": 2, "hr": 80},
    ]
    assert json.loads((co / "vitals" / "_dacflow_table.json").read_text())["key"] == ["pid", "ts"]
    code, _, err = run(capsys, "--repo", str(repo), "snapshot", str(src), "--table", "v=none/*.csv:pid")
    assert code == 2 and "no file" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["table", "write", "t", "{tmp}/missing.parquet", "--key", "k"], "no such file"),
        (["table", "write", "t", "{tmp}/notes.txt", "--key", "k"], "not a table file"),
        (["table", "write", "t", "{tmp}/ok.parquet"], "needs a primary key"),
        (["table", "write", "t", "{tmp}/ok.parquet", "--key", "nope"], "key column(s) nope not in the data"),
        (["table", "read", "main", "ghost"], "no table 'ghost'"),
        (["merge", "main", "--policy", "sometimes"], "unknown merge policy"),
        (["diff", "main", "main", "--export", "{tmp}/x"], "--export needs --table"),
    ],
)
def test_table_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    (tmp_path / "notes.txt").write_text("x")
    parquet(tmp_path / "ok.parquet", k=[1, 2], v=[3, 4])
    code, _, err = run(capsys, "--repo", str(repo), *[a.format(tmp=tmp_path) for a in argv])
    assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
