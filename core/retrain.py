"""Differential retraining: give a model only the rows it has not seen, and record what it saw.

A model's commit carries `dacflow.trained_on` in its metadata: the data commit (and table) it was trained on.
The next training asks for the delta from that commit to the current head — inserted and updated rows, and the
keys deleted since — which `Repository.diff(..., table=...)` computes from changesets, so its cost follows the
change, not the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RefNotFoundError

if TYPE_CHECKING:
    from .repository import CommitResult, Repository

TRAINED_ON = "dacflow.trained_on"


@dataclass
class TrainingDelta:
    """The rows to train on next: `rows` (inserted + updated, new values), `deleted_keys`, and which commits."""

    table: str
    since: str | None
    data_commit: str
    rows: Any
    deleted_keys: Any
    counts: dict[str, int]

    @property
    def full(self) -> bool:
        """True when there was no earlier training: `rows` is the whole table."""
        return self.since is None


def last_trained_on(repo: Repository, model_branch: str, table: str) -> str | None:
    """The data commit the newest model on `model_branch` was trained on for `table`, if any."""
    if repo.head(model_branch) is None:
        return None
    for _cid, commit in repo.log(model_branch):
        info = commit.meta.get(TRAINED_ON)
        if isinstance(info, Mapping) and info.get("table") == table and isinstance(info.get("commit"), str):
            return str(info["commit"])
    return None


def training_delta(repo: Repository, table: str, since: str | None, head: str = "main") -> TrainingDelta:
    """Rows of `table` new or changed from data commit `since` to `head` (all rows if `since` is None)."""
    data_commit = repo.resolve(head)
    if since is None:
        rows = repo.read_table(data_commit, table)
        empty = rows.select(repo.table_schema(data_commit, table)[1]).slice(0, 0)
        return TrainingDelta(table, None, data_commit, rows, empty, {"inserted": len(rows), "updated": 0, "deleted": 0})
    try:
        since_id = repo.resolve(since)
    except RefNotFoundError:
        raise RefNotFoundError(
            f"the model was trained on {since}, which this repository does not have; "
            "pull it first or retrain from scratch",
            ref=since,
        ) from None
    delta = repo.diff(since_id, data_commit, table=table)
    return TrainingDelta(table, since_id, data_commit, delta.changed_rows(), delta.deleted_keys, delta.counts)


def commit_model(
    repo: Repository,
    branch: str,
    files: Mapping[str, bytes | str],
    delta: TrainingDelta,
    *,
    message: str = "",
    meta: Mapping[str, Any] | None = None,
) -> CommitResult:
    """Commit model files on `branch`, recording the data commit and rows the model was trained on.

    The data commit is also added to the lineage inputs (`dacflow.lineage`, engine "python" unless `meta`
    already says which engine made the model), so `dacflow lineage` links the model to its data."""
    from .lineage import add_inputs

    info = add_inputs(meta, [delta.data_commit])
    info[TRAINED_ON] = {
        "commit": delta.data_commit,
        "table": delta.table,
        "since": delta.since,
        "rows": len(delta.rows),
        **{f"rows_{k}": v for k, v in delta.counts.items()},
    }
    msg = message or f"model trained on {delta.table}@{delta.data_commit[:12]} (+{len(delta.rows)} rows)"
    return repo.commit_changes(branch, dict(files), msg, info)
