"""Flyte types: registration through the entry point, the literal, and Flyte's cache keyed on content.

The cache tests run a `cache=Cache(...)` task through flytekit's local cache (under `$HOME/.flyte/local-cache`,
pointed at a per-test folder) and count executions of its body with a file the body appends to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pytest
from conftest import write_tree
from dacflow import Repository
from dacflow.providers.flyte import CHANGE_COLUMN, Delta, Snapshot
from flytekit import Cache, task, workflow
from flytekit.core.context_manager import FlyteContextManager
from flytekit.core.local_cache import LocalTaskCache, _calculate_cache_key
from flytekit.core.type_engine import TypeEngine, TypeTransformerFailedError
from flytekit.models.literals import LiteralMap
from test_packaging import BLOCKER


@pytest.fixture(autouse=True)
def flyte_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """HOME in a temp folder, so flytekit's local cache (~/.flyte/local-cache, opened on first use) is per test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    LocalTaskCache._initialized = False  # re-open the cache under the new HOME on next use
    yield home
    if LocalTaskCache._initialized:
        LocalTaskCache._cache.close()
    LocalTaskCache._initialized = False


def _readings(n: int, hr: int = 60) -> pa.Table:
    return pa.table(
        {"pid": [f"p{i:03d}" for i in range(n)], "ts": list(range(n)), "hr": [hr + i % 7 for i in range(n)]}
    )


def _literal(value: object, t: type) -> object:
    ctx = FlyteContextManager.current_context()
    return TypeEngine.to_literal(ctx, value, t, TypeEngine.to_literal_type(t))


def _key(value: object, t: type) -> str:
    return _calculate_cache_key("t", "1", LiteralMap({"s": _literal(value, t)}))  # type: ignore[dict-item]


# -- registration ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    ["import flytekit", "import dacflow.providers.flyte.types", "from dacflow.providers.flyte import Snapshot"],
    ids=["flytekit-first", "types-module-first", "package-first"],
)
def test_importing_flytekit_registers_the_types(first: str) -> None:
    code = textwrap.dedent(
        f"""
        {first}
        from importlib.metadata import entry_points
        from flytekit.core.type_engine import TypeEngine
        from dacflow.providers.flyte.values import Delta, Snapshot
        eps = {{ep.name: ep.value for ep in entry_points(group="flytekit.plugins")}}
        assert eps.get("dacflow") == "dacflow.providers.flyte.types", eps
        print(TypeEngine.get_transformer(Snapshot).name, "|", TypeEngine.get_transformer(Delta).name)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "dacflow Snapshot | dacflow Delta"


def test_values_import_without_flytekit_and_tasks_say_what_is_missing() -> None:
    code = BLOCKER + textwrap.dedent(
        """
        from dacflow.providers.flyte import Delta, Snapshot
        s = Snapshot("file:///x", "ab" * 32, table="vitals")
        assert s.short == "file:///x@abababababab:vitals", s.short
        try:
            from dacflow.providers.flyte import snapshot_task
        except ImportError as exc:
            print("ImportError", "flytekit" in str(exc))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ImportError True"


# -- the literal -----------------------------------------------------------------------------------------------


def test_literal_is_small_deterministic_and_round_trips(repo: Repository, tmp_path: Path) -> None:
    repo.write_table("main", "vitals", _readings(50), key=["pid", "ts"])
    repo.commit_changes("main", {"notes/readme.txt": b"hello"})
    for snap in (
        Snapshot.of(repo, "main"),
        Snapshot.of(repo, "main", table="vitals"),
        Snapshot.of(repo, "main", path="notes/readme.txt"),
    ):
        lit = _literal(snap, Snapshot)
        raw = lit.to_flyte_idl().SerializeToString(deterministic=True)  # type: ignore[attr-defined]
        again = _literal(Snapshot(snap.url, snap.commit, snap.table, snap.path, snap.branch), Snapshot)
        assert again.to_flyte_idl().SerializeToString(deterministic=True) == raw  # type: ignore[attr-defined]
        assert len(raw) < 700
        back = TypeEngine.to_python_value(FlyteContextManager.current_context(), lit, Snapshot)  # type: ignore[arg-type]
        assert back == snap and back.content == snap.content
    entries = {k: v.scalar.primitive.string_value for k, v in lit.map.literals.items()}  # type: ignore[attr-defined]
    assert entries["content"] == repo.entry("main", "notes/readme.txt").ref
    assert entries["url"] == repo.url and entries["commit"] == repo.head("main")
    # the content ids: root tree, table object, file object
    c = repo.get_commit("main")
    assert Snapshot.of(repo, "main").content == c.tree
    assert Snapshot.of(repo, "main", table="vitals").content == repo.entry("main", "vitals").ref


def test_optional_and_list_of_snapshots_round_trip(repo: Repository) -> None:
    snaps = [Snapshot.of(repo, "main"), Snapshot.of(repo, "main")]
    ctx = FlyteContextManager.current_context()
    for value, t in ((snaps, list[Snapshot]), (snaps[0], Optional[Snapshot]), (None, Optional[Snapshot])):  # noqa: UP045
        lit = _literal(value, t)  # type: ignore[arg-type]
        assert TypeEngine.to_python_value(ctx, lit, t) == value  # type: ignore[arg-type]


def test_a_literal_of_unknown_version_or_shape_is_refused(repo: Repository) -> None:
    from dacflow.providers.flyte.types import SnapshotTransformer
    from flytekit.models.literals import Literal, Primitive, Scalar

    ctx = FlyteContextManager.current_context()
    lit = _literal(Snapshot.of(repo, "main"), Snapshot)
    lit.map.literals["v"] = Literal(scalar=Scalar(primitive=Primitive(string_value="9")))  # type: ignore[attr-defined]
    with pytest.raises(TypeTransformerFailedError, match="format version 9; this dacflow reads version 1"):
        SnapshotTransformer().to_python_value(ctx, lit, Snapshot)  # type: ignore[arg-type]
    with pytest.raises(TypeTransformerFailedError, match="must be a map"):
        SnapshotTransformer().to_python_value(ctx, _literal("x", str), Snapshot)  # type: ignore[arg-type]


def test_cache_key_follows_content_not_store_or_commit(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.csv": b"1,2\n" * 100, "d/b.bin": os.urandom(5000)})
    one, two = Repository.init(str(tmp_path / "one")), Repository.init(str(tmp_path / "two"))
    c1 = one.snapshot(str(src), "main", "first upload").commit
    c2 = two.snapshot(str(src), "main", "same data, another store").commit
    a, b = Snapshot.of(one, c1), Snapshot.of(two, c2)
    assert a.commit != b.commit and a.url != b.url and a.content == b.content
    assert _key(a, Snapshot) == _key(b, Snapshot)
    (src / "a.csv").write_bytes(b"1,3\n" * 100)
    changed = Snapshot.of(one, one.snapshot(str(src), "main").commit)
    assert changed.url == a.url and _key(changed, Snapshot) != _key(a, Snapshot)
    # narrowing to a path keys on that path's content: d/ did not change
    assert _key(changed.select(path="d"), Snapshot) == _key(a.select(path="d"), Snapshot)
    assert _key(changed.select(path="d"), Snapshot) != _key(a, Snapshot)


# -- Flyte's cache, end to end ---------------------------------------------------------------------------------


def _counting_task(counter: Path):  # type: ignore[no-untyped-def]
    @task(cache=Cache(version="1"))
    def mean_heart_rate(data: Snapshot) -> float:
        with open(counter, "a") as f:
            f.write("ran\n")
        rows = data.read_table()
        return float(sum(rows.column("hr").to_pylist())) / len(rows)

    @workflow
    def wf(data: Snapshot) -> float:
        return mean_heart_rate(data=data)

    return wf


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_cached_task_skips_same_content_from_any_store(flyte_home: Path, tmp_path: Path, s3_env: str) -> None:
    counter = tmp_path / "runs.txt"
    wf = _counting_task(counter)
    key = ["pid", "ts"]
    repo = Repository.init(str(tmp_path / "edge"))
    repo.write_table("main", "vitals", _readings(210), key=key)
    first = Snapshot.of(repo, "main", table="vitals")

    assert wf(data=first) == pytest.approx(63.0) and _runs(counter) == 1  # miss: the body runs
    assert wf(data=first) == pytest.approx(63.0) and _runs(counter) == 1  # same snapshot: hit, body skipped

    repo.write_table("main", "vitals", _readings(210, hr=70), key=key, mode="overwrite")  # a new batch, same place
    second = Snapshot.of(repo, "main", table="vitals")
    assert second.url == first.url and second.table == first.table
    assert wf(data=second) == pytest.approx(73.0) and _runs(counter) == 2  # miss

    # The same rows uploaded again, separately, to another local path and to S3: new commits, same content.
    for url in (str(tmp_path / "elsewhere"), f"s3://{s3_env}/heart"):
        other = Repository.init(url)
        other.write_table("main", "vitals", _readings(210, hr=70), key=key, message="re-upload")
        again = Snapshot.of(other, "main", table="vitals")
        assert again.commit != second.commit and again.url != second.url and again.content == second.content
        assert wf(data=again) == pytest.approx(73.0) and _runs(counter) == 2  # hit: the body does not run

    assert (flyte_home / ".flyte" / "local-cache").is_dir()


def test_cached_task_on_a_delta_keys_on_the_change(flyte_home: Path, tmp_path: Path) -> None:
    counter = tmp_path / "runs.txt"

    @task(cache=Cache(version="1"))
    def changed_rows(delta: Delta) -> int:
        with open(counter, "a") as f:
            f.write("ran\n")
        return len(delta.rows())

    @workflow
    def wf(delta: Delta) -> int:
        return changed_rows(delta=delta)

    deltas = []
    for name in ("a", "b"):
        repo = Repository.init(str(tmp_path / name))
        base = repo.write_table("main", "vitals", _readings(100), key=["pid", "ts"], message=name).commit
        repo.write_table("main", "vitals", pa.table({"pid": ["p001", "p500"], "ts": [1, 500], "hr": [99, 80]}))
        deltas.append(Delta.of(repo, base, "main", "vitals"))
    assert deltas[0].base != deltas[1].base and deltas[0].target_content == deltas[1].target_content
    assert wf(delta=deltas[0]) == 2 and wf(delta=deltas[1]) == 2 and _runs(counter) == 1


# -- values inside tasks ---------------------------------------------------------------------------------------


def test_snapshot_reads_tables_and_files_and_delta_lists_changed_rows(repo: Repository, tmp_path: Path) -> None:
    base = repo.write_table("main", "vitals", _readings(10), key=["pid", "ts"]).commit
    repo.write_table("main", "vitals", pa.table({"pid": ["p002", "p100"], "ts": [2, 100], "hr": [120, 61]}))
    repo.write_table("main", "vitals", pa.table({"pid": ["p003"], "ts": [3]}), mode="delete")
    repo.commit_changes("main", {"docs/a.txt": b"A"})

    @task
    def inspect(data: Snapshot, delta: Delta) -> dict:
        rows = delta.rows()
        return {
            "rows": len(data.read_table("vitals")),
            "file": data.read_file("docs/a.txt").decode(),
            "changes": sorted((r["pid"], r[CHANGE_COLUMN], r["hr"]) for r in rows.to_pylist()),
            "counts": delta.counts,
        }

    @workflow
    def wf(data: Snapshot, delta: Delta) -> dict:
        return inspect(data=data, delta=delta)

    out = wf(data=Snapshot.of(repo, "main"), delta=Delta.of(repo, base, "main", "vitals"))
    assert out["rows"] == 10 and out["file"] == "A"
    assert out["changes"] == [["p002", "update", 120], ["p003", "delete", 63], ["p100", "insert", 61]]
    assert out["counts"] == {"inserted": 1, "updated": 1, "deleted": 1}
    out_dir = Snapshot.of(repo, "main", path="docs").checkout(tmp_path / "co")
    assert (Path(out_dir) / "a.txt").read_bytes() == b"A"


def test_a_table_is_keyed_by_its_table_object(tmp_path: Path) -> None:
    """Equal rows written the same way (or by overwrite) give one id; reached through a changeset, another id —
    a cache miss, never a wrong hit (docs/flyte.md)."""
    key = ["pid", "ts"]
    ids = []
    for name, writes in {
        "fresh": [(_readings(30, hr=70), "upsert")],
        "overwritten": [(_readings(30), "upsert"), (_readings(30, hr=70), "overwrite")],
        "upserted": [(_readings(30), "upsert"), (_readings(30, hr=70), "upsert")],
    }.items():
        repo = Repository.init(str(tmp_path / name))
        for rows, mode in writes:
            repo.write_table("main", "vitals", rows, key=key, mode=mode)
        assert repo.read_table("main", "vitals").equals(_readings(30, hr=70))
        ids.append(Snapshot.of(repo, "main", table="vitals").content)
    assert ids[0] == ids[1] != ids[2]


def test_values_pickle_without_their_open_repository(repo: Repository) -> None:
    import pickle

    snap = Snapshot.of(repo, "main")
    snap.repo()  # opened and remembered on the value
    assert "_repo" in snap.__dict__
    back = pickle.loads(pickle.dumps(snap))
    assert back == snap and "_repo" not in back.__dict__
    assert back.repo().url == repo.url
