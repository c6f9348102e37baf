"""Third-party plugins (pluggy): found through the `dacflow.plugins` entry-point group (a tiny distribution made in
the test), registered programmatically or named in the gate config; they can veto, and a plugin that fails is
named in the refusal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import write_tree
from dacflow import Repository, hooks
from dacflow.errors import GateRejectedError, UsageError
from dacflow.gates import add_plugin, gate_config, remove_plugin

VETO_PLUGIN = '''
"""A third-party dacflow plugin: refuses any move of main that adds a file whose name contains "forbidden"."""
from dacflow.hooks import hookimpl

CALLS = []


def forbidden(branch, changes):
    if branch != "main":
        return []
    return [f"{c.path} is forbidden on {branch}" for c in changes.paths.added if "forbidden" in c.path]


class NoForbiddenFiles:
    @hookimpl
    def dacflow_validate_commit(self, branch, changes):
        CALLS.append(("commit", branch))
        return forbidden(branch, changes)

    @hookimpl
    def dacflow_validate_merge(self, branch, changes, source):
        CALLS.append(("merge", branch, source))
        return forbidden(branch, changes)


plugin = NoForbiddenFiles()
'''


def make_distribution(root: Path, name: str = "dacflow_nofiles", module: str = VETO_PLUGIN) -> Path:
    """A tiny installed distribution: a module and its dist-info with an entry point in `dacflow.plugins`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.py").write_text(textwrap.dedent(module))
    info = root / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[dacflow.plugins]\nnofiles = {name}:plugin\n")
    (info / "RECORD").write_text("")
    return root


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The distribution on sys.path (reversibly) and the entry points scanned again; yields the plugin module."""
    site = make_distribution(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    hooks.refresh()
    import importlib

    module = importlib.import_module("dacflow_nofiles")
    yield module
    monkeypatch.undo()
    sys.modules.pop("dacflow_nofiles", None)
    hooks.refresh()


@pytest.fixture(autouse=True)
def _fresh_plugins() -> Iterator[None]:
    hooks.refresh()
    yield
    for name in ("spy", "boom", "late"):
        hooks.unregister(name)
    hooks.refresh()


def test_an_installed_plugin_is_discovered_through_its_entry_point_and_vetoes(
    installed: Any, repo: Repository, tmp_path: Path
) -> None:
    assert ("nofiles", installed.plugin, "") in hooks.entry_point_plugins()
    ok = repo.commit_changes("main", {"fine.txt": b"ok"})
    assert ok.created and installed.CALLS == [("commit", "main")]
    with pytest.raises(GateRejectedError) as err:
        repo.commit_changes("main", {"a/forbidden.bin": b"x", "b/forbidden.txt": b"y"})
    assert err.value.reasons == ["a/forbidden.bin is forbidden on main", "b/forbidden.txt is forbidden on main"]
    assert str(err.value) == (
        "gates refused the commit to main for 2 reason(s): a/forbidden.bin is forbidden on main; "
        "b/forbidden.txt is forbidden on main"
    )
    assert repo.head("main") == ok.commit
    # merges ask the merge hook, with the source
    repo.branch("dev")
    repo.commit_changes("dev", {"forbidden.csv": b"z"})
    with pytest.raises(GateRejectedError, match="forbidden.csv is forbidden on main"):
        repo.merge("dev", "main")
    assert installed.CALLS[-1] == ("merge", "main", "dev") and repo.head("main") == ok.commit


def test_the_entry_point_is_found_by_a_fresh_process_running_the_cli(tmp_path: Path) -> None:
    """A new interpreter with the distribution on its path (as `pip install` would put it) refuses the snapshot."""
    site = make_distribution(tmp_path / "site")
    repo = Repository.init(str(tmp_path / "repo"))
    src = write_tree(tmp_path / "src", {"forbidden.txt": b"x"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "dacflow", "--repo", repo.url, "snapshot", str(src), "-b", "main"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 12, done.stderr
    assert done.stderr.strip() == (
        "dacflow: error: gates refused the commit to main for 1 reason(s): forbidden.txt is forbidden on main"
    )
    listed = subprocess.run(
        [sys.executable, "-m", "dacflow", "--repo", repo.url, "--json", "gate", "list"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert '"entry_points": [{"error": null, "loaded": true, "name": "nofiles"}]' in listed.stdout
    assert len(list(repo.log("main"))) == 1  # only the root commit


class Spy:
    """Records every hook call (a programmatically registered plugin)."""

    def __init__(self, veto: str | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.veto = veto

    @hooks.hookimpl
    def dacflow_validate_merge(
        self, repo: Repository, branch: str, old: str, new: str, commit: Any, changes: Any, source: str
    ) -> list[str]:
        self.calls.append(("validate_merge", {"branch": branch, "old": old, "new": new, "source": source}))
        assert commit.parents and changes.new == new and repo.head(branch) == old  # not moved yet
        return [self.veto] if self.veto else []

    @hooks.hookimpl
    def dacflow_after_merge(self, repo: Repository, branch: str, old: str, new: str, source: str) -> None:
        self.calls.append(("after_merge", {"branch": branch, "old": old, "new": new, "source": source}))
        assert repo.head(branch) == new  # moved

    @hooks.hookimpl
    def dacflow_after_commit(self, branch: str, new: str, changes: Any) -> None:
        self.calls.append(("after_commit", {"branch": branch, "new": new, "tables": changes.table("t") is not None}))


def test_a_registered_plugin_sees_each_phase_and_can_veto(repo: Repository) -> None:
    spy = Spy()
    hooks.register(spy, "spy")
    repo.branch("dev")
    c = repo.write_table("dev", "t", pa.table({"id": [1]}), key=["id"]).commit
    assert spy.calls == [("after_commit", {"branch": "dev", "new": c, "tables": True})]
    root = repo.head("main")
    result = repo.merge("dev", "main")
    assert spy.calls[1:] == [
        ("validate_merge", {"branch": "main", "old": root, "new": c, "source": "dev"}),
        ("after_merge", {"branch": "main", "old": root, "new": c, "source": "dev"}),
    ]
    assert result.fast_forward
    spy.veto = "the spy says no"
    repo.write_table("dev", "t", pa.table({"id": [2]}), key=["id"])
    with pytest.raises(
        GateRejectedError, match=r"^gates refused the merge into main for 1 reason\(s\): the spy says no"
    ):
        repo.merge("dev", "main")
    assert repo.head("main") == c and spy.calls[-1][0] == "validate_merge"


class Boom:
    @hooks.hookimpl
    def dacflow_validate_commit(self) -> None:
        raise RuntimeError("lost my database connection")

    @hooks.hookimpl
    def dacflow_after_commit(self) -> None:
        raise RuntimeError("notification service down")


def test_a_plugin_that_raises_is_named_and_the_other_reasons_still_listed(repo: Repository) -> None:
    from dacflow.gates import protect

    protect(repo, "main")
    hooks.register(Boom(), "boom")
    before = repo.head("main")
    with pytest.raises(GateRejectedError) as err:
        repo.commit_changes("main", {"a": b"1"})
    assert err.value.reasons == [
        "branch 'main' is protected: commit to another branch and merge it in",
        "plugin 'boom' failed: RuntimeError: lost my database connection",
    ]
    assert repo.head("main") == before


def test_an_after_hook_that_raises_is_logged_by_name_and_the_commit_stands(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    class LateBoom:
        @hooks.hookimpl
        def dacflow_after_commit(self) -> None:
            raise RuntimeError("notification service down")

    hooks.register(LateBoom(), "late")
    with caplog.at_level(logging.WARNING, logger="dacflow.hooks"):
        result = repo.commit_changes("main", {"a": b"1"})
    assert result.created and repo.head("main") == result.commit
    assert "plugin late failed in dacflow_after_commit (the move stands)" in caplog.text
    assert "notification service down" in caplog.text


CONFIG_PLUGIN = """
from dacflow.hooks import hookimpl


@hookimpl
def dacflow_validate_commit(branch, changes):
    table = changes.table("vitals")
    if table is not None and table.rows > 3:
        return f"vitals on {branch} may hold at most 3 rows, not {table.rows}"
"""


def test_a_plugin_named_in_the_gate_config_is_loaded_for_that_repository_only(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "dacflow_rowcap.py").write_text(CONFIG_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    with pytest.raises(UsageError, match="cannot load plugin 'dacflow_nope': ModuleNotFoundError"):
        add_plugin(repo, "dacflow_nope")
    add_plugin(repo, "dacflow_rowcap")
    assert gate_config(repo).plugins == ("dacflow_rowcap",)
    repo.write_table("main", "vitals", pa.table({"id": [1, 2, 3]}), key=["id"])
    with pytest.raises(GateRejectedError, match="vitals on main may hold at most 3 rows, not 4"):
        repo.write_table("main", "vitals", pa.table({"id": [4]}), key=["id"])
    other = Repository.init(str(tmp_path / "other"))  # not named there: not applied
    assert other.write_table("main", "vitals", pa.table({"id": [1, 2, 3, 4]}), key=["id"]).created
    remove_plugin(repo, "dacflow_rowcap")
    assert repo.write_table("main", "vitals", pa.table({"id": [4]}), key=["id"]).created


def test_a_plugin_that_cannot_load_or_is_invalid_refuses_every_move_naming_it(
    repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_distribution(tmp_path / "site", "dacflow_broken", "raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(site))
    hooks.refresh()

    class Misspelled:
        @hooks.hookimpl
        def dacflow_validate_commit(self, brnach: str) -> None:  # not an argument of the hook
            pass

    hooks.register(Misspelled(), "boom")
    with pytest.raises(GateRejectedError) as err:
        repo.commit_changes("main", {"a": b"1"})
    first, second = err.value.reasons
    assert first == "plugin 'nofiles' could not be loaded: ImportError: needs libfoo"
    assert second.startswith("plugin 'boom' is not a valid dacflow plugin: ") and "brnach" in second
    assert len(list(repo.log("main"))) == 1
