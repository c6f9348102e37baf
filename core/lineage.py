"""Lineage: what made each commit, what it was made from, and what was later derived from it (DESIGN §8).

A commit made by a pipeline step carries `dacflow.lineage` in its metadata: engine, pipeline (DAG or workflow),
run, task, code fingerprint, the input commits the step read and its step-cache key. Two more keys name inputs:
`dacflow.trained_on.commit` (a model's training data, see `dacflow.retrain`) and `dacflow.merge.theirs` (the
source of a merge). `upstream` follows those edges and the parent edges back from a commit; `downstream` scans
every commit reachable from a branch or tag and returns those derived from a commit, grouped by branch. Both
return plain data (JSON-ready dicts). Commit metadata is untrusted input: malformed fields are ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import UsageError
from .objects import Commit, is_object_id
from .refs import BRANCHES, TAGS
from .stepcache import code_fingerprint  # one fingerprint: a cache key and a lineage record agree on "the code"

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

LINEAGE = "dacflow.lineage"
ENGINES = ("airflow", "flyte", "python", "cli")
FIELDS = ("engine", "pipeline", "run", "task", "code", "inputs", "step")
#: Edge kinds from a commit to what it came from, strongest first (one edge per upstream commit is kept).
TRAINED_ON, INPUT, MERGED, PARENT = "trained_on", "input", "merged", "parent"
_RANK = {TRAINED_ON: 0, INPUT: 1, MERGED: 2, PARENT: 3}
#: Names older writers used for the same fields: Airflow's `dacflow.run`, the first Flyte tasks.
_LEGACY = {"dag_id": "pipeline", "run_id": "run", "task_id": "task", "workflow": "pipeline", "execution": "run"}


def lineage_meta(
    engine: str,
    pipeline: str | None = None,
    run: str | None = None,
    task: str | None = None,
    code: str | None = None,
    inputs: Iterable[str] = (),
    step: str | None = None,
) -> dict[str, Any]:
    """Commit metadata `{"dacflow.lineage": {...}}` saying what made a commit; None fields are left out.

    `inputs` are the commit ids the step read (duplicates dropped, order kept); raise `UsageError` for a value
    that is not a full commit id, so lineage never points at a branch name that moves later."""
    if not isinstance(engine, str) or not engine:
        raise UsageError(f"lineage needs an engine name (one of {', '.join(ENGINES)}), got {engine!r}")
    info: dict[str, Any] = {"engine": engine}
    for name, value in (("pipeline", pipeline), ("run", run), ("task", task), ("code", code), ("step", step)):
        if value is not None:
            info[name] = str(value)
    ids = list(dict.fromkeys(inputs))
    bad = [i for i in ids if not is_object_id(i)]
    if bad:
        raise UsageError(f"lineage inputs must be commit ids, got {bad[0]!r}", inputs=ids)
    info["inputs"] = ids
    return {LINEAGE: info}


def with_lineage(meta: Mapping[str, Any] | None, engine: str, **fields: Any) -> dict[str, Any]:
    """`meta` plus a `dacflow.lineage` entry for `engine`, unless the caller already recorded one."""
    out = dict(meta or {})
    if LINEAGE not in out:
        out.update(lineage_meta(engine, **fields))
    return out


def add_inputs(meta: Mapping[str, Any] | None, inputs: Iterable[str], engine: str = "python") -> dict[str, Any]:
    """`meta` with `inputs` appended to its lineage inputs (a lineage entry for `engine` is created if missing)."""
    out = dict(meta or {})
    current = out.get(LINEAGE)
    info = dict(current) if isinstance(current, Mapping) else {"engine": engine}
    have = [i for i in info.get("inputs") or [] if is_object_id(i)]
    info["inputs"] = list(dict.fromkeys([*have, *(i for i in inputs if is_object_id(i))]))
    out[LINEAGE] = info
    return out


def commit_lineage(commit: Commit) -> dict[str, Any]:
    """The lineage a commit records, in the contract's field names (older `dacflow.run` and Flyte names mapped)."""
    raw = commit.meta.get(LINEAGE)
    if not isinstance(raw, Mapping):
        raw = commit.meta.get("dacflow.run")  # Airflow operators before the shared contract
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _LEGACY.get(key, key)
        if name in FIELDS and name != "inputs" and isinstance(value, (str, int)) and name not in out:
            out[name] = str(value)
    inputs = raw.get("inputs", raw.get("input"))
    if isinstance(inputs, str):
        inputs = [inputs]
    if isinstance(inputs, list):
        out["inputs"] = [i for i in inputs if is_object_id(i)]
    return out


def upstream_edges(commit: Commit) -> list[tuple[str, str]]:
    """(commit id, kind) of every commit this one came from: training data, inputs, merge source, parents."""
    found: dict[str, str] = {}

    def add(cid: Any, kind: str) -> None:
        if is_object_id(cid) and (cid not in found or _RANK[kind] < _RANK[found[cid]]):
            found[cid] = kind

    trained = commit.meta.get("dacflow.trained_on")
    if isinstance(trained, Mapping):
        add(trained.get("commit"), TRAINED_ON)
    for cid in commit_lineage(commit).get("inputs", []):
        add(cid, INPUT)
    merged = commit.meta.get("dacflow.merge")
    if isinstance(merged, Mapping):
        add(merged.get("theirs"), MERGED)
    for parent in commit.parents:
        add(parent, PARENT)
    return sorted(found.items(), key=lambda item: _RANK[item[1]])


def _describe(cid: str, commit: Commit, refs: Mapping[str, list[str]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "commit": cid,
        "message": commit.message,
        "author": commit.author,
        "time": commit.time,
        "lineage": commit_lineage(commit),
        "refs": refs.get(cid, []),
    }
    tables = commit.meta.get("dacflow.tables")
    if isinstance(tables, Mapping):
        doc["tables"] = sorted(str(t) for t in tables)
    trained = commit.meta.get("dacflow.trained_on")
    if isinstance(trained, Mapping) and isinstance(trained.get("table"), str):
        doc["trained_on"] = {k: trained.get(k) for k in ("commit", "table", "rows") if k in trained}
    return doc


def _ref_names(repo: Repository) -> dict[str, list[str]]:
    """commit id -> the branches and tags pointing at it (tags as 'tags/<name>')."""
    names: dict[str, list[str]] = {}
    for name, cid in sorted(repo.branches().items()):
        names.setdefault(cid, []).append(name)
    for name, cid in sorted(repo.tags().items()):
        names.setdefault(cid, []).append(f"tags/{name}")
    return names


def upstream(repo: Repository, ref: str, depth: int = 3) -> dict[str, Any]:
    """What `ref` was made from, `depth` edges back: {"root", "nodes": {id: commit doc}, "edges": [...]}.

    Each edge is {"from": derived commit, "to": upstream commit, "kind": trained_on|input|merged|parent}. A
    commit this repository lacks (e.g. training data kept elsewhere) is a node with "missing": true; a node
    whose own upstream lies beyond `depth` has "more": true."""
    if depth < 0:
        raise UsageError(f"depth must be 0 or more, got {depth}")
    root = repo.resolve(ref)
    refs = _ref_names(repo)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []
    level = [root]
    for distance in range(depth + 1):
        following: list[str] = []
        for cid in level:
            if cid in nodes:
                continue
            try:
                commit = repo.odb.get_commit(cid)
            except Exception as exc:  # noqa: BLE001 - an input kept in another repository is still named
                if distance == 0:
                    raise
                nodes[cid] = {"commit": cid, "missing": True, "reason": type(exc).__name__}
                continue
            nodes[cid] = _describe(cid, commit, refs)
            ups = upstream_edges(commit)
            if distance == depth:
                nodes[cid]["more"] = bool(ups)
                continue
            for up, kind in ups:
                edges.append({"from": cid, "to": up, "kind": kind})
                following.append(up)
        level = following
    return {"ref": ref, "root": root, "depth": depth, "nodes": nodes, "edges": edges}


def _walk_all(repo: Repository, heads: Iterable[str]) -> dict[str, Commit]:
    """Every commit reachable from `heads` by parent edges (each read once)."""
    commits: dict[str, Commit] = {}
    stack = list(heads)
    while stack:
        cid = stack.pop()
        if cid in commits:
            continue
        commit = repo.odb.get_commit(cid)
        commits[cid] = commit
        stack.extend(p for p in commit.parents if p not in commits)
    return commits


def _reach(commits: Mapping[str, Commit], head: str) -> set[str]:
    seen: set[str] = set()
    stack = [head]
    while stack:
        cid = stack.pop()
        if cid in seen or cid not in commits:
            continue
        seen.add(cid)
        stack.extend(commits[cid].parents)
    return seen


def downstream(repo: Repository, ref: str, branch: str | None = None) -> dict[str, Any]:
    """Every commit derived from `ref`, grouped by the branches that hold it.

    Derived means reachable from `ref` by reversed upstream edges: a later commit on top of it or a merge that
    brought it in (parent edges), and a commit that read one of those (a model trained on a `main` that contains
    it). Only commits reachable from a branch or tag are scanned. A branch holds the derived commits it reaches
    that the default branch does not (the default branch holds all it reaches), so `models` lists its model
    commits, not the `main` commits it started from. `branch` keeps only that branch's group."""
    target = repo.resolve(ref)
    branches, tags = repo.refs.list(BRANCHES), repo.refs.list(TAGS)
    if branch is not None and branch not in branches:
        raise UsageError(f"no branch {branch!r} to look for commits derived from {ref}", ref=branch)
    commits = _walk_all(repo, [*branches.values(), *tags.values()])
    children: dict[str, list[tuple[str, str]]] = {}
    for cid, commit in commits.items():
        for up, kind in upstream_edges(commit):
            children.setdefault(up, []).append((cid, kind))
    derived: set[str] = set()
    stack = [target]
    while stack:
        for child, _kind in children.get(stack.pop(), []):
            if child not in derived and child != target:
                derived.add(child)
                stack.append(child)
    via: dict[str, dict[str, str]] = {}  # each derived commit's strongest edge to the target or a derived commit
    for cid in derived:
        up, kind = next((u, k) for u, k in upstream_edges(commits[cid]) if u == target or u in derived)
        via[cid] = {"from": up, "kind": kind}
    default = repo.default_branch
    trunk = _reach(commits, branches[default]) if default in branches else set()
    groups: dict[str, list[str]] = {}
    for name, head in sorted(branches.items()):
        if branch is not None and name != branch:
            continue
        held = _reach(commits, head)
        if name != default:
            held -= trunk
        found = sorted((c for c in held if c in via), key=lambda c: commits[c].time, reverse=True)
        if found:
            groups[name] = found
    tagged = {name: cid for name, cid in sorted(tags.items()) if cid in via and branch is None}
    listed = {c for found in groups.values() for c in found} | set(tagged.values())
    refs = _ref_names(repo)
    docs = {cid: _describe(cid, commits[cid], refs) | {"via": via[cid]} for cid in listed}
    log.info("lineage: %d of %d commits derive from %s", len(via), len(commits), target[:12])
    return {
        "ref": ref,
        "commit": target,
        "branch": branch,
        "scanned": len(commits),
        "derived": len(via),
        "commits": docs,
        "branches": groups,
        "tags": tagged,
    }


__all__ = [
    "LINEAGE",
    "add_inputs",
    "code_fingerprint",
    "commit_lineage",
    "downstream",
    "lineage_meta",
    "upstream",
    "upstream_edges",
    "with_lineage",
]
