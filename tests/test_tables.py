"""Tables: writes, reads, streaming and diffs agree with a plain-Python model; bad input is refused cleanly;
storage is shared between versions; concurrent writers compose.

The property tests (hypothesis) run random histories of upserts (full and partial rows), appends, deletes
and overwrites on two branches against `table_model`, with tiny fragments and early compaction as well as the
defaults. Set DACFLOW_TABLE_EXAMPLES to run more examples; a failure prints the shrunk history and a
`@reproduce_failure` blob, the seeded tests print their seed (replay with DACFLOW_TEST_SEED).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import dacflow
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dacflow import Repository, UsageError
from dacflow.tables import SchemaConflictError, TableInputError, engine
from dacflow.tables.diff import apply_diff
from hypothesis import event, given
from hypothesis import strategies as st
from table_model import (
    ALL_KEYS,
    KEY,
    SCHEMA,
    VALUES,
    ExpectedError,
    State,
    Write,
    assert_table_equals,
    base_states,
    model_diff,
    model_write,
    property_settings,
    rows_table,
    state_table,
    to_state,
    writes,
)

PROPERTY = property_settings(12)
#: Fragment parameters that cut a table of a dozen rows into several fragments.
TINY = {"min_rows": 1, "mask_bits": 1, "max_rows": 3}
LAYOUTS = {
    "default": (dict(engine.DEFAULT_PARAMS), engine.COMPACT_AFTER),
    "tiny-fragments-compact-often": (TINY, 3),
}


def read_state(repo: Repository, ref: str, name: str = "t") -> State:
    return to_state(repo.read_table(ref, name))


def streamed(repo: Repository, ref: str, name: str = "t", batch_rows: int = 65536) -> pa.Table:
    batches = list(repo.iter_table(ref, name, batch_rows=batch_rows))
    assert all(len(b) > 0 for b in batches), "iter_table yielded an empty batch"
    assert all(len(b) <= batch_rows for b in batches)
    schema = repo.table_schema(ref, name)[0]
    return pa.Table.from_batches(batches, schema=schema)


def check_diff(repo: Repository, a: str, state_a: State, b: str, state_b: State, name: str = "t") -> None:
    """diff(a, b) holds exactly the model's inserted/updated/deleted rows, and applied to a it gives b."""
    d = repo.diff(a, b, table=name)
    want = model_diff(state_a, state_b)
    where = f"diff({a[:10]}, {b[:10]})"
    assert d.counts == {n: len(want[n]) for n in ("inserted", "updated", "deleted")}, where
    for part in ("inserted", "updated", "updated_before", "deleted"):
        assert to_state(getattr(d, part)) == want[part], (where, part)
    old = repo.read_table(a, name) if repo.table_object(a, name) is not None else SCHEMA.empty_table()
    assert_table_equals(apply_diff(old, d, KEY), state_b, where + " applied")


def do_write(repo: Repository, branch: str, state: State, w: Write, tmp: str, name: str = "t") -> State:
    """Apply `w` to the repository and to the model; check the outcome, stats and what reads return."""
    head = repo.head(branch)
    try:
        want = model_write(state, w)
    except ExpectedError as why:
        with pytest.raises(TableInputError):
            repo.write_table(branch, name, w.data(tmp), KEY, w.mode, dedupe="last" if w.dedupe else None)
        assert repo.head(branch) == head, f"a refused write ({why}) moved the branch"
        return state
    res = repo.write_table(branch, name, w.data(tmp), KEY, w.mode, dedupe="last" if w.dedupe else None)
    for k, v in want.stats.items():
        assert res.stats[k] == v, (k, res.stats, want.stats)
    if want.state != state:
        assert res.created and res.commit != head, "a write that changed rows made no commit"
    assert repo.head(branch) == res.commit
    assert_table_equals(repo.read_table(res.commit, name), want.state, f"read after {w.mode}")
    assert_table_equals(streamed(repo, res.commit, name, batch_rows=4), want.state, f"iter after {w.mode}")
    return want.state


# -- 1. properties -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@PROPERTY
@given(
    base=base_states(),
    history=st.lists(
        st.tuples(st.sampled_from("ab"), writes(min_rows=1, keys=ALL_KEYS[::2]) | writes()), min_size=3, max_size=8
    ),
)
def test_reads_and_diffs_follow_the_model(layout: str, base: State, history: list[tuple[str, Write]]) -> None:
    params, compact_after = LAYOUTS[layout]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "DEFAULT_PARAMS", dict(params))
        mp.setattr(engine, "COMPACT_AFTER", compact_after)
        repo = Repository.init(os.path.join(tmp, "repo"))
        repo.write_table("main", "t", state_table(base), KEY, "overwrite")
        c0 = repo.head("main")
        assert_table_equals(repo.read_table(c0, "t"), base, "base")
        repo.branch("a")
        repo.branch("b")
        states = {"a": base, "b": base}
        versions: dict[str, list[tuple[str, State]]] = {"a": [(c0, base)], "b": [(c0, base)]}
        for side, w in history:
            states[side] = do_write(repo, side, states[side], w, tmp)
            head = repo.head(side)
            if head != versions[side][-1][0]:
                versions[side].append((head, states[side]))
        # Old versions still read as they were.
        for side in "ab":
            for commit, state in versions[side]:
                assert_table_equals(repo.read_table(commit, "t"), state, f"re-read {side}@{commit[:10]}")
        # Consecutive versions, and every pair among the base and both branches' final versions (through
        # different bases whenever an overwrite or a compaction happened on one side).
        for side in "ab":
            for (c1, s1), (c2, s2) in zip(versions[side], versions[side][1:], strict=False):
                check_diff(repo, c1, s1, c2, s2)
        picks = {c0: base, **{c: s for side in "ab" for c, s in versions[side][-1:]}}
        event(f"distinct versions compared: {len(picks)}")
        event(f"overwrite on a side: {any(w.mode == 'overwrite' for _, w in history)}")
        for c1, s1 in picks.items():
            for c2, s2 in picks.items():
                check_diff(repo, c1, s1, c2, s2)


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@property_settings(8)
@given(base=base_states(), ours=st.lists(writes(), max_size=3), over=writes(modes=("overwrite",), max_rows=10))
def test_diff_through_an_overwrite(layout: str, base: State, ours: list[Write], over: Write) -> None:
    """One side rewrites the table (a new base run) while the other adds changesets: both diffs still hold."""
    params, compact_after = LAYOUTS[layout]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "DEFAULT_PARAMS", dict(params))
        mp.setattr(engine, "COMPACT_AFTER", compact_after)
        repo = Repository.init(os.path.join(tmp, "repo"))
        repo.write_table("main", "t", state_table(base), KEY, "overwrite")
        c0 = repo.head("main")
        repo.branch("a")
        state_a = base
        for w in ours:
            state_a = do_write(repo, "a", state_a, w, tmp)
        state_b = do_write(repo, "main", base, over, tmp)
        c1 = repo.head("main")
        # An upsert after the overwrite: changesets on a different base.
        extra = Write("upsert", [(ALL_KEYS[0], {"x": 5, "y": "new", "z": None})], ("x", "y"))
        state_c = do_write(repo, "main", state_b, extra, tmp)
        tips = [(c0, base), (repo.head("a"), state_a), (c1, state_b), (repo.head("main"), state_c)]
        for a, sa in tips:
            for b, sb in tips:
                check_diff(repo, a, sa, b, sb)


def test_compaction_folds_changesets_into_a_new_base(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write that reaches COMPACT_AFTER changesets folds them (and itself) into a new base run."""
    monkeypatch.setattr(engine, "COMPACT_AFTER", 4)
    state = {("p", i): {"x": i, "y": None, "z": None} for i in range(20)}
    repo.write_table("main", "t", state_table(state), KEY, "overwrite")
    versions = [(repo.head("main"), dict(state))]
    for step in range(6):
        state = {**state, ("p", step): {"x": -step, "y": "u", "z": None}, ("q", step): {"x": 0, "y": None, "z": 1.5}}
        rows = [(("p", step), state[("p", step)]), (("q", step), state[("q", step)])]
        res = repo.write_table("main", "t", rows_table(rows, VALUES), KEY, "upsert")
        table = repo.table_object("main", "t")
        assert res.stats["compacted"] == (step == 3) and len(table.changes) == (step + 1) % 4
        assert_table_equals(repo.read_table("main", "t"), state, f"step {step}")
        versions.append((res.commit, dict(state)))
    for c1, s1 in versions[::2]:
        for c2, s2 in versions[1::2]:
            check_diff(repo, c1, s1, c2, s2)
    assert not repo.check().problems


def test_diff_against_a_version_without_the_table(repo: Repository, tmp_path: Path) -> None:
    before = repo.head("main")
    rows = {("a", 1): {"x": 1, "y": None, "z": 0.5}, ("b", 2): {"x": None, "y": "q", "z": None}}
    repo.write_table("main", "t", state_table(rows), KEY, "overwrite")
    check_diff(repo, before, {}, repo.head("main"), rows)
    check_diff(repo, repo.head("main"), rows, before, {})
    # export writes the four parts as Parquet files that read back as the diff.
    d = repo.diff(before, "main", table="t")
    paths = d.export(str(tmp_path / "export"))
    assert sorted(paths) == ["deleted", "inserted", "updated", "updated_before"]
    for part, path in paths.items():
        assert pq.read_table(path).equals(getattr(d, part)), part
    assert to_state(pq.read_table(paths["inserted"])) == rows
    repo.commit_changes("main", {"t": None})
    assert repo.diff("main~1", "main", table="t").counts == {"inserted": 0, "updated": 0, "deleted": 2}
    with pytest.raises(dacflow.RefNotFoundError):
        repo.diff(before, "main", table="t")


# -- 2. writes that must be refused, and schema evolution ---------------------------------------------------
def _rows(n: int, start: int = 0, pid: str = "p") -> pa.Table:
    rows = [((pid, i), {"x": i, "y": f"v{i}", "z": i / 2}) for i in range(start, start + n)]
    return rows_table(rows, VALUES)


@pytest.fixture
def table_repo(repo: Repository) -> Repository:
    repo.write_table("main", "t", _rows(10), KEY, "overwrite")
    return repo


def _refused(
    repo: Repository,
    exc: type[Exception],
    data: Any,
    *,
    key: list[str] | None = KEY,
    mode: str = "upsert",
    name: str = "t",
    **kwargs: Any,
) -> Exception:
    """The write raises `exc`, which is a UsageError (or SchemaConflictError), and nothing is committed."""
    head = repo.head("main")
    before = repo.read_table("main", name) if repo.table_object("main", name) is not None else None
    with pytest.raises(exc) as info:
        repo.write_table("main", name, data, key, mode, **kwargs)
    assert repo.head("main") == head, "a refused write moved the branch"
    if before is not None:
        assert repo.read_table("main", name).equals(before)
    assert str(info.value).strip() and "\n" not in str(info.value), "errors are one clear line"
    return info.value


def test_append_of_an_existing_key_is_refused(table_repo: Repository) -> None:
    data = rows_table([(("p", 3), {"x": 99}), (("p", 50), {"x": 1})], ["x"])
    err = _refused(table_repo, TableInputError, data, mode="append")
    assert isinstance(err, UsageError)
    assert "already exist" in str(err) and "upsert" in str(err) and "'p', 3" in str(err)
    # Appending only new keys is fine (through a Branch handle, which returns the commit id).
    branch = table_repo.branch("main")
    cid = branch.write_table("t", rows_table([(("p", 50), {"x": 1})], ["x"]), mode="append")
    assert cid == table_repo.head("main") == branch.head
    assert to_state(branch.read_table("t"))[("p", 50)] == {"x": 1, "y": None, "z": None}


def test_null_missing_and_float_keys_are_refused(table_repo: Repository) -> None:
    nulls = pa.table({"pid": pa.array(["p", None]), "ts": pa.array([1, 2]), "x": pa.array([1, 2])})
    err = _refused(table_repo, TableInputError, nulls)
    assert "pid" in str(err) and "null" in str(err)
    err = _refused(table_repo, TableInputError, pa.table({"pid": ["p"], "x": [1]}))
    assert "ts" in str(err) and "not in the data" in str(err)
    floats = pa.table({"k": pa.array([1.5]), "x": pa.array([1])})
    err = _refused(table_repo, TableInputError, floats, key=["k"], name="f")
    assert "floating" in str(err)
    assert table_repo.table_object("main", "f") is None
    err = _refused(table_repo, TableInputError, pa.table({"k": [1]}), key=None, name="new")
    assert "key" in str(err)
    keys_only = pa.table({"pid": ["p"], "ts": [1]})
    err = _refused(table_repo, TableInputError, keys_only, mode="delete", name="nope")
    assert "does not exist" in str(err)


def test_duplicate_keys_are_refused_or_deduplicated(table_repo: Repository) -> None:
    dup = rows_table([(("p", 1), {"x": 10}), (("q", 1), {"x": 11}), (("p", 1), {"x": 12})], ["x"])
    for mode in ("upsert", "append", "overwrite", "delete"):
        err = _refused(table_repo, TableInputError, dup, mode=mode)
        assert "duplicate key" in str(err) and "('p', 1)" in str(err) and "dedupe" in str(err)
    res = table_repo.write_table("main", "t", dup, KEY, "upsert", dedupe="last")
    assert res.stats["updated"] == 1 and res.stats["inserted"] == 1
    state = read_state(table_repo, "main")
    assert state[("p", 1)]["x"] == 12 and state[("q", 1)]["x"] == 11
    assert state[("p", 1)]["y"] == "v1"  # a partial upsert keeps the unmentioned columns


def test_reserved_names_and_bad_arguments_are_refused(table_repo: Repository) -> None:
    bad = pa.table({"pid": ["p"], "ts": [1], "__dacflow_op": [1]})
    err = _refused(table_repo, TableInputError, bad)
    assert "__dacflow_op" in str(err) and "reserved" in str(err)
    twice = pa.Table.from_arrays(
        [pa.array(["p"]), pa.array([1]), pa.array([1]), pa.array([2])], names=["pid", "ts", "x", "x"]
    )
    err = _refused(table_repo, TableInputError, twice)
    assert "duplicate column" in str(err)
    err = _refused(table_repo, UsageError, _rows(1), mode="merge")
    assert "mode" in str(err)
    err = _refused(table_repo, TableInputError, {"pid": ["p"]})
    assert "dict" in str(err)


def test_unreadable_inputs_are_refused(table_repo: Repository, tmp_path: Path) -> None:
    txt = tmp_path / "rows.txt"
    txt.write_text("pid,ts\np,1\n")
    err = _refused(table_repo, TableInputError, str(txt))
    assert "rows.txt" in str(err) and "not a table file" in str(err)
    corrupt = tmp_path / "bad.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet at all" * 10)
    err = _refused(table_repo, TableInputError, str(corrupt))
    assert "bad.parquet" in str(err)
    good = tmp_path / "good.parquet"
    pq.write_table(_rows(3, start=100), good)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(good.read_bytes()[:-20])
    err = _refused(table_repo, TableInputError, str(truncated))
    assert "truncated.parquet" in str(err)
    err = _refused(table_repo, TableInputError, [str(good), str(tmp_path / "missing.parquet")])
    assert "missing.parquet" in str(err)
    csv = tmp_path / "bad.csv"
    csv.write_bytes(b'pid,ts\n"p,1\nq,2,3,4\n')
    err = _refused(table_repo, TableInputError, str(csv))
    assert "bad.csv" in str(err)
    for e in (err,):
        assert isinstance(e, UsageError)
    # Readable files of both kinds do work, several at once.
    other = tmp_path / "more.csv"
    other.write_text("pid,ts,x,y,z\nq,1,5,w,0.25\n")
    table_repo.write_table("main", "t", [str(good), str(other)], KEY, "upsert")
    state = read_state(table_repo, "main")
    assert state[("p", 101)] == {"x": 101, "y": "v101", "z": 50.5}
    assert state[("q", 1)] == {"x": 5, "y": "w", "z": 0.25}


def test_added_column_reads_back_with_nulls_and_merges(table_repo: Repository) -> None:
    repo = table_repo
    repo.branch("feature")
    upd = pa.table({"pid": ["p", "p"], "ts": [2, 100], "w": pa.array([True, False])})
    res = repo.write_table("feature", "t", upd, KEY, "upsert")
    assert res.stats["updated"] == 1 and res.stats["inserted"] == 1
    schema, key = repo.table_schema("feature", "t")
    assert key == KEY and schema.names == [*SCHEMA.names, "w"] and schema.field("w").type == pa.bool_()
    rows = {(r["pid"], r["ts"]): r for r in repo.read_table("feature", "t").to_pylist()}
    assert rows[("p", 2)] == {"pid": "p", "ts": 2, "x": 2, "y": "v2", "z": 1.0, "w": True}
    assert rows[("p", 100)] == {"pid": "p", "ts": 100, "x": None, "y": None, "z": None, "w": False}
    assert all(rows[("p", i)]["w"] is None for i in range(10) if i != 2)
    # Meanwhile main changes other rows; the merge keeps both, with the new column.
    repo.write_table("main", "t", rows_table([(("p", 5), {"x": -5})], ["x"]), KEY, "upsert")
    result = repo.merge("feature", into="main")
    assert result.commit and not result.conflict_list
    merged = {(r["pid"], r["ts"]): r for r in repo.read_table("main", "t").to_pylist()}
    assert merged[("p", 5)]["x"] == -5 and merged[("p", 5)]["w"] is None
    assert merged[("p", 2)]["w"] is True and merged[("p", 100)]["w"] is False
    assert repo.table_schema("main", "t")[0].names == [*SCHEMA.names, "w"]
    diff = repo.diff("feature", "main", table="t")
    assert diff.counts == {"inserted": 0, "updated": 1, "deleted": 0}


def test_incompatible_type_change_is_refused(table_repo: Repository) -> None:
    for text in ("one", "7"):  # even a string that would parse as an integer
        as_text = pa.table({"pid": ["p"], "ts": [1], "x": [text]})
        for mode in ("upsert", "append", "overwrite"):
            err = _refused(table_repo, SchemaConflictError, as_text, mode=mode)
            assert "'x'" in str(err) and getattr(err, "column", None) == "x"
            assert "int64" in str(err) and "string" in str(err)
    # A lossless widening is fine (int32 into int64).
    small = pa.table({"pid": ["p"], "ts": [1], "x": pa.array([7], pa.int32())})
    table_repo.write_table("main", "t", small, KEY, "upsert")
    assert read_state(table_repo, "main")[("p", 1)]["x"] == 7
    assert table_repo.table_schema("main", "t")[0].field("x").type == pa.int64()


def test_narrowing_values_that_do_not_fit_are_refused(repo: Repository) -> None:
    """A table created with int32 accepts int64 rows only while the values fit."""
    t = pa.table({"k": pa.array([1, 2]), "v": pa.array([1, 2], pa.int32())})
    repo.write_table("main", "n", t, ["k"], "overwrite")
    for mode in ("upsert", "append", "overwrite"):
        big = pa.table({"k": pa.array([3]), "v": pa.array([2**40], pa.int64())})
        err = _refused(repo, SchemaConflictError, big, key=["k"], mode=mode, name="n")
        assert "'v'" in str(err) and "int32" in str(err) and getattr(err, "column", None) == "v"
    repo.write_table("main", "n", pa.table({"k": [3], "v": pa.array([5], pa.int64())}), ["k"], "upsert")
    assert repo.read_table("main", "n").column("v").to_pylist() == [1, 2, 5]


def test_key_mismatch_is_refused(table_repo: Repository) -> None:
    err = _refused(table_repo, SchemaConflictError, _rows(1), key=["pid"])
    assert "key" in str(err)
    # Key given again (same) or omitted (taken from the table) is fine.
    table_repo.write_table("main", "t", _rows(1, start=50), None, "upsert")
    table_repo.write_table("main", "t", _rows(1, start=51), ["pid", "ts"], "upsert")
    assert len(table_repo.read_table("main", "t")) == 12


def test_a_file_is_not_a_table(repo: Repository) -> None:
    repo.commit_changes("main", {"f.txt": b"hello"})
    with pytest.raises(UsageError):
        repo.read_table("main", "f.txt")
    with pytest.raises(dacflow.RefNotFoundError):
        repo.read_table("main", "absent")


# -- 3. storage ----------------------------------------------------------------------------------------------
def _big(n: int, seed: int) -> pa.Table:
    gen = np.random.default_rng(seed)
    ids = np.arange(n)
    pid = pa.array(np.char.add("u", np.char.zfill((ids // 100).astype(str), 6)))  # rows in key order
    return pa.table(
        {
            "pid": pid,
            "ts": pa.array(ids % 100),
            "x": pa.array(gen.integers(0, 1 << 40, n)),
            "y": pa.array(gen.random(n)),
            "s": pa.array(gen.integers(0, 1 << 30, n).astype(str)),
        }
    )


def _parquet_size(table: pa.Table) -> int:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return len(buf.getvalue())


def test_small_upsert_stores_about_the_changed_rows(repo: Repository, rng: Any) -> None:
    n = 200_000
    base = _big(n, rng.randrange(1 << 30))
    first = repo.write_table("main", "big", base, KEY, "overwrite")
    assert first.stats["inserted"] == n and first.stats["fragments_new"] > 3
    idx = np.array(sorted(rng.sample(range(n), n // 100)))
    changed = base.take(pa.array(idx))
    changed = changed.set_column(2, "x", pc.add(changed.column("x"), 1))
    changed = changed.set_column(4, "s", pc.binary_join_element_wise(changed.column("s"), "!", ""))
    res = repo.write_table("main", "big", changed, KEY, "upsert")
    assert res.stats["updated"] == len(idx) and res.stats["inserted"] == 0
    own = _parquet_size(changed)
    print(f"1% upsert stored {res.stats['bytes_new']} bytes; the changed rows alone are {own} bytes")
    assert 0 < res.stats["bytes_new"] <= 3 * own
    assert res.stats["fragments_reused"] == 0 or res.stats["bytes_new"] > 0
    # A partial upsert of one column: still about the changed cells, not the table.
    part = changed.select(["pid", "ts", "x"]).set_column(2, "x", pc.add(changed.column("x"), 1))
    res2 = repo.write_table("main", "big", part, KEY, "upsert")
    assert res2.stats["updated"] == len(idx)
    assert res2.stats["bytes_new"] <= 3 * _parquet_size(changed)
    got = repo.read_table("main", "big")
    assert len(got) == n
    want_x = base.column("x").to_numpy().copy()
    want_x[idx] += 2
    assert np.array_equal(got.column("x").to_numpy(), want_x)


def test_overwrite_stores_a_small_change_as_a_changeset(repo: Repository) -> None:
    """Overwriting a table with a few rows changed (a re-snapshotted landing area) stores one small changeset:
    the base fragments stay, and what a transfer must send follows the change, not the table."""
    n = 200_000
    base = _big(n, 1)
    first = repo.write_table("main", "big", base, KEY, "overwrite")
    total = first.stats["fragments_new"]
    assert total >= 4
    ids = [f.id for f in repo.table_object("main", "big").base]
    table_bytes = first.stats["bytes_new"]
    x = base.column("x").to_numpy().copy()
    x[n // 2] += 1
    changed = base.set_column(2, "x", pa.array(x))
    res = repo.write_table("main", "big", changed, KEY, "overwrite")
    print("one changed value:", res.stats)
    assert (res.stats["inserted"], res.stats["updated"], res.stats["deleted"]) == (0, 1, 0)
    assert res.stats["fragments_new"] == 1 and res.stats["bytes_new"] < table_bytes / 100
    assert [f.id for f in repo.table_object("main", "big").base] == ids
    keep = np.ones(n, bool)
    keep[n // 10] = False
    extra = pa.table({"pid": ["u000200"], "ts": [1000], "x": [1], "y": [0.5], "s": ["new"]}, schema=base.schema)
    final = pa.concat_tables([changed.filter(pa.array(keep)), extra])
    res = repo.write_table("main", "big", final, KEY, "overwrite")
    print("one row deleted, one inserted:", res.stats)
    assert (res.stats["inserted"], res.stats["updated"], res.stats["deleted"]) == (1, 0, 1)
    assert res.stats["bytes_new"] < table_bytes / 100
    order = [(k, "ascending") for k in KEY]
    assert repo.read_table("main", "big").sort_by(order).equals(final.sort_by(order))
    # The same rows again: nothing to commit.
    again = repo.write_table("main", "big", final, KEY, "overwrite")
    assert not again.created and again.commit == res.commit


def test_overwrite_of_most_rows_writes_a_new_base_that_reuses_untouched_fragments(repo: Repository) -> None:
    n = 200_000
    base = _big(n, 1)
    first = repo.write_table("main", "big", base, KEY, "overwrite")
    total = first.stats["fragments_new"]
    x = base.column("x").to_numpy().copy()
    x[n // 4 :] += 1  # three quarters of the rows change: a new base run, cut at the same content boundaries
    res = repo.write_table("main", "big", base.set_column(2, "x", pa.array(x)), KEY, "overwrite")
    print("three quarters changed:", res.stats, "of", total)
    table = repo.table_object("main", "big")
    assert not table.changes and res.stats["fragments_reused"] >= total // 4 - 1
    # Rewriting the first version shares every fragment with it: nothing new at all.
    res = repo.write_table("main", "big", base, KEY, "overwrite")
    assert res.stats["fragments_new"] == 0 and res.stats["bytes_new"] == 0


def test_same_data_same_fragments(repo: Repository, tmp_path: Path, rng: Any) -> None:
    data = _big(50_000, rng.randrange(1 << 30))
    shuffled = data.take(pa.array(rng.sample(range(len(data)), len(data))))
    repo.branch("a")
    repo.branch("b")
    repo.write_table("a", "t", data, KEY, "overwrite")
    repo.write_table("b", "t", shuffled, KEY, "overwrite")
    other = Repository.init(str(tmp_path / "other"))
    other.write_table("main", "elsewhere/t", data, KEY, "overwrite")
    ta, tb = repo.table_object("a", "t"), repo.table_object("b", "t")
    tc = other.table_object("main", "elsewhere/t")
    assert ta is not None and tb is not None and tc is not None
    assert [f.id for f in ta.base] == [f.id for f in tb.base] == [f.id for f in tc.base]
    # The same upsert on both branches stores the same changeset fragments too.
    upd = data.slice(100, 50).set_column(2, "x", pa.array(np.arange(50)))
    ra = repo.write_table("a", "t", upd, KEY, "upsert")
    rb = repo.write_table("b", "t", upd, KEY, "upsert")
    assert rb.stats["bytes_new"] == 0 and rb.stats["fragments_reused"] == ra.stats["fragments_new"]
    assert repo.table_object("a", "t") == repo.table_object("b", "t")
    assert repo.entry("a", "t").ref == repo.entry("b", "t").ref


# -- 4. streaming --------------------------------------------------------------------------------------------
def test_iter_table_matches_read_table_through_many_changesets(
    repo: Repository, rng: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inserts before the first fragment, between fragments and after the last, deletes (the first and last
    rows, a whole fragment), re-inserts and updates, in 30 changesets on one base: iter_table streams exactly
    read_table's rows, in key order, and both equal the model."""
    monkeypatch.setattr(engine, "DEFAULT_PARAMS", {"min_rows": 16, "mask_bits": 4, "max_rows": 64})
    schema = pa.schema([("n", pa.int64()), ("g", pa.string()), ("v", pa.int64()), ("w", pa.string())])
    key = ["n", "g"]

    def table_of(rows: dict[tuple[int, str], dict[str, Any]], cols: list[str]) -> pa.Table:
        items = sorted(rows.items())
        data: dict[str, list[Any]] = {"n": [k[0] for k, _ in items], "g": [k[1] for k, _ in items]}
        for c in cols:
            data[c] = [v.get(c) for _, v in items]
        return pa.table(data, schema=pa.schema([schema.field(c) for c in ["n", "g", *cols]]))

    model = {(n, g): {"v": n, "w": f"{g}{n}"} for g in ("b", "c") for n in range(0, 800, 2)}
    repo.write_table("main", "s", table_of(model, ["v", "w"]), key, "overwrite")
    frags = repo.table_object("main", "s").base
    assert len(frags) >= 10, len(frags)
    bounds = [(tuple(f.min), tuple(f.max)) for f in frags]

    def between(i: int) -> tuple[int, str]:
        """A key after fragment i's last key and before fragment i+1's first."""
        (n, g), nxt = bounds[i][1], bounds[i + 1][0]
        k = (n, g + "b") if nxt[0] == n else (n + 1, "a")
        assert bounds[i][1] < k < nxt
        return k

    def check(where: str) -> None:
        read = repo.read_table("main", "s")
        for batch_rows in (7, 65536):
            got = streamed(repo, "main", "s", batch_rows=batch_rows)
            assert got.equals(read), where
        want = [{"n": k[0], "g": k[1], **v} for k, v in sorted(model.items())]
        assert read.to_pylist() == want, where

    edits = 0
    for step in range(30):
        kind = step % 5
        rows: dict[tuple[int, str], dict[str, Any]] = {}
        if kind == 0:  # inserts before the first key, between fragments and after the last
            rows[(-1 - step, "z")] = {"v": -1, "w": "first"}
            rows[between(rng.randrange(len(bounds) - 1))] = {"v": step, "w": "between"}
            rows[(10_000 + step, "a")] = {"v": step, "w": "last"}
        elif kind == 1:  # deletes: random keys, the first and the last rows, a whole fragment
            live = sorted(model)
            doomed = set(rng.sample(live, 20)) | {live[0], live[-1]}
            if step == 1:
                lo, hi = bounds[len(bounds) // 2]
                doomed |= {k for k in live if lo <= k <= hi}
            done = repo.write_table("main", "s", table_of(dict.fromkeys(doomed, {}), []), key, "delete")
            for k in doomed:
                del model[k]
            edits += done.created
            continue
        elif kind == 2:  # partial updates of one column
            for k in rng.sample(sorted(model), 30):
                rows[k] = {"v": model[k]["v"] + 1000}
        elif kind == 3:  # re-insert the first keys of fragments (some deleted), and keys right after them
            for lo, _hi in rng.sample(bounds, 3):
                rows[lo] = {"v": 1, "w": "again"}
                rows[(lo[0], lo[1] + "a")] = {"v": 2, "w": "next"}
        else:  # full updates and inserts spread out
            for k in rng.sample(sorted(model), 15):
                rows[k] = {"v": -k[0], "w": None}
            for _ in range(5):
                rows[(rng.randrange(-10, 900) * 2 + 1, rng.choice("bc"))] = {"v": 0, "w": "x"}
        cols = sorted({c for v in rows.values() for c in v})
        done = repo.write_table("main", "s", table_of(rows, cols), key, "upsert")
        for k, v in rows.items():
            model[k] = {**model.get(k, {"v": None, "w": None}), **v}
        edits += done.created  # a write that changes nothing (values already there) makes no changeset
        if step % 10 == 9:
            check(f"after step {step}")
    table = repo.table_object("main", "s")
    assert len(table.changes) == edits >= 25 and table.base == frags  # still one base with many changesets
    check("final")


def test_iter_table_of_an_emptied_and_refilled_table(repo: Repository) -> None:
    empty = pa.table({"k": pa.array([], pa.int64()), "v": pa.array([], pa.string())})
    repo.write_table("main", "e", empty, ["k"], "overwrite")
    assert len(repo.read_table("main", "e")) == 0 and list(repo.iter_table("main", "e")) == []
    repo.write_table("main", "e", pa.table({"k": [3, 1, 2], "v": ["c", "a", "b"]}), ["k"], "upsert")
    repo.write_table("main", "e", pa.table({"k": [2]}), ["k"], "delete")
    assert streamed(repo, "main", "e").to_pylist() == [{"k": 1, "v": "a"}, {"k": 3, "v": "c"}]
    repo.write_table("main", "e", pa.table({"k": [1, 3]}), ["k"], "delete")
    assert len(repo.read_table("main", "e")) == 0 and list(repo.iter_table("main", "e")) == []


# -- 5. concurrency ------------------------------------------------------------------------------------------
def _writer_rows(w: int, j: int) -> pa.Table:
    rows = [((f"w{w}", j * 10 + i), {"x": w * 1000 + j, "y": f"w{w}"}) for i in range(10)]
    return rows_table(rows, ["x", "y"])


WORKER = r"""
import sys
import pyarrow as pa
from dacflow import Repository
repo_path, w, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
repo = Repository.open(repo_path)
print("ready", flush=True)
sys.stdin.readline()
for j in range(count):
    rows = [(f"w{w}", j * 10 + i) for i in range(10)]
    t = pa.table({"pid": [r[0] for r in rows], "ts": [r[1] for r in rows], "x": [w * 1000 + j] * 10,
                  "y": [f"w{w}"] * 10})
    repo.write_table("main", "t", t, ["pid", "ts"], "upsert")
print("done", flush=True)
"""


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_concurrent_upserts_of_disjoint_keys_compose(repo: Repository, repo_path: Path, how: str) -> None:
    repo.write_table("main", "t", _rows(5), KEY, "overwrite")
    writers, count = (3, 4) if how == "threads" else (2, 4)  # (each process pays for importing pyarrow)
    if how == "threads":
        barrier = threading.Barrier(writers)
        errors: list[BaseException] = []

        def work(w: int) -> None:
            try:
                r = Repository.open(str(repo_path))
                barrier.wait()
                for j in range(count):
                    r.write_table("main", "t", _writer_rows(w, j), KEY, "upsert")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
    else:
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(repo_path), str(w), str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for w in range(writers)
        ]
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, _ = p.communicate(timeout=120)
            assert p.returncode == 0 and out.strip() == "done"
    state = read_state(repo, "main")
    assert len(state) == 5 + writers * count * 10
    for w in range(writers):
        for j in range(count):
            for i in range(10):
                assert state[(f"w{w}", j * 10 + i)] == {"x": w * 1000 + j, "y": f"w{w}", "z": None}
    commits = list(repo.log("main"))
    assert len(commits) == 1 + 1 + writers * count  # root, the first write, one commit per upsert


def test_a_write_that_loses_the_race_runs_again_on_the_new_head(
    repo: Repository, repo_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer updates the same row (another column) between our read and our commit: both survive."""
    repo.write_table("main", "t", _rows(5), KEY, "overwrite")
    real = engine.write_rows
    calls = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        out = real(*args, **kwargs)
        if len(calls) == 1:  # the intruder commits after our rows were computed, before our commit
            other = Repository.open(str(repo_path))
            rows = rows_table([(("p", 1), {"y": "theirs"}), (("p", 77), {"y": "new"})], ["y"])
            other.write_table("main", "t", rows, KEY, "upsert")
        return out

    monkeypatch.setattr(engine, "write_rows", racing)
    res = repo.write_table("main", "t", rows_table([(("p", 1), {"x": -1})], ["x"]), KEY, "upsert")
    assert len(calls) == 3  # ours, the intruder's, ours again on the new head
    state = read_state(repo, "main")
    assert state[("p", 1)] == {"x": -1, "y": "theirs", "z": 0.5}
    assert state[("p", 77)] == {"x": None, "y": "new", "z": None}
    assert res.commit == repo.head("main") and res.parent == repo.resolve("main~1")
    assert res.stats["rows"] == 6


def test_a_write_of_nothing_at_all_is_no_change(repo: Repository) -> None:
    head = repo.head("main")
    res = repo.write_table("main", "t", pa.table({}), ["k"], "upsert")
    assert not res.created and res.commit == head and repo.table_object("main", "t") is None
