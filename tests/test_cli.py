"""The command line: every verb, --json output, and one-line errors with non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_tree, run_cli, write_tree

run = run_cli


def js(capsys: pytest.CaptureFixture[str], repo: Path, *args: str) -> dict:
    code, out, err = run(capsys, "--repo", str(repo), "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_walk_through(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = write_tree(tmp_path / "data", {"a.csv": b"x,y\n1,2\n", "img/p.bin": os.urandom(400_000)})
    assert js(capsys, repo, "init")["branch"] == "main"
    s1 = js(capsys, repo, "snapshot", str(data), "-b", "main", "-m", "first", "--meta", "source=edge-eu")
    assert s1["created"] and s1["files"] == 2 and s1["bytes_new"] == 400_008 and s1["seconds"] >= 0
    (data / "a.csv").write_bytes(b"x,y\n1,2\n3,4\n")
    s2 = js(capsys, repo, "snapshot", str(data), "-m", "second")
    assert s2["parent"] == s1["commit"] and s2["bytes_new"] == 12
    log = js(capsys, repo, "log", "main")
    assert [c["message"] for c in log["commits"]] == ["second", "first", "init"]
    assert log["commits"][1]["meta"] == {"source": "edge-eu", "dacflow.lineage": {"engine": "cli", "inputs": []}}
    d = js(capsys, repo, "diff", s1["commit"], "main")
    assert d["modified"] == 1 and d["changes"][0]["path"] == "a.csv" and d["changes"][0]["bytes_changed"] == 12
    shown = js(capsys, repo, "show", "main")
    assert shown["message"] == "second" and {e["name"] for e in shown["entries"]} == {"a.csv", "img"}
    assert js(capsys, repo, "show", "main:img/p.bin")["size"] == 400_000
    out = tmp_path / "out"
    co = js(capsys, repo, "checkout", "main~1", str(out))
    assert co["commit"] == s1["commit"] and read_tree(out) == {
        "a.csv": b"x,y\n1,2\n",
        "img/p.bin": (data / "img/p.bin").read_bytes(),
    }
    st = js(capsys, repo, "status", str(out), "-b", "main")
    assert not st["clean"] and st["modified"] == 1
    assert js(capsys, repo, "check", "--read-data")["ok"]
    assert js(capsys, repo, "branch", "dev", "--from", "main~1")["commit"] == s1["commit"]
    assert set(js(capsys, repo, "branch")["branches"]) == {"main", "dev"}
    assert js(capsys, repo, "tag", "v1", "main")["commit"] == s2["commit"]
    assert js(capsys, repo, "tag")["tags"] == {"v1": s2["commit"]}
    assert js(capsys, repo, "branch", "-d", "dev")["deleted"] == "dev"
    gc = js(capsys, repo, "gc", "--grace", "0")
    assert gc["dry_run"] is False
    code, out_text, _ = run(capsys, "--repo", str(repo), "cat", "main:a.csv")
    assert code == 0 and out_text == "x,y\n1,2\n3,4\n"


def test_human_output_and_env_repo(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    monkeypatch.setenv("DACFLOW_REPO", str(repo))
    data = write_tree(tmp_path / "d", {"f": b"1"})
    assert run(capsys, "init")[0] == 0
    code, out, _ = run(capsys, "snapshot", str(data), "-m", "hello")
    assert code == 0 and "Committed" in out and "on main" in out
    code, out, _ = run(capsys, "log")
    assert code == 0 and "hello" in out and "init" in out
    code, out, _ = run(capsys, "snapshot", str(data))
    assert code == 0 and "No change" in out


ERRORS = [
    (["--repo", "{tmp}/none", "log"], "no dacflow repository", 3),
    (["log"], "no repository given", 2),
    (["--repo", "{repo}", "log", "nope"], "unknown ref 'nope'", 4),
    (["--repo", "{repo}", "snapshot", "{tmp}/missing"], "not a directory", 2),
    (["--repo", "{repo}", "snapshot", "{tmp}/afile"], "not a directory", 2),
    (["--repo", "{repo}", "branch", "bad..name"], "invalid branch name", 2),
    (["--repo", "{repo}", "branch", "-d", "ghost"], "no branch 'ghost'", 4),
    (["--repo", "{repo}", "checkout", "main", "{tmp}/afile"], "not a directory", 2),
    (["--repo", "{repo}", "snapshot", "{tmp}", "--meta", "novalue"], "KEY=VALUE", 2),
    (["--repo", "unknown://x/y", "log"], "no store for URL scheme 'unknown'", 2),
    (["--repo", "{repo}", "init"], "already exists", 1),
    (["--repo", "{repo}", "cat", "main"], "REF:PATH", 2),
    (["--repo", "{repo}", "cat", "main:missing.txt"], "no path 'missing.txt'", 4),
]


@pytest.mark.parametrize(("argv", "message", "code"), ERRORS)
def test_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str, code: int
) -> None:
    repo = tmp_path / "repo"
    run(capsys, "--repo", str(repo), "init")
    (tmp_path / "afile").write_bytes(b"x")
    args = [a.format(tmp=tmp_path, repo=repo) for a in argv]
    got, out, err = run(capsys, *args)
    assert got == code, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_check_exit_code_on_problems(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    data = write_tree(tmp_path / "d", {"f": os.urandom(1000)})
    run(capsys, "--repo", str(repo), "init")
    run(capsys, "--repo", str(repo), "snapshot", str(data))
    for pack in (repo / "packs").rglob("*"):
        if pack.is_file():
            pack.unlink()
    code, out, _ = run(capsys, "--repo", str(repo), "--json", "check")
    assert code == 10 and json.loads(out)["ok"] is False


def test_real_process_errors_have_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, in a real process: one line on stderr and a non-zero exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "dacflow", "--repo", str(tmp_path / "nope"), "log"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert proc.stderr.strip().startswith("dacflow: error: no dacflow repository") and "Traceback" not in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "dacflow", "--version"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "dacflow" in ok.stdout


@pytest.mark.parametrize("argv", [["snapshot"], ["frobnicate"], ["log", "--bogus"]])
def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]) -> None:
    code, _, err = run(capsys, "--repo", str(tmp_path), *argv)
    assert code == 2 and err.startswith("dacflow: error: ") and len(err.strip().splitlines()) == 1, err


def test_push_pull_clone(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    edge, hub, peer = tmp_path / "edge", tmp_path / "hub", tmp_path / "peer"
    data = write_tree(tmp_path / "d", {"r.csv": os.urandom(300_000)})
    js(capsys, edge, "init")
    js(capsys, hub, "init")
    commit = js(capsys, edge, "snapshot", str(data), "-m", "batch")["commit"]
    pushed = js(capsys, edge, "push", str(hub))
    assert pushed["refs"]["branches/main"]["to"] == commit and pushed["raw_bytes_sent"] >= 300_000
    assert pushed["requests"] > 0 and pushed["seconds"] > 0
    again = js(capsys, edge, "push", str(edge), str(hub), "--ref", "main")
    assert again["objects_sent"] == 0 and again["refs"]["branches/main"]["status"] == "unchanged"
    cloned = js(capsys, hub, "clone", str(hub), str(peer))
    assert cloned["refs"]["branches/main"]["to"] == commit
    local = tmp_path / "local"
    js(capsys, local, "init")
    pulled = js(capsys, local, "pull", str(hub), "--from", str(peer))
    assert pulled["refs"]["branches/main"]["to"] == commit and len(pulled["by_source"]) >= 1
    code, _, err = run(capsys, "--repo", str(local), "push")
    assert code == 2 and "push takes SRC DST" in err


def test_no_permission_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A repository the user may not write to (an immutable directory stops even root): one line, exit 8."""
    repo = tmp_path / "repo"
    data = write_tree(tmp_path / "d", {"f": b"1"})
    run(capsys, "--repo", str(repo), "init")
    if subprocess.run(["chattr", "+i", str(repo / "tmp")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        code, _, err = run(capsys, "--repo", str(repo), "snapshot", str(data))
    finally:
        subprocess.run(["chattr", "-i", str(repo / "tmp")], check=True)
    assert code == 8 and "Operation not permitted" in err and len(err.strip().splitlines()) == 1, err
    assert run(capsys, "--repo", str(repo), "--json", "log")[0] == 0
