"""Quality gates and protected branches (issue 9): a vetoed commit, merge or transfer leaves the ref where it was
and reports every reason; passing merges publish; the gate config is versioned and edited by compare-and-swap."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import write_tree
from dacflow import Repository
from dacflow.errors import GateRejectedError, RefConflictError, UnsupportedFormatError, UsageError
from dacflow.gates import (
    GATES_KEY,
    Gatekeeper,
    add_gate,
    audit,
    gate_config,
    protect,
    remove_gate,
    schema_contract,
    unprotect,
)
from dacflow.hooks import RefChange
from dacflow.stores.wrappers import CountingStore
from dacflow.transfer import transfer

COLUMNS = {"id": "int64", "hr": "double", "label": "string"}


def vitals(ids: list[int], hr: float | None = 70.0, label: str | None = "normal") -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "hr": pa.array([hr] * len(ids), pa.float64()),
            "label": pa.array([label] * len(ids), pa.string()),
        }
    )


@pytest.fixture
def gated(repo: Repository) -> Repository:
    """`main` holds 100 rows of `vitals`, is protected, and guarded by a schema contract, row rules and a 10%
    delete guard."""
    repo.write_table("main", "vitals", vitals(list(range(100))), key=["id"])
    add_gate(repo, "schema", "main", table="vitals", columns=COLUMNS, key=["id"])
    add_gate(repo, "rows", "main", table="vitals", not_null=["hr"], ranges={"hr": [20, 250]},
             allowed={"label": ["normal", "arrhythmia"]})  # fmt: skip
    add_gate(repo, "guard", "main", table="vitals", max_delete_pct=10)
    protect(repo, "main")
    return repo


def refused(fn: object, *args: object, **kwargs: object) -> GateRejectedError:
    with pytest.raises(GateRejectedError) as err:
        fn(*args, **kwargs)  # type: ignore[operator]
    text = str(err.value)
    assert "\n" not in text and all(r in text for r in err.value.reasons), text
    return err.value


# -- the three refusals -----------------------------------------------------------------------------------
def test_a_merge_that_breaks_the_schema_contract_is_refused_and_main_stays(gated: Repository) -> None:
    before = gated.head("main")
    dev = gated.branch("dev")
    gated.commit_changes("dev", {"vitals": None})  # drop the table and make it again with another type and key
    gated.write_table("dev", "vitals", pa.table({"id": [1], "hr": ["fast"], "label": ["normal"]}), key=["id", "hr"])
    err = refused(gated.merge, "dev", "main")
    assert err.reasons == [
        f"vitals: column 'hr' is string, the contract says double (gate {_id(gated, 'schema')} schema vitals)",
        f"vitals: the key is ['id', 'hr'], the contract says ['id'] (gate {_id(gated, 'schema')} schema vitals)",
        "vitals: cannot compare column 'hr' (string) with [20, 250]: Function 'less' has no kernel matching input "
        f"types (string, int64) (gate {_id(gated, 'rows')} rows vitals)",
        f"vitals: 100 of 100 rows deleted (100.0%), the guard allows 10% (gate {_id(gated, 'guard')} guard vitals)",
    ]
    assert str(err).startswith("gates refused the merge into main for 4 reason(s): vitals: column 'hr' is string")
    assert (err.branch, err.action, err.head, err.refused) == ("main", "merge", before, err.refused)
    assert gated.head("main") == before and gated.head("dev") == dev.head != before
    assert gated.read_table("main", "vitals").num_rows == 100


def test_a_merge_that_deletes_too_many_rows_is_refused_and_a_smaller_one_passes(gated: Repository) -> None:
    before = gated.head("main")
    gated.branch("cleanup")
    gated.write_table("cleanup", "vitals", pa.table({"id": list(range(11))}), key=["id"], mode="delete")
    err = refused(gated.merge, "cleanup", "main")
    assert err.reasons == [
        f"vitals: 11 of 100 rows deleted (11.0%), the guard allows 10% (gate {_id(gated, 'guard')} guard vitals)"
    ]
    assert gated.head("main") == before
    gated.branch("small")
    gated.write_table("small", "vitals", pa.table({"id": list(range(10))}), key=["id"], mode="delete")
    result = gated.merge("small", "main")
    assert result.fast_forward and gated.head("main") == gated.head("small") != before
    assert gated.read_table("main", "vitals").num_rows == 90


def test_direct_commits_to_a_protected_branch_are_refused_and_a_passing_merge_publishes(
    gated: Repository, tmp_path: Path
) -> None:
    before = gated.head("main")
    src = write_tree(tmp_path / "src", {"a.csv": b"x\n"})
    for attempt in (
        lambda: gated.snapshot(str(src), "main"),
        lambda: gated.write_table("main", "vitals", vitals([500]), key=["id"]),
        lambda: gated.commit_changes("main", {"notes.txt": b"hi"}),
        lambda: gated.branch("main").commit_files({"notes.txt": b"hi"}),
    ):
        err = refused(attempt)
        assert err.reasons[0] == "branch 'main' is protected: commit to another branch and merge it in"
        assert str(err).startswith("gates refused the commit to main for ")
        assert gated.head("main") == before
    # write-audit-publish: write on a branch, audit it, publish by merging
    gated.branch("staging")
    gated.write_table("staging", "vitals", vitals([500, 501], hr=120.0, label="arrhythmia"), key=["id"])
    assert audit(gated, "staging", "main") == []
    result = gated.merge("staging", "main")
    assert result.commit == gated.head("main") == gated.head("staging")
    # main moved on while another branch diverged: a real merge commit also passes the gates
    gated.branch("edge", from_=before)
    gated.write_table("edge", "vitals", vitals([600]), key=["id"])
    merged = gated.merge("edge", "main")
    assert not merged.fast_forward and gated.head("main") == merged.commit
    assert gated.read_table("main", "vitals").num_rows == 103


def test_a_failing_merge_reports_every_reason_and_writes_no_ref(gated: Repository) -> None:
    before, branches = gated.head("main"), gated.branches()
    gated.branch("bad")
    gated.write_table("bad", "vitals", vitals([700, 701], hr=999.0, label="weird"), key=["id"])
    gated.write_table("bad", "vitals", vitals([702], hr=None), key=["id"])
    gated.write_table("bad", "vitals", pa.table({"id": list(range(50))}), key=["id"], mode="delete")
    rows_gate = _id(gated, "rows")
    err = refused(gated.merge, "bad", "main")
    assert err.reasons == [
        f"vitals: 1 changed row(s) with a null hr, e.g. key (702) hr=None (gate {rows_gate} rows vitals)",
        f"vitals: 2 changed row(s) with hr outside [20, 250], e.g. key (700) hr=999.0 (gate {rows_gate} rows vitals)",
        f"vitals: 2 changed row(s) with label not in 'normal', 'arrhythmia', e.g. key (700) label='weird' "
        f"(gate {rows_gate} rows vitals)",
        f"vitals: 50 of 100 rows deleted (50.0%), the guard allows 10% (gate {_id(gated, 'guard')} guard vitals)",
    ]
    assert str(err).startswith("gates refused the merge into main for 4 reason(s): ")
    assert audit(gated, "bad", "main") == err.reasons  # the dry run says the same, and moves nothing
    assert gated.head("main") == before and gated.branches()["main"] == branches["main"]
    # the error crosses process boundaries (Airflow, Flyte) intact
    import pickle

    again = pickle.loads(pickle.dumps(err))
    assert (type(again), str(again), again.reasons) == (GateRejectedError, str(err), err.reasons)


# -- row rules, path rules, guards on direct commits ------------------------------------------------------------
def test_row_rules_check_the_rows_a_write_table_changes(repo: Repository) -> None:
    repo.write_table("main", "vitals", vitals([1, 2, 3], hr=300.0), key=["id"])  # before the gate: not checked
    gate = add_gate(repo, "rows", "main", table="vitals", not_null=["label"], ranges={"hr": [None, 250]},
                    allowed={"label": ["normal", "arrhythmia"]})  # fmt: skip
    before = repo.head("main")
    ok = repo.write_table("main", "vitals", vitals([4], hr=80.0), key=["id"])  # only row 4 is checked
    assert ok.created and ok.parent == before
    for rows, reason in (
        (vitals([5], label=None), "1 changed row(s) with a null label, e.g. key (5) label=None"),
        (vitals([6, 7], hr=251.0), "2 changed row(s) with hr outside [None, 250], e.g. key (6) hr=251.0"),
        (vitals([8], label="Normal"), "1 changed row(s) with label not in 'normal', 'arrhythmia', e.g. key (8) "
                                      "label='Normal'"),
        (vitals([9], hr=float("nan")), "1 changed row(s) with hr outside [None, 250], e.g. key (9) hr=nan"),
    ):  # fmt: skip
        err = refused(repo.write_table, "main", "vitals", rows, key=["id"])
        assert err.reasons == [f"vitals: {reason} (gate {gate['id']} rows vitals)"]
        assert repo.head("main") == ok.commit
    # an update of an old row is checked too: row 1 keeps hr=300 (out of range) when only its label changes
    err = refused(repo.write_table, "main", "vitals", vitals([1], hr=300.0, label="arrhythmia"), key=["id"])
    assert "key (1) hr=300.0" in err.reasons[0]


def test_path_rules_check_globs_and_sizes_on_a_snapshot(repo: Repository, tmp_path: Path) -> None:
    gate = add_gate(repo, "paths", "main", path="data/*", allow=["data/*.csv", "data/*.parquet"], max_size=1000)
    src = write_tree(tmp_path / "src", {"data/a.csv": b"x" * 10, "README": b"anything goes outside data/"})
    first = repo.snapshot(str(src), "main")
    write_tree(src, {"data/b.exe": b"MZ", "data/c.exe": b"MZ", "data/big.csv": b"y" * 1001})
    err = refused(repo.snapshot, str(src), "main")
    assert err.reasons == [
        f"2 path(s) not allowed (allowed: data/*.csv, data/*.parquet): data/b.exe, data/c.exe (gate {gate['id']} "
        "paths data/*)",
        f"1 file(s) larger than 1000 B: data/big.csv (1001 B) (gate {gate['id']} paths data/*)",
    ]
    assert repo.head("main") == first.commit
    remove_gate(repo, gate["id"][:6])
    assert repo.snapshot(str(src), "main").created


def test_a_file_shrink_guard_refuses_a_truncated_file(repo: Repository) -> None:
    repo.commit_changes("main", {"data/big.csv": b"r\n" * 1000, "data/small.csv": b"s\n" * 10, "log.txt": b"l" * 100})
    gate = add_gate(repo, "guard", "main", path="data/*", max_shrink_pct=50)
    before = repo.head("main")
    assert repo.commit_changes("main", {"data/big.csv": b"r\n" * 600, "log.txt": b""}).created  # -40%; not data/
    err = refused(repo.commit_changes, "main", {"data/big.csv": b"r\n" * 10, "data/small.csv": None})
    assert err.reasons == [
        "2 file(s) shrink by more than 50%: data/big.csv (1200 -> 20 B, -98.3%), data/small.csv (20 -> 0 B, -100.0%) "
        f"(gate {gate['id']} guard data/*)"
    ]
    assert repo.head("main") != before and repo.read_file("main", "data/big.csv") == b"r\n" * 600


def test_gates_apply_to_branch_patterns_and_leave_other_branches_alone(repo: Repository) -> None:
    add_gate(repo, "schema", "release/*", table="vitals", columns={"hr": "float64"})
    repo.write_table("dev", "vitals", pa.table({"id": [1], "hr": [1]}), key=["id"])  # int64 hr: dev is not gated
    err = refused(repo.write_table, "release/2026", "vitals", pa.table({"id": [1], "hr": [1]}), key=["id"])
    assert err.reasons[0].startswith("vitals: column 'hr' is int64, the contract says float64")
    assert repo.head("release/2026") is None  # a refused first commit does not create the branch either


# -- transfer into gated branches --------------------------------------------------------------------------------
def test_transfer_into_a_protected_branch_passes_its_gates_or_is_refused(gated: Repository, tmp_path: Path) -> None:
    edge = Repository.init(str(tmp_path / "edge"))
    transfer(gated, edge, ["main"])
    edge.write_table("main", "vitals", vitals([200]), key=["id"])  # edge's main is not protected
    report = transfer(edge, gated, ["main"])  # a fast-forward that passes: like a merge
    assert report.refs["branches/main"]["status"] == "updated" and gated.head("main") == edge.head("main")
    edge.write_table("main", "vitals", vitals([201], hr=5.0), key=["id"])
    before = gated.head("main")
    with pytest.raises(GateRejectedError, match=r"gates refused the transfer into main for 1 reason\(s\): vitals: 1 "):
        transfer(edge, gated, ["main"])
    assert gated.head("main") == before
    # a forced update that drops main's commits is refused even when the content would pass
    other = Repository.init(str(tmp_path / "other"))
    other.write_table("main", "vitals", vitals(list(range(100))), key=["id"])
    with pytest.raises(GateRejectedError, match="a forced update that drops its commits is refused"):
        transfer(other, gated, ["main"], force=True)
    with pytest.raises(RefConflictError):
        transfer(other, gated, ["main"])
    assert gated.head("main") == before


def test_a_protected_branch_cannot_be_deleted_or_take_quarantined_conflicts(gated: Repository) -> None:
    gated.branch("side")
    protect(gated, "side")
    with pytest.raises(GateRejectedError, match="gates refused deleting side for 1 reason"):
        gated.delete_branch("side")
    with pytest.raises(GateRejectedError, match="cannot take a merge's quarantined conflicts"):
        gated.merge("main", "main", quarantine="side")
    unprotect(gated, "side")
    assert gated.delete_branch("side") == gated.head("main")
    with pytest.raises(Exception, match="not protected"):
        unprotect(gated, "side")


# -- the config: versioned, compare-and-swap, cheap when empty ----------------------------------------------------
def test_the_gate_config_is_versioned_and_refused_when_unknown(repo: Repository) -> None:
    assert gate_config(repo).revision == 0 and gate_config(repo).empty
    g = add_gate(repo, "guard", "main", table="t", max_delete_pct=1)
    assert add_gate(repo, "guard", "main", table="t", max_delete_pct=1) == g  # idempotent: same spec, same id
    doc = json.loads(repo.store.get(GATES_KEY))
    assert (doc["type"], doc["v"], doc["revision"], doc["gates"]) == ("gates", 1, 1, [g])
    repo.store.put(GATES_KEY, json.dumps({**doc, "v": 2}).encode())
    with pytest.raises(UnsupportedFormatError, match="gate config .* has format version 2; this dacflow reads"):
        repo.commit_changes("main", {"a": b"1"})
    with pytest.raises(UnsupportedFormatError):
        add_gate(repo, "guard", "main", table="t", max_delete_pct=2)


def test_concurrent_gate_edits_all_land(repo: Repository) -> None:
    errors: list[BaseException] = []

    def add(i: int) -> None:
        try:
            add_gate(Repository.open(repo.url), "guard", "main", table=f"t{i}", max_delete_pct=i)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cfg = gate_config(repo)
    assert not errors and sorted(g["table"] for g in cfg.gates) == [f"t{i}" for i in range(8)]
    assert cfg.revision == 8


def test_with_no_gates_a_commit_costs_one_small_read_and_reads_no_table(repo: Repository) -> None:
    counting = CountingStore(repo.store)
    keeper = Gatekeeper.load(Repository(counting, repo.config))
    assert not keeper.active and counting.requests == 1 and counting.counts["get"] == 1
    # gates on a table the commit does not touch read no table data
    repo.write_table("main", "vitals", vitals([1]), key=["id"])
    add_gate(repo, "rows", "main", table="vitals", not_null=["hr"])
    add_gate(repo, "guard", "main", table="vitals", max_delete_pct=1)

    def boom(self: RefChange, name: str) -> None:
        raise AssertionError("a table diff was computed")

    original = RefChange.table_diff
    RefChange.table_diff = boom  # type: ignore[method-assign,assignment]
    try:
        assert repo.commit_changes("main", {"notes.txt": b"n"}).created
    finally:
        RefChange.table_diff = original  # type: ignore[method-assign]


def test_bad_gate_specs_are_refused_with_one_line(repo: Repository) -> None:
    for kind, spec, message in (
        ("nope", {}, "unknown gate kind 'nope'"),
        ("schema", {"table": "t"}, "a schema contract needs columns"),
        ("rows", {"table": "t"}, "a row rule needs not_null columns, ranges or allowed values"),
        ("rows", {"table": "t", "ranges": {"x": [None, None]}}, "range of 'x' takes [min, max]"),
        ("guard", {"table": "t", "max_delete_pct": 120}, "max_delete_pct must be a percentage from 0 to 100"),
        ("paths", {}, "a path rule needs allowed globs, a maximum file size, or both"),
        ("webhook", {"url": "file:///etc/passwd"}, "a webhook URL must be http or https"),
        ("schema", {"table": "t", "columns": {"a": "int64"}, "colour": "red"}, "a schema gate has no field(s) colour"),
    ):
        with pytest.raises(UsageError) as err:
            add_gate(repo, kind, "main", **spec)
        assert message in str(err.value)
    assert gate_config(repo).empty


def test_schema_contract_adopts_a_table_as_it_is(gated: Repository) -> None:
    assert schema_contract(gated, "main", "vitals") == {"columns": COLUMNS, "key": ["id"]}
    exact = add_gate(gated, "schema", "main", table="vitals", exact=True, **schema_contract(gated, "main", "vitals"))
    gated.branch("wider")
    gated.write_table("wider", "vitals", vitals([900]).append_column("spo2", pa.array([97.0])), key=["id"])
    err = refused(gated.merge, "wider", "main")
    assert err.reasons == [f"vitals: column(s) spo2 are not in the contract (gate {exact['id']} schema vitals)"]


def _id(repo: Repository, kind: str) -> str:
    (gate,) = [g for g in gate_config(repo).gates if g["kind"] == kind]
    return str(gate["id"])
