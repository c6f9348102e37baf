"""Watch a branch for new commits, cheaply: a metadata request on its ref, a read only when its version changed.

The engine plugins wait on this (Airflow's sensor and event trigger, Flyte's sensor) and so does `dacflow watch`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import CONFIG_KEY
from .errors import RepositoryNotFoundError, UsageError
from .refs import BRANCHES, Refs
from .repository import Repository

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BranchMove:
    """A branch now points at `commit` (it was at `previous`; None: it did not exist)."""

    branch: str
    commit: str
    previous: str | None
    parent: str | None
    message: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: what an asset event extra, an XCom or a log line carries."""
        return {
            "branch": self.branch,
            "commit": self.commit,
            "previous": self.previous,
            "parent": self.parent,
            "message": self.message,
            "changes": self.changes,
        }


def change_counts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Row and file counts a commit's metadata records (table writes, merges, snapshots), per table."""
    changes: dict[str, Any] = {}
    tables = meta.get("dacflow.tables")
    if isinstance(tables, Mapping):
        for name, info in tables.items():
            if isinstance(info, Mapping):
                changes[str(name)] = {k: info[k] for k in ("inserted", "updated", "deleted") if k in info}
    merge = meta.get("dacflow.merge")
    if isinstance(merge, Mapping):
        for name, rows in (merge.get("rows_changed") or {}).items():
            if isinstance(rows, int):
                changes.setdefault(str(name), {"merged": rows})
    return changes


def describe_move(repo: Repository, branch: str, commit: str, previous: str | None) -> BranchMove:
    """Summarise the commit a branch moved to: parent, message and change counts from its metadata."""
    c = repo.get_commit(commit)
    return BranchMove(
        branch=branch,
        commit=commit,
        previous=previous,
        parent=c.parents[0] if c.parents else None,
        message=c.message,
        changes=change_counts(c.meta),
        meta=dict(c.meta),
    )


class BranchWatch:
    """Poll one branch; `poll()` returns a `BranchMove` once the branch points somewhere other than `after`.

    `after` is the commit already seen (None: any commit counts, so an existing branch reports at once).
    `meta_match` keeps only commits whose metadata has all these key/value pairs (others are skipped and
    remembered as seen). Each poll costs one metadata request (HEAD) unless the ref's version changed.
    """

    def __init__(
        self, repo: Repository, branch: str, *, after: str | None = None, meta_match: Mapping[str, Any] | None = None
    ) -> None:
        if not branch:
            raise UsageError("a branch name is needed to watch")
        self.repo, self.branch, self.seen = repo, branch, after
        self.meta_match = dict(meta_match or {})
        self._key = Refs.key(BRANCHES, branch)
        self._token: str | None = None

    def poll(self) -> BranchMove | None:
        """Look once; return the move if the branch is at a new commit that matches, else None.

        A missing branch is waited for; a missing repository raises `RepositoryNotFoundError`."""
        info = self.repo.store.head(self._key)
        if info is None and self.repo.store.head(CONFIG_KEY) is None:  # not a missing branch: a vanished repo
            raise RepositoryNotFoundError(f"the dacflow repository at {self.repo.url} is gone", url=self.repo.url)
        if info is None or (self._token is not None and info.token == self._token):
            return None
        commit, token = self.repo.refs.read(BRANCHES, self.branch)
        self._token = token
        if commit is None or commit == self.seen:
            return None
        move = describe_move(self.repo, self.branch, commit, self.seen)
        self.seen = commit
        if any(move.meta.get(k) != v for k, v in self.meta_match.items()):
            log.info("branch %s moved to %s; metadata does not match %s", self.branch, commit[:12], self.meta_match)
            return None
        return move
