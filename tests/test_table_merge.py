"""Merges: tables cell by cell against a reference three-way merge for every policy, files by the
base/ours/theirs table, quarantine branches, schema conflicts, fast-forwards, and a 3-million-row merge.

The property test (hypothesis) draws a base table and random edits on two branches, then merges with each
policy on a fresh copy of ours and compares rows and the reported conflicts with `table_model.model_merge`.
Set DACFLOW_TABLE_EXAMPLES to run more examples; a failure prints the shrunk case and a `@reproduce_failure`
blob, the seeded tests print their seed (replay with DACFLOW_TEST_SEED).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from dacflow import MergeConflictError, RefNotFoundError, Repository
from dacflow.merge import CONFLICTS_TABLE
from dacflow.tables import UNRESOLVED, SchemaConflictError, engine
from hypothesis import event, given
from hypothesis import strategies as st
from table_model import (
    ALL_KEYS,
    KEY,
    ExpectedError,
    State,
    Write,
    assert_table_equals,
    base_states,
    expected_conflicts,
    model_diff,
    model_merge,
    model_write,
    property_settings,
    reported_conflicts,
    rows_table,
    state_table,
    to_state,
    writes,
)

PROPERTY = property_settings(30)
TINY = {"min_rows": 1, "mask_bits": 1, "max_rows": 3}


def pick(c: dict[str, Any]) -> Any:
    """A merge policy callable: theirs for some row conflicts, new values for x and y, theirs for z."""
    if c["column"] == "*":
        return c["theirs"] if c["key"]["ts"] % 2 == 0 else UNRESOLVED
    if c["column"] == "x":
        return (c["ours"] or 0) + (c["theirs"] or 0) + 1
    if c["column"] == "y":
        return UNRESOLVED if c["key"]["pid"] == "a" else f"{c['ours']}|{c['theirs']}"
    return c["theirs"]


POLICIES: dict[str, Any] = {
    "fail": "fail",
    "ours": "ours",
    "theirs": "theirs",
    "latest:x": "latest:x",
    "latest:z": "latest:z",
    "columns-with-default": {"x": "theirs", "y": "latest:z", "*": "ours"},
    "columns-else-fail": {"y": "theirs", "z": "ours"},
    "callable": pick,
}


#: Edits for merges: mostly upserts (full and partial rows) and deletes, on few keys, so that both sides
#: often touch the same rows and cells (and insert the same new keys).
MERGE_KEYS = ALL_KEYS[::2]
EDITS = writes(
    modes=("upsert", "upsert", "upsert", "upsert", "delete", "delete", "append", "overwrite"),
    min_rows=1,
    max_rows=5,
    keys=MERGE_KEYS,
)


def _apply(repo: Repository, branch: str, state: State, w: Write, tmp: str) -> State:
    try:
        want = model_write(state, w).state
    except ExpectedError:
        return state  # refused writes are covered by test_tables; here they just change nothing
    repo.write_table(branch, "t", w.data(tmp), KEY, w.mode, dedupe="last" if w.dedupe else None)
    return want


# -- 1c. merge properties ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fragments", ["default", "tiny"])
@PROPERTY
@given(
    base=base_states(min_rows=3, max_rows=8, keys=MERGE_KEYS),
    ours=st.lists(EDITS, min_size=1, max_size=3),
    theirs=st.lists(EDITS, min_size=1, max_size=3),
)
def test_merge_follows_the_reference_for_every_policy(
    fragments: str, base: State, ours: list[Write], theirs: list[Write]
) -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        if fragments == "tiny":
            mp.setattr(engine, "DEFAULT_PARAMS", dict(TINY))
        repo = Repository.init(os.path.join(tmp, "repo"))
        repo.write_table("main", "t", state_table(base), KEY, "overwrite")
        c0 = repo.head("main")
        repo.branch("o")
        repo.branch("t")
        state_o, state_t = base, base
        for w in ours:
            state_o = _apply(repo, "o", state_o, w, tmp)
        for w in theirs:
            state_t = _apply(repo, "t", state_t, w, tmp)
        head_o, head_t = repo.head("o"), repo.head("t")
        assert head_o is not None and head_t is not None
        _, all_conflicts = model_merge(base, state_o, state_t, "fail")
        event(f"cell conflicts: {sum(c.column != '*' for c in all_conflicts) > 0}")
        event(f"row conflicts: {sum(c.column == '*' for c in all_conflicts) > 0}")
        kind = "no-op" if head_t == c0 else "fast-forward" if head_o == c0 else "three-way"
        event(f"kind of merge: {kind}")
        for i, (name, policy) in enumerate(POLICIES.items()):
            into = f"m{i}"
            repo.branch(into, from_="o")
            want, conflicts = model_merge(base, state_o, state_t, policy)
            unresolved = [c for c in conflicts if not c.resolved]
            if unresolved:
                with pytest.raises(MergeConflictError) as info:
                    repo.merge("t", into=into, policy=policy)
                assert repo.head(into) == head_o, f"{name}: a failed merge moved the branch"
                assert reported_conflicts(info.value.conflicts) == expected_conflicts(unresolved), name
                assert info.value.count == len(unresolved)
                continue
            result = repo.merge("t", into=into, policy=policy)
            assert_table_equals(repo.read_table(into, "t"), want, f"merge with {name}")
            assert reported_conflicts(result.conflicts) == expected_conflicts(conflicts), name
            assert repo.head(into) == (result.commit or head_o)
            if head_t == c0:
                assert result.commit is None, "theirs has nothing new: no commit"
            elif head_o == c0:
                assert result.fast_forward and result.commit == head_t
            else:
                assert not result.fast_forward and repo.get_commit(into).parents == (head_o, head_t)
            # The merge moved ours by exactly the reference's change.
            d = repo.diff(head_o, into, table="t")
            moved = model_diff(state_o, want)
            assert d.counts == {k: len(moved[k]) for k in ("inserted", "updated", "deleted")}
        # Quarantine: the clean part lands, every conflict keeps ours there, and theirs' side goes to q.
        repo.branch("mq", from_="o")
        want, conflicts = model_merge(base, state_o, state_t, "fail")
        result = repo.merge("t", into="mq", policy="fail", quarantine="q")
        assert_table_equals(repo.read_table("mq", "t"), want, "quarantine: into")
        assert reported_conflicts(result.conflicts) == expected_conflicts(conflicts)
        if any(not c.resolved for c in conflicts):
            assert result.quarantine == repo.head("q")
            theirs_side, _ = model_merge(base, state_o, state_t, "theirs")
            assert_table_equals(repo.read_table("q", "t"), theirs_side, "quarantine: q")
            report = repo.read_table("q", CONFLICTS_TABLE)
            assert reported_conflicts(report.drop_columns(["merge"])) == expected_conflicts(conflicts)
            assert set(report.column("merge").to_pylist()) == {result.commit}
            assert repo.entry("mq", "").kind == "dir" and "q" in repo.branches()
            with pytest.raises(RefNotFoundError):
                repo.entry("mq", CONFLICTS_TABLE)
        else:
            assert result.quarantine is None and "q" not in repo.branches()


def test_a_table_created_on_both_sides(repo: Repository) -> None:
    """No base table: equal inserts are fine, different inserts conflict cell by cell (base null)."""
    repo.commit_changes("main", {"readme": b"r"})
    repo.branch("ours")
    repo.branch("theirs")
    ours = {
        ("a", 1): {"x": 1, "y": "same", "z": None},
        ("a", 2): {"x": 2, "y": "o", "z": 0.5},
        ("o", 1): {"x": 9, "y": None, "z": None},
    }
    theirs = {
        ("a", 1): {"x": 1, "y": "same", "z": None},
        ("a", 2): {"x": 3, "y": "o", "z": 1.5},
        ("t", 1): {"x": 8, "y": None, "z": None},
    }
    repo.write_table("ours", "t", state_table(ours), KEY, "overwrite")
    repo.write_table("theirs", "t", state_table(theirs), KEY, "append")
    with pytest.raises(MergeConflictError) as info:
        repo.merge("theirs", into="ours")
    want, conflicts = model_merge({}, ours, theirs, "fail")
    assert reported_conflicts(info.value.conflicts) == expected_conflicts(conflicts)
    assert sorted((c.key, c.column) for c in conflicts) == [(("a", 2), "x"), (("a", 2), "z")]
    result = repo.merge("theirs", into="ours", policy="theirs")
    want, conflicts = model_merge({}, ours, theirs, "theirs")
    assert_table_equals(repo.read_table("ours", "t"), want)
    assert reported_conflicts(result.conflicts) == expected_conflicts(conflicts)
    assert want[("a", 2)] == {"x": 3, "y": "o", "z": 1.5} and ("o", 1) in want and ("t", 1) in want


# -- 6. file-level merge -------------------------------------------------------------------------------------
CONFLICT = "conflict"
FILE_CASES = [
    ("added-ours", None, b"o", None, b"o"),
    ("added-theirs", None, None, b"t", b"t"),
    ("added-both-identically", None, b"x", b"x", b"x"),
    ("added-both-differently", None, b"o", b"t", CONFLICT),
    ("removed-ours-unchanged-theirs", b"b", None, b"b", None),
    ("removed-theirs-unchanged-ours", b"b", b"b", None, None),
    ("removed-both", b"b", None, None, None),
    ("removed-ours-modified-theirs", b"b", None, b"t", CONFLICT),
    ("modified-ours-removed-theirs", b"b", b"o", None, CONFLICT),
    ("modified-ours", b"b", b"o", b"b", b"o"),
    ("modified-theirs", b"b", b"b", b"t", b"t"),
    ("modified-both-identically", b"b", b"x", b"x", b"x"),
    ("modified-both-differently", b"b", b"o", b"t", CONFLICT),
    ("unchanged", b"b", b"b", b"b", b"b"),
]
PATH = "data/f.bin"


def _content(repo: Repository, ref: str, path: str) -> bytes | None:
    try:
        return repo.read_file(ref, path)
    except RefNotFoundError:
        return None


FILE_PARAMS = [
    pytest.param(*case[1:], policy, id=f"{case[0]}-{policy}")
    for case in FILE_CASES
    for policy in (["fail", "ours", "theirs"] if case[-1] == CONFLICT else ["fail"])
]


@pytest.mark.parametrize(("base", "ours", "theirs", "want", "policy"), FILE_PARAMS)
def test_file_merge_table(
    repo: Repository, base: bytes | None, ours: bytes | None, theirs: bytes | None, want: Any, policy: str
) -> None:
    """One row of the base/ours/theirs table for a file (alone in its directory, so removing it removes the
    directory too); conflicts fail the merge, or resolve to ours' or theirs' side."""
    repo.commit_changes("main", {"keep.txt": b"keep", **({PATH: base} if base is not None else {})})
    repo.branch("ours")
    repo.branch("theirs")
    # Each side also changes a path of its own, so the merge is a real three-way merge.
    repo.commit_changes("ours", {"ours-only.txt": b"1", **({PATH: ours} if ours != base else {})})
    repo.commit_changes("theirs", {"theirs-only.txt": b"2", **({PATH: theirs} if theirs != base else {})})
    head = repo.head("ours")
    if want == CONFLICT and policy == "fail":
        with pytest.raises(MergeConflictError) as info:
            repo.merge("theirs", into="ours", policy=policy)
        assert repo.head("ours") == head
        assert [(json.loads(c["key"]), c["column"], c["resolved"]) for c in info.value.conflicts] == [
            (PATH, "*", False)
        ]
        assert PATH in str(info.value)
        return
    result = repo.merge("theirs", into="ours", policy=policy)
    assert result.commit is not None and not result.fast_forward
    expected = (ours if policy == "ours" else theirs) if want == CONFLICT else want
    assert _content(repo, "ours", PATH) == expected
    if want == CONFLICT:
        assert [(json.loads(c["key"]), c["column"], c["resolved"], c["resolution"]) for c in result.conflict_list] == [
            (PATH, "*", True, policy)
        ]
    else:
        assert result.conflict_list == []
    for path, data in (("keep.txt", b"keep"), ("ours-only.txt", b"1"), ("theirs-only.txt", b"2")):
        assert repo.read_file("ours", path) == data
    assert repo.get_commit("ours").parents == (head, repo.head("theirs"))
    # Merging again changes nothing.
    again = repo.merge("theirs", into="ours", policy=policy)
    assert again.commit is None and repo.head("ours") == result.commit


@pytest.mark.parametrize("policy", ["fail", "ours", "theirs"])
def test_kind_conflicts(repo: Repository, policy: str) -> None:
    """A file on one side where the other has a directory or a table is a path conflict."""
    repo.commit_changes("main", {"keep": b"k"})
    repo.branch("ours")
    repo.branch("theirs")
    repo.commit_changes("ours", {"p": b"a file"})
    repo.commit_changes("theirs", {"p/inner": b"a dir"})
    repo.commit_changes("ours", {"tbl": b"a file too"})
    repo.write_table("theirs", "tbl", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    head = repo.head("ours")
    if policy == "fail":
        with pytest.raises(MergeConflictError) as info:
            repo.merge("theirs", into="ours")
        assert sorted(json.loads(c["key"]) for c in info.value.conflicts) == ["p", "tbl"]
        assert repo.head("ours") == head
        return
    repo.merge("theirs", into="ours", policy=policy)
    if policy == "ours":
        assert repo.read_file("ours", "p") == b"a file" and repo.read_file("ours", "tbl") == b"a file too"
    else:
        assert repo.read_file("ours", "p/inner") == b"a dir"
        assert to_state(repo.read_table("ours", "tbl")) == {("a", 1): {"x": 1, "y": None, "z": None}}


def test_table_removed_on_one_side_and_changed_on_the_other(repo: Repository) -> None:
    repo.write_table("main", "t", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    repo.branch("ours")
    repo.branch("theirs")
    repo.commit_changes("ours", {"t": None})
    repo.write_table("theirs", "t", rows_table([(("a", 1), {"x": 2})], ["x"]), KEY, "upsert")
    with pytest.raises(MergeConflictError):
        repo.merge("theirs", into="ours")
    repo.merge("theirs", into="ours", policy="theirs")
    assert to_state(repo.read_table("ours", "t")) == {("a", 1): {"x": 2, "y": None, "z": None}}


def test_directories_merge_entry_by_entry(repo: Repository) -> None:
    repo.commit_changes("main", {"data/shared.txt": b"s", "data/sub/base.txt": b"b", "other/o.txt": b"o"})
    repo.branch("ours")
    repo.branch("theirs")
    repo.commit_changes(
        "ours", {"data/a.txt": b"A", "data/sub/x.txt": b"X", "data/shared.txt": b"s2", "new-ours/deep/f": b"1"}
    )
    repo.commit_changes(
        "theirs",
        {
            "data/b.txt": b"B",
            "data/sub/y.txt": b"Y",
            "data/sub/base.txt": None,
            "other/o.txt": b"o2",
            "new-theirs/f": b"2",
        },
    )
    result = repo.merge("theirs", into="ours")
    assert result.commit is not None and result.conflict_list == []
    want = {
        "data/shared.txt": b"s2",
        "data/a.txt": b"A",
        "data/b.txt": b"B",
        "data/sub/x.txt": b"X",
        "data/sub/y.txt": b"Y",
        "other/o.txt": b"o2",
        "new-ours/deep/f": b"1",
        "new-theirs/f": b"2",
    }
    for path, data in want.items():
        assert repo.read_file("ours", path) == data, path
    assert _content(repo, "ours", "data/sub/base.txt") is None
    changed = repo.diff("main", "ours")
    assert len(changed.added) + len(changed.modified) + len(changed.removed) == 9


@pytest.mark.parametrize("policy", ["fail", "ours", "theirs"])
def test_a_removed_directory_merges_file_by_file(repo: Repository, policy: str) -> None:
    """Ours removes every file of a directory (so the directory is gone); theirs modifies one, leaves one
    alone and adds one: only the modified file conflicts, the untouched one stays removed, the new one
    lands."""
    repo.commit_changes("main", {"d/mod": b"m", "d/same": b"s", "keep": b"k"})
    repo.branch("ours")
    repo.branch("theirs")
    repo.commit_changes("ours", {"d/mod": None, "d/same": None})
    repo.commit_changes("theirs", {"d/mod": b"m2", "d/new": b"n"})
    head = repo.head("ours")
    if policy == "fail":
        with pytest.raises(MergeConflictError) as info:
            repo.merge("theirs", into="ours")
        assert [json.loads(c["key"]) for c in info.value.conflicts] == ["d/mod"]
        assert repo.head("ours") == head
        return
    result = repo.merge("theirs", into="ours", policy=policy)
    assert [json.loads(c["key"]) for c in result.conflict_list] == ["d/mod"]
    assert _content(repo, "ours", "d/mod") == (None if policy == "ours" else b"m2")
    assert _content(repo, "ours", "d/same") is None
    assert _content(repo, "ours", "d/new") == b"n"
    assert repo.read_file("ours", "keep") == b"k"


def test_fast_forward_and_repeated_merges(repo: Repository) -> None:
    repo.commit_changes("main", {"a": b"1"})
    repo.branch("feature")
    repo.commit_changes("feature", {"b": b"2"})
    repo.write_table("feature", "t", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    head = repo.head("feature")
    result = repo.merge("feature", into="main")
    assert result.fast_forward and result.commit == head and repo.head("main") == head
    assert result.conflict_list == []
    again = repo.merge("feature", into="main")
    assert again.commit is None and not again.fast_forward and repo.head("main") == head
    # Merging an ancestor, or a branch into itself, changes nothing either.
    assert repo.merge("main~1", into="main").commit is None
    assert repo.merge("main", into="main").commit is None
    assert repo.head("main") == head
    # A true merge, then merging the same source again: a no-op.
    repo.commit_changes("main", {"c": b"3"})
    repo.write_table("feature", "t", rows_table([(("a", 2), {"x": 2})], ["x"]), KEY, "upsert")
    first = repo.merge("feature", into="main")
    assert first.commit is not None and not first.fast_forward
    second = repo.merge("feature", into="main")
    assert second.commit is None and repo.head("main") == first.commit
    assert to_state(repo.read_table("main", "t")) == {
        ("a", 1): {"x": 1, "y": None, "z": None},
        ("a", 2): {"x": 2, "y": None, "z": None},
    }


# -- 7. quarantine -------------------------------------------------------------------------------------------
def test_quarantine_commits_the_clean_part_and_parks_theirs(repo: Repository) -> None:
    base = {("k", i): {"x": i, "y": f"b{i}", "z": 0.5} for i in range(10)}
    repo.write_table("main", "t", state_table(base), KEY, "overwrite")
    repo.branch("ours")
    repo.branch("theirs")

    # ours: x of k1 (conflict), delete k3 (row conflict), y of k4 (clean), x of k6 (same change as theirs)
    def upsert(branch: str, rows: dict[int, dict[str, Any]]) -> None:
        cols = sorted({c for v in rows.values() for c in v})
        data = rows_table([(("k", i), v) for i, v in rows.items()], cols)
        repo.write_table(branch, "t", data, KEY, "upsert")

    upsert("ours", {1: {"x": 100}, 6: {"x": 66}})
    upsert("ours", {4: {"y": "o4"}})
    repo.write_table("ours", "t", rows_table([(("k", 3), {})], []), KEY, "delete")
    # theirs: x of k1 (conflict), y of k1 (clean, same row), z of k3, z of k5 (clean), x of k6, insert k20
    upsert("theirs", {1: {"x": 200, "y": "t1"}})
    upsert("theirs", {3: {"z": 9.5}, 5: {"z": 5.5}})
    upsert("theirs", {6: {"x": 66}, 20: {"x": 20}})
    theirs_rows = to_state(repo.read_table("theirs", "t"))
    head_ours = repo.head("ours")
    result = repo.merge("theirs", into="ours", quarantine="q")
    assert result.commit == repo.head("ours") and result.commit != head_ours
    assert result.quarantine == repo.head("q")
    merged = to_state(repo.read_table("ours", "t"))
    want = {k: dict(v) for k, v in base.items()}
    want[("k", 1)] = {"x": 100, "y": "t1", "z": 0.5}  # conflicting x keeps ours, clean y from theirs
    del want[("k", 3)]  # the row conflict keeps ours (deleted)
    want[("k", 4)]["y"] = "o4"
    want[("k", 5)]["z"] = 5.5
    want[("k", 6)]["x"] = 66
    want[("k", 20)] = theirs_rows[("k", 20)]
    assert merged == want
    parked = to_state(repo.read_table("q", "t"))
    assert parked[("k", 1)] == {"x": 200, "y": "t1", "z": 0.5}
    assert parked[("k", 3)] == theirs_rows[("k", 3)]
    assert {k: v for k, v in parked.items() if k not in (("k", 1), ("k", 3))} == {
        k: v for k, v in want.items() if k != ("k", 1)
    }
    report = repo.read_table("q", CONFLICTS_TABLE).to_pylist()
    assert sorted((json.loads(r["key"])["ts"], r["column"], r["resolved"]) for r in report) == [
        (1, "x", False),
        (3, "*", False),
    ]
    by_col = {r["column"]: r for r in report}
    assert json.loads(by_col["x"]["ours"]) == 100 and json.loads(by_col["x"]["theirs"]) == 200
    assert json.loads(by_col["x"]["base"]) == 1 and by_col["x"]["table"] == "t"
    assert json.loads(by_col["*"]["ours"]) is None and json.loads(by_col["*"]["theirs"])["z"] == 9.5
    assert set(r["merge"] for r in report) == {result.commit}
    assert repo.get_commit("q").parents[0] == result.commit
    assert result.conflicts.schema.names == [
        "table",
        "key",
        "column",
        "base",
        "ours",
        "theirs",
        "resolved",
        "resolution",
    ]
    with pytest.raises(RefNotFoundError):
        repo.read_table("ours", CONFLICTS_TABLE)
    # Without quarantine the same merge refuses and writes nothing.
    repo.branch("again", from_=head_ours)
    with pytest.raises(MergeConflictError):
        repo.merge("theirs", into="again")
    assert repo.head("again") == head_ours


# -- 2. schema conflicts in merges ---------------------------------------------------------------------------
def test_merge_refuses_columns_retyped_differently(repo: Repository) -> None:
    repo.write_table("main", "t", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    repo.branch("ours")
    repo.branch("theirs")
    for branch, typ, value in (("ours", pa.string(), "one"), ("theirs", pa.float64(), 1.5)):
        repo.commit_changes(branch, {"t": None})  # drop the table, write it again with another type
        repo.write_table(
            branch, "t", pa.table({"pid": ["a"], "ts": [1], "x": pa.array([value], typ)}), KEY, "overwrite"
        )
    head = repo.head("ours")
    with pytest.raises(SchemaConflictError) as info:
        repo.merge("theirs", into="ours", policy="theirs")
    assert "'x'" in str(info.value) and getattr(info.value, "column", None) == "x"
    assert repo.head("ours") == head


def test_merge_refuses_a_new_column_added_with_two_types(repo: Repository) -> None:
    repo.write_table("main", "t", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    repo.branch("ours")
    repo.branch("theirs")
    repo.write_table("ours", "t", pa.table({"pid": ["a"], "ts": [1], "w": ["text"]}), KEY, "upsert")
    repo.write_table("theirs", "t", pa.table({"pid": ["a"], "ts": [2], "w": [2]}), KEY, "upsert")
    head = repo.head("ours")
    with pytest.raises(SchemaConflictError) as info:
        repo.merge("theirs", into="ours", policy="ours")
    assert "'w'" in str(info.value) and getattr(info.value, "column", None) == "w"
    assert repo.head("ours") == head


def test_merge_refuses_a_changed_key(repo: Repository) -> None:
    repo.write_table("main", "t", rows_table([(("a", 1), {"x": 1})], ["x"]), KEY, "overwrite")
    repo.branch("ours")
    repo.branch("theirs")
    repo.commit_changes("theirs", {"t": None})
    repo.write_table("theirs", "t", pa.table({"pid": ["a"], "ts": [1], "x": [2]}), ["pid"], "overwrite")
    repo.write_table("ours", "t", rows_table([(("a", 2), {"x": 2})], ["x"]), KEY, "upsert")
    head = repo.head("ours")
    with pytest.raises(SchemaConflictError) as info:
        repo.merge("theirs", into="ours", policy="theirs")
    assert "key" in str(info.value)
    assert repo.head("ours") == head


def test_policies_are_checked_before_any_work(repo: Repository) -> None:
    from dacflow import UsageError

    repo.commit_changes("main", {"a": b"1"})
    repo.branch("f")
    repo.commit_changes("f", {"b": b"1"})
    head = repo.head("main")
    for bad in ("newest", "latest:", {"x": "nope"}, {1: "ours"}):
        with pytest.raises(UsageError):
            repo.merge("f", into="main", policy=bad)
    assert repo.head("main") == head


# -- 8. scale ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_three_million_rows(repo: Repository, rng: Any) -> None:
    n = 3_000_000
    seed = rng.randrange(1 << 30)
    gen = np.random.default_rng(seed)
    timings: dict[str, float] = {}

    def timed(label: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        timings[label] = round(time.perf_counter() - t0, 2)
        return out

    ids = np.arange(n, dtype=np.int64)
    x = gen.integers(0, 1 << 40, n)
    y = gen.random(n)
    base = pa.table({"pid": pa.array(ids // 1000), "ts": pa.array(ids % 1000), "x": pa.array(x), "y": pa.array(y)})
    key = ["pid", "ts"]
    timed("write", lambda: repo.write_table("main", "big", base, key, "overwrite"))
    repo.branch("a")
    repo.branch("b")
    # a: x += 1 on 1% of the rows, plus 1000 new rows; b: x += 2 and y *= 2 on another 1% (overlapping a
    # little: those x cells conflict), plus 1000 deletes of rows neither side updates.
    ia = np.sort(gen.choice(n, n // 100, replace=False))
    ib = np.sort(gen.choice(n, n // 100, replace=False))
    spare = np.setdiff1d(ids, np.union1d(ia, ib))
    dels = np.sort(gen.choice(spare, 1000, replace=False))
    up_a = pa.table({"pid": pa.array(ids[ia] // 1000), "ts": pa.array(ids[ia] % 1000), "x": pa.array(x[ia] + 1)})
    new_ids = np.arange(n, n + 1000, dtype=np.int64)
    ins_a = pa.table(
        {
            "pid": pa.array(new_ids // 1000),
            "ts": pa.array(new_ids % 1000),
            "x": pa.array(new_ids),
            "y": pa.array(np.zeros(1000)),
        }
    )
    up_b = pa.table(
        {
            "pid": pa.array(ids[ib] // 1000),
            "ts": pa.array(ids[ib] % 1000),
            "x": pa.array(x[ib] + 2),
            "y": pa.array(y[ib] * 2),
        }
    )
    del_b = pa.table({"pid": pa.array(ids[dels] // 1000), "ts": pa.array(ids[dels] % 1000)})
    ra = timed("upsert a", lambda: repo.write_table("a", "big", up_a, key, "upsert"))
    timed("append a", lambda: repo.write_table("a", "big", ins_a, key, "append"))
    rb = timed("upsert b", lambda: repo.write_table("b", "big", up_b, key, "upsert"))
    timed("delete b", lambda: repo.write_table("b", "big", del_b, key, "delete"))
    assert ra.stats["updated"] == len(ia) and rb.stats["updated"] == len(ib)
    da = timed("diff a", lambda: repo.diff("main", "a", table="big"))
    db = timed("diff b", lambda: repo.diff("main", "b", table="big"))
    assert da.counts == {"inserted": 1000, "updated": len(ia), "deleted": 0}
    assert db.counts == {"inserted": 0, "updated": len(ib), "deleted": 1000}
    dab = timed("diff a b", lambda: repo.diff("a", "b", table="big"))
    both = np.intersect1d(ia, ib)
    assert dab.counts == {"inserted": 0, "updated": len(np.union1d(ia, ib)), "deleted": 2000}
    result = timed("merge", lambda: repo.merge("b", into="a", policy="theirs"))
    assert len(result.conflict_list) == len(both)
    assert {c["column"] for c in result.conflict_list} <= {"x"}
    merged = timed("read", lambda: repo.read_table("a", "big"))
    want_x, want_y = x.copy(), y.copy()
    want_x[ia] += 1
    want_x[ib] = x[ib] + 2  # theirs wins the conflicting cells; elsewhere each side's change
    want_y[ib] *= 2
    keep = np.ones(n, bool)
    keep[dels] = False
    want_x = np.concatenate([want_x[keep], new_ids])
    want_y = np.concatenate([want_y[keep], np.zeros(1000)])
    want_ids = np.concatenate([ids[keep], new_ids])
    assert len(merged) == len(want_ids)
    got_ids = merged.column("pid").to_numpy() * 1000 + merged.column("ts").to_numpy()
    assert np.array_equal(got_ids, want_ids)
    assert np.array_equal(merged.column("x").to_numpy(), want_x)
    assert np.array_equal(merged.column("y").to_numpy(), want_y)
    # Spot-check a few rows through the diff, too.
    dm = timed("diff merged", lambda: repo.diff("main", "a", table="big"))
    assert dm.counts == {"inserted": 1000, "updated": len(np.union1d(ia, ib)), "deleted": 1000}
    sample = gen.choice(both, min(5, len(both)), replace=False) if len(both) else []
    upd = dm.updated
    for i in sample:
        hit = pc.and_(pc.equal(upd.column("pid"), i // 1000), pc.equal(upd.column("ts"), i % 1000))
        row = upd.filter(hit)
        assert row.column("x").to_pylist() == [x[i] + 2] and row.column("y").to_pylist() == [y[i] * 2]
    streamed = timed("iter", lambda: sum(len(b) for b in repo.iter_table("a", "big")))
    assert streamed == len(want_ids)
    print(f"numpy seed {seed} (from the test seed); seconds: {timings}")
    assert sum(timings.values()) < 180
