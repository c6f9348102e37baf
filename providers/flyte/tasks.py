"""Ready-made Flyte tasks around the dacflow core: init, snapshot, write table, head, transfer/push, merge, diff,
delta and tag.

Each is a thin `@task` over one core call; snapshots come back as `Snapshot` values (whose literal keys Flyte's
cache on content) and reports as plain JSON-able dicts. Writes record lineage (engine, pipeline = workflow,
run = execution, task, input commits) under `dacflow.lineage` in the commit metadata (see `dacflow.lineage`).
Failures raise the core's `DacflowError`s, whose message is one actionable line.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any, NamedTuple

import pyarrow as pa
from dacflow.errors import RefConflictError, RepositoryExistsError, RepositoryNotFoundError, UsageError
from dacflow.repository import Repository
from dacflow.transfer import open_or_init_like, transfer
from flytekit import current_context, task

from .values import Delta, Snapshot, _norm

log = logging.getLogger(__name__)

LINEAGE = "dacflow.lineage"


_ALIASES = {"workflow": "pipeline", "execution": "run", "input": "inputs"}  # names before the shared contract


def flyte_lineage(task_name: str | None = None, **extra: Any) -> dict[str, Any]:
    """Where a write came from, as the shared `dacflow.lineage` entry: engine flyte, pipeline (the workflow), run
    (the execution) and task from the Flyte context, plus `extra` (inputs, code, step, pipeline; the older names
    workflow, execution and input are accepted)."""
    info: dict[str, Any] = {"engine": "flyte"}
    env = os.environ
    try:
        ctx = current_context()
        ex = ctx.execution_id
        info["run"] = f"{ex.project}:{ex.domain}:{ex.name}"
        task_id = ctx.task_id
        if task_id is not None and task_id.name not in ("", "local"):
            info["task"] = task_id.name
    except Exception:  # noqa: BLE001 - outside a task there is no context: record what we know
        pass
    if env.get("FLYTE_INTERNAL_EXECUTION_WORKFLOW"):
        info["pipeline"] = env["FLYTE_INTERNAL_EXECUTION_WORKFLOW"]
    if task_name and "task" not in info:
        info["task"] = task_name
    inputs: list[str] = []
    for key, value in extra.items():
        key = _ALIASES.get(key, key)
        if value is None:
            continue
        if key == "inputs":
            inputs.extend([value] if isinstance(value, str) else value)
        else:
            info[key] = value
    info["inputs"] = [i for i in dict.fromkeys(inputs) if i]
    return info


def _meta(task_name: str, **inputs: Any) -> dict[str, Any]:
    return {LINEAGE: flyte_lineage(task_name, **inputs)}


def _jsonable(value: Any) -> Any:
    """A plain JSON value (what Flyte's dict literal carries): tuples become lists, odd scalars text."""
    return json.loads(json.dumps(value, default=str))


def _open_or_init(url: str) -> Repository:
    """Open the repository at `url`, creating it (and its bucket or container) if there is none."""
    try:
        return Repository.open(url)
    except RepositoryNotFoundError:  # also when its bucket or container does not exist yet
        pass
    try:
        return Repository.init(url)
    except RepositoryExistsError:  # created by a concurrent task meanwhile
        return Repository.open(url)


def _on(snap: Snapshot, branch: str | None) -> Snapshot:
    """The snapshot, labelled with the branch it was taken from."""
    return replace(snap, branch=branch)


def _policy(policy: str) -> Any:
    """A merge policy from text: fail, ours, theirs, latest:<column>, or a JSON object of per-column policies."""
    text = policy.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"merge policy is not valid JSON: {exc.msg} at {exc.pos}", policy=policy) from None
        if not isinstance(parsed, dict):
            raise UsageError("a per-column merge policy must be a JSON object", policy=policy)
        return parsed
    return text or "fail"


@task
def init_task(url: str) -> str:
    """Open the repository at `url`, creating it if there is none; return its canonical URL."""
    return _open_or_init(url).url


@task
def snapshot_task(url: str, src: str, branch: str = "main", message: str = "") -> Snapshot:
    """Snapshot directory `src` (a path this task can read) onto `branch`; return the new head."""
    repo = Repository.open(url)
    result = repo.snapshot(src, branch, message or f"snapshot of {os.path.basename(src)}", _meta("snapshot_task"))
    log.info("snapshot %s -> %s (%s)", src, result.commit[:12], "new" if result.created else "unchanged")
    return _on(Snapshot.of(repo, result.commit), branch)


@task
def write_table_task(
    url: str,
    branch: str,
    table: str,
    rows: pa.Table,
    key: list[str],
    mode: str = "upsert",
    message: str = "",
    create: bool = True,
) -> Snapshot:
    """Write `rows` to `table` on `branch` (append, upsert, overwrite, delete); return the head, table selected.

    With `create` a missing repository is created first."""
    repo = _open_or_init(url) if create else Repository.open(url)
    start = repo.head(branch) or repo.head(repo.default_branch)  # what the write starts from
    meta = _meta("write_table_task", inputs=[start])
    result = repo.write_table(branch, table, rows, key, mode, message=message, meta=meta)
    log.info("table %s on %s: %s", table, branch, result.stats)
    return _on(Snapshot.of(repo, result.commit, table=table), branch)


@task
def head_task(url: str, branch: str = "main", table: str = "", path: str = "") -> Snapshot:
    """The snapshot a branch (or tag, or commit) points at now, optionally narrowed to a table or a path."""
    return Snapshot.of(url, branch, table=table or None, path=path or None)


@task
def transfer_task(src: str, dst: str, refs: list[str] | None = None, force: bool = False) -> dict:
    """Copy branches/tags (default: all) from store `src` to store `dst`, sending only what `dst` lacks.

    Returns the transfer report: bytes and objects sent and skipped, refs moved, seconds."""
    report = transfer(src, _open_or_init(dst), list(refs or []) or None, force=force)
    return _jsonable(report.to_json())


class Pushed(NamedTuple):
    """What `push_task` returns: the same snapshot in the destination, and the transfer report."""

    snapshot: Snapshot
    report: dict


@task
def push_task(snapshot: Snapshot, dst: str, branch: str = "") -> Pushed:
    """Send the branch holding `snapshot` to store `dst` (only the delta travels); return it there.

    `branch` defaults to the branch the snapshot was taken from. The destination branch must end up at or past
    the snapshot's commit."""
    name = branch or snapshot.branch
    if not name:
        raise UsageError(f"say which branch of {snapshot.url} to push {snapshot.commit[:12]} with", url=snapshot.url)
    src = snapshot.repo()
    target = open_or_init_like(src, dst)  # a first push creates it with the source's chunking and compression
    report = transfer(src, target, [name])
    head = target.head(name)
    if head is None or not _contains(target, head, snapshot.commit):
        raise RefConflictError(
            f"{target.url} branch {name!r} does not contain {snapshot.commit[:12]} after the push", ref=name
        )
    moved = Snapshot.of(target, snapshot.commit, table=snapshot.table, path=snapshot.path)
    moved = _on(moved, name if head == snapshot.commit else None)
    return Pushed(moved, _jsonable(report.to_json()))


def _contains(repo: Repository, head: str, commit: str) -> bool:
    if head == commit:
        return True
    return any(cid == commit for cid, _ in repo.log(head))


class Merged(NamedTuple):
    """What `merge_task` returns: the branch merged into, and the merge report (with its conflicts)."""

    snapshot: Snapshot
    report: dict


@task
def merge_task(
    source: Snapshot, into: str = "main", policy: str = "fail", quarantine: str = "", message: str = ""
) -> Merged:
    """Three-way merge of `source` into branch `into` of the same store.

    `policy`: fail (a conflict fails the task, nothing written), ours, theirs, latest:<column>, or a JSON object of
    per-column policies. With `quarantine`, unresolved conflicts go to that branch instead of failing. The report
    holds the counts and the conflicts (table, key, column, base, ours, theirs, resolution). If the gates of `into`
    refuse (docs/gates.md), `GateRejectedError` lists every reason and `into` does not move."""
    repo = source.repo()
    label = source.branch or source.commit[:12]
    result = repo.merge(
        source.commit,
        into,
        _policy(policy),
        quarantine=quarantine or None,
        message=message or f"merge {label} into {into}",
        meta=_meta("merge_task", inputs=[source.commit, repo.head(into)]),
    )
    report = result.to_json() | {"source": label, "into": into, "conflict_list": result.conflict_list[:1000]}
    head = result.commit or repo.head(into) or source.commit
    merged = _on(Snapshot.of(repo, head, table=source.table, path=source.path), into)
    log.info("merged %s into %s: %s", label, into, result.to_json())
    return Merged(merged, _jsonable(report))


@task
def diff_task(a: Snapshot, b: Snapshot, table: str = "") -> dict:
    """What changed from `a` to `b` (same store): paths added/removed/modified, or with a table (given, or
    selected by `b`) the rows inserted/updated/deleted."""
    repo = b.repo()
    name = _norm(table) or b.table or a.table
    d = repo.diff(a.commit, b.commit, table=name)
    out = {"table": name, **d.counts} if name else d.to_json()
    return _jsonable(out)


@task
def delta_task(base: Snapshot, target: Snapshot, table: str = "") -> Delta:
    """The rows of a table that changed from `base` to `target` (same store), as a `Delta`."""
    return Delta.between(base, target, table or None)


@task
def tag_task(snapshot: Snapshot, name: str) -> Snapshot:
    """Tag the snapshot's commit as `name` (tags never move; re-tagging the same commit is fine)."""
    repo = snapshot.repo()
    existing = repo.tags().get(name)
    if existing != snapshot.commit:
        repo.tag(name, snapshot.commit)
    return snapshot


@task
def sync_task(url: str, subscriptions: list[str] | None = None, force: bool = False) -> dict:
    """Bring the subscriptions of the repository at `url` (all, or those named) up to date, pulling only deltas.

    Returns {"repo", "ok", "subscriptions": [one report each: status, from, to, bytes sent per source]}. A failing
    subscription fails the task with one line (`SyncError`) after the others synced."""
    from dacflow.subscriptions import failures, sync

    repo = Repository.open(url)
    reports = sync(repo, list(subscriptions or []) or None, force=force)
    failed = failures(reports)
    if failed is not None:
        raise failed
    return _jsonable({"repo": repo.url, "ok": True, "subscriptions": [r.to_json() for r in reports]})


__all__ = [
    "LINEAGE",
    "Merged",
    "Pushed",
    "delta_task",
    "diff_task",
    "flyte_lineage",
    "head_task",
    "init_task",
    "merge_task",
    "push_task",
    "snapshot_task",
    "sync_task",
    "tag_task",
    "transfer_task",
    "write_table_task",
]
