"""`dacflow gate add|list|remove|check|plugin` and `dacflow branch protect|unprotect`, with --json and one-line
refusals (exit code 12); `dacflow branch` keeps its usage."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_tree
from dacflow import Repository
from test_cli import js, run


def test_write_audit_publish_on_the_command_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    pq.write_table(pa.table({"id": list(range(20)), "hr": [70.0] * 20}), tmp_path / "v.parquet")
    js(capsys, repo, "table", "write", "vitals", str(tmp_path / "v.parquet"), "-k", "id")
    schema = js(capsys, repo, "gate", "add", "schema", "-b", "main", "--table", "vitals", "--like", "main")["gate"]
    assert (schema["columns"], schema["key"]) == ({"id": "int64", "hr": "double"}, ["id"])
    rows = js(capsys, repo, "gate", "add", "rows", "-b", "main", "--table", "vitals", "--not-null", "hr",
              "--range", "hr=20:250", "--allowed", "id=1,2")["gate"]  # fmt: skip
    assert (rows["ranges"], rows["allowed"]) == ({"hr": [20, 250]}, {"id": ["1", "2"]})
    js(capsys, repo, "gate", "remove", rows["id"][:5])
    guard = js(capsys, repo, "gate", "add", "guard", "-b", "main", "--table", "vitals", "--max-delete-pct", "10")
    paths = js(capsys, repo, "gate", "add", "paths", "-b", "main", "--allow", "*.csv", "--allow", "vitals",
               "--max-size", "1KiB")["gate"]  # fmt: skip
    assert paths["max_size"] == 1024
    assert js(capsys, repo, "branch", "protect", "main")["protected"] == ["main"]
    listed = js(capsys, repo, "gate", "list")
    assert [g["id"] for g in listed["gates"]] == [schema["id"], guard["gate"]["id"], paths["id"]]
    assert (listed["protected"], listed["revision"]) == (["main"], 6)
    before = Repository.open(str(repo)).head("main")

    # a direct commit to main: refused, one line, exit 12
    data = write_tree(tmp_path / "d", {"a.csv": b"x\n"})
    code, out, err = run(capsys, "--repo", str(repo), "snapshot", str(data), "-b", "main")
    assert code == 12 and out == ""
    gid = guard["gate"]["id"]
    assert err == (  # the snapshot's tree is exactly the directory: the table would go too
        "dacflow: error: gates refused the commit to main for 3 reason(s): branch 'main' is protected: commit to "
        f"another branch and merge it in; vitals: the table is removed, but a schema contract guards it (gate "
        f"{schema['id']} schema vitals); vitals: 20 of 20 rows deleted (100.0%), the guard allows 10% (gate {gid} "
        "guard vitals)\n"
    )

    # write on a branch, audit it, publish it
    js(capsys, repo, "branch", "staging")
    pq.write_table(pa.table({"id": list(range(5))}), tmp_path / "del.parquet")
    js(capsys, repo, "table", "write", "vitals", str(tmp_path / "del.parquet"), "-b", "staging", "--mode", "delete")
    code, out, err = run(capsys, "--repo", str(repo), "--json", "gate", "check", "staging", "-b", "main")
    audit = json.loads(out)
    assert code == 12 and not audit["ok"]
    assert audit["reasons"] == [
        f"vitals: 5 of 20 rows deleted (25.0%), the guard allows 10% (gate {guard['gate']['id']} guard vitals)"
    ]
    code, out, err = run(capsys, "--repo", str(repo), "merge", "staging", "--into", "main")
    assert code == 12
    assert err == f"dacflow: error: gates refused the merge into main for 1 reason(s): {audit['reasons'][0]}\n"
    assert Repository.open(str(repo)).head("main") == before
    js(capsys, repo, "gate", "remove", guard["gate"]["id"])
    assert js(capsys, repo, "gate", "check", "staging", "-b", "main") == {
        "repo": Repository.open(str(repo)).url, "ref": "staging", "branch": "main", "ok": True, "reasons": [],
    }  # fmt: skip
    merged = js(capsys, repo, "merge", "staging", "--into", "main")
    assert merged["fast_forward"] and Repository.open(str(repo)).head("main") == merged["commit"] != before

    assert js(capsys, repo, "branch", "unprotect", "main")["protected"] == []
    assert js(capsys, repo, "snapshot", str(write_tree(tmp_path / "e", {"ok.csv": b"1"})), "-b", "dev")["created"]


def test_branch_keeps_its_usage_next_to_protect(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    assert js(capsys, repo, "branch", "dev")["branch"] == "dev"
    assert js(capsys, repo, "branch", "--from", "main", "protect")["branch"] == "protect"  # a branch named protect
    assert set(js(capsys, repo, "branch")["branches"]) == {"main", "dev", "protect"}
    js(capsys, repo, "branch", "protect", "release/*")
    assert js(capsys, repo, "branch", "protect", "dev")["protected"] == ["release/*", "dev"]
    code, _, err = run(capsys, "--repo", str(repo), "branch", "-d", "dev")
    assert code == 12
    refusal = "gates refused deleting dev for 1 reason(s): branch 'dev' is protected (unprotect it first)"
    assert err == f"dacflow: error: {refusal}\n"
    code, out, _ = run(capsys, "--repo", str(repo), "branch", "--help")
    assert code == 0 and "Usage: dacflow branch [NAME] [--from REF] [-d] | protect NAME | unprotect NAME" in out
    assert "protect    Protect NAME" in out and "unprotect  Lift the protection of NAME" in out
    code, _, err = run(capsys, "--repo", str(repo), "branch", "unprotect", "main")
    assert code == 4 and "branch 'main' is not protected" in err
    code, _, err = run(capsys, "--repo", str(repo), "branch", "protect")
    assert code == 2 and "Missing argument 'NAME'" in err


def test_bad_gate_arguments_fail_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    js(capsys, repo, "init")
    for args, message in (
        (["gate", "add", "rows", "-b", "main", "--table", "t"], "a row rule needs not_null columns"),
        (["gate", "add", "rows", "-b", "main", "--table", "t", "--range", "hr=20"], "--range takes COL=MIN:MAX"),
        (["gate", "add", "schema", "-b", "main", "--column", "id"], "--column takes NAME=VALUE"),
        (["gate", "add", "paths", "-b", "main", "--max-size", "lots"], "not a size: 'lots'"),
        (["gate", "add", "webhook", "-b", "main"], "a webhook takes a url or url_env"),
        (["gate", "remove", "abcdef"], "no gate 'abcdef'"),
        (["gate", "plugin", "no_such_module_xyz"], "cannot load plugin 'no_such_module_xyz'"),
    ):
        code, out, err = run(capsys, "--repo", str(repo), *args)
        assert code in (2, 4) and message in err and err.count("\n") == 1, (args, err)
    assert js(capsys, repo, "gate", "list")["gates"] == []
