"""Differential retraining: only rows changed since the model's data commit, and lineage on the model."""

from __future__ import annotations

import pyarrow as pa
from dacflow import Repository
from dacflow.retrain import commit_model, last_trained_on, training_delta


def test_retrain_sees_only_new_and_changed_rows(repo: Repository) -> None:
    rows = pa.table({"pid": [f"p{i}" for i in range(100)], "ts": list(range(100)), "hr": [60] * 100})
    repo.write_table("main", "vitals", rows, key=["pid", "ts"], mode="overwrite")
    first = training_delta(repo, "vitals", last_trained_on(repo, "models", "vitals"))
    assert first.full and len(first.rows) == 100
    model = commit_model(repo, "models", {"model.bin": b"v1"}, first)
    assert last_trained_on(repo, "models", "vitals") == first.data_commit
    meta = repo.get_commit(model.commit).meta["dacflow.trained_on"]
    assert meta["commit"] == first.data_commit and meta["rows"] == 100
    # New readings, a doctor's correction, a deletion.
    repo.write_table("main", "vitals", pa.table({"pid": ["p200", "p201"], "ts": [1, 2], "hr": [70, 71]}))
    repo.write_table("main", "vitals", pa.table({"pid": ["p5"], "ts": [5], "hr": [99]}))
    repo.write_table("main", "vitals", pa.table({"pid": ["p7"], "ts": [7]}), mode="delete")
    second = training_delta(repo, "vitals", last_trained_on(repo, "models", "vitals"))
    assert not second.full and second.since == first.data_commit
    got = sorted((r["pid"], r["hr"]) for r in second.rows.to_pylist())
    assert got == [("p200", 70), ("p201", 71), ("p5", 99)]
    assert second.deleted_keys.to_pylist() == [{"pid": "p7", "ts": 7}]
    assert second.counts == {"inserted": 2, "updated": 1, "deleted": 1}
    commit_model(repo, "models", {"model.bin": b"v2"}, second)
    assert last_trained_on(repo, "models", "vitals") == second.data_commit
    nothing = training_delta(repo, "vitals", last_trained_on(repo, "models", "vitals"))
    assert len(nothing.rows) == 0 and nothing.counts == {"inserted": 0, "updated": 0, "deleted": 0}
