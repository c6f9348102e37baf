"""The step cache in Airflow: `@dac_step` for `@task` functions and the `cache=True` option of operators.

Both are thin shells over `dacflow.stepcache`, so a step run from Airflow and the same step run from plain Python
(`dacflow.stepcache.step`) share entries: the same name, code, input content and parameters give the same key,
whichever engine ran first. Airflow itself has no memoisation; a hit skips the work, restores the output branch
to the cached commit, logs "skipped: cache hit" and returns the cached result.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dacflow import __version__
from dacflow.errors import UsageError
from dacflow.objects import canonical_json, hash_bytes
from dacflow.repository import Repository
from dacflow.stepcache import (
    ResolvedInput,
    StepFunction,
    cached_step,
    content_id,
    content_without,
    jsonable,
    path_digest,
    resolve_input,
)

from .hooks import DacHook

log = logging.getLogger(__name__)

OPERATOR_STEP_VERSION = 1  # bump when an operator's cached behaviour changes in a way its parameters do not show


def context_lineage(context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """DAG, run and task of the running task instance (empty outside a task)."""
    if context is None:
        try:
            from airflow.sdk import get_current_context

            context = get_current_context()
        except Exception:  # noqa: BLE001 - not inside a task: no context to record
            return {}
    ti = context.get("ti")
    return {
        "pipeline": getattr(ti, "dag_id", None),
        "run": context.get("run_id") or getattr(ti, "run_id", None),
        "task": getattr(ti, "task_id", None),
    }


def dac_step(
    *,
    dacflow_conn_id: str | None = None,
    url: str | None = None,
    output_branch: str | None = None,
    inputs: Sequence[str] | Callable[[dict[str, Any]], Mapping[str, Any]] = (),
    params: Callable[[dict[str, Any]], Any] | None = None,
    name: str | None = None,
    deps: Sequence[Any] = (),
    force: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a function a cached step for use under `@task`: `@task` then `@dac_step(url=..., inputs=["raw"],
    output_branch="clean")` then `def clean(raw: str, meta=None): ...`.

    Same rules as `dacflow.stepcache.step` (inputs keyed on content and handed to the body as commit ids, other
    arguments keyed as parameters, `meta` filled with lineage for the writes). The task's XCom is the body's
    return value as JSON (a `CommitResult` as its `to_json()`), or the output commit id; on a hit, the same
    value from the cache entry. The repository comes from `dacflow_conn_id` and/or `url`, as for the operators."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        def open_repo() -> Repository:
            return DacHook(dacflow_conn_id, url=url).get_repo()

        # Built once, so argument errors surface when the DAG is parsed; the repository is opened per call.
        StepFunction(fn, open_repo, output_branch=output_branch, inputs=inputs, params=params, name=name,
                     deps=deps, force=force)  # fmt: skip

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from .operators import failing_with_one_line

            step_fn = StepFunction(fn, open_repo, output_branch=output_branch, inputs=inputs, params=params,
                                   name=name, deps=deps, force=force)  # fmt: skip
            with failing_with_one_line():
                result = step_fn.run(args, kwargs, engine="airflow", lineage=context_lineage())
            if result.hit:
                log.info("skipped: cache hit (step %s, key %s): output %s%s", result.name, result.key[:12],
                         result.commit[:12], f" restored on {result.branch}" if result.branch else "")  # fmt: skip
            value = result.value if result.hit else jsonable(result.value)
            return value if value is not None else result.commit

        sig = inspect.signature(fn)
        wrapper.__signature__ = sig.replace(  # type: ignore[attr-defined]
            parameters=[p for n, p in sig.parameters.items() if n != "meta"]
        )
        return wrapper

    return decorate


# -- operators with cache=True ------------------------------------------------------------------------------------
@dataclass
class OperatorStep:
    """How one operator run enters the cache: the branch it writes, its keyed inputs and parameters, and a check
    that its result was computed from exactly those inputs (else nothing is recorded)."""

    branch: str
    inputs: dict[str, Any]
    params: dict[str, Any]
    still_valid: Callable[[dict[str, Any]], bool]


def source_listing(source: str, conn_id: str | None = None) -> str:
    """A digest of what a snapshot source holds now: every file's path, size and mtime (local), or every key's
    size and version token (object store). Cheap to compute; a touched file counts as changed."""
    if "://" not in source:
        if not os.path.isdir(source):
            raise UsageError(f"snapshot source {source!r} is not a directory")
        listing = []
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames[:] = sorted(d for d in dirnames if d != ".dacflow")
            for fname in filenames:
                full = os.path.join(dirpath, fname)
                st = os.lstat(full)
                listing.append([os.path.relpath(full, source), st.st_size, st.st_mtime_ns])
    else:
        from dacflow.stores import open_store

        _, options = DacHook(conn_id, url=source).store_spec() if conn_id else (source, {})
        store = open_store(source, **options)
        listing = [[i.key, i.size, i.token or str(i.mtime)] for i in store.list("")]
    return hash_bytes(canonical_json({"v": 1, "source": source, "files": sorted(listing)}))


def data_digest(data: Any) -> str:
    """A digest of the rows a write-table task was given: file bytes for a path, canonical JSON for rows."""
    if isinstance(data, (str, os.PathLike)) and os.path.exists(data):
        return path_digest(data)
    if isinstance(data, (list, dict, str)):
        return hash_bytes(canonical_json(data))
    import pyarrow as pa

    from .hooks import load_rows

    table = load_rows(data)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hash_bytes(sink.getvalue().to_pybytes())


def _branch_state(repo: Repository, branch: str, without: str | None) -> ResolvedInput:
    """The branch a write lands on as it is now (the default branch's head if it does not exist yet)."""
    head = repo.head(branch) or repo.resolve(repo.default_branch)
    content = content_without(repo, head, without) if without else content_id(repo, head)
    return ResolvedInput(branch, content, "commit", head, None, without)


def _snapshot_step(op: Any, repo: Repository) -> OperatorStep:
    listing = source_listing(op.source, op.source_conn_id)
    params = {"branch": op.branch, "tables": op.tables, "dedupe": op.dedupe}
    source = ResolvedInput(op.source, listing, "external")
    return OperatorStep(
        op.branch, {"source": source}, params, lambda _: source_listing(op.source, op.source_conn_id) == listing
    )


def _write_table_step(op: Any, repo: Repository) -> OperatorStep:
    # An overwrite replaces the table whole: the rest of the branch is an input, the table's old rows are not.
    without = op.table if op.mode == "overwrite" else None
    state = _branch_state(repo, op.branch, without)
    data = ResolvedInput("data", data_digest(op.data), "external")
    params = {"branch": op.branch, "table": op.table, "key": op.key, "mode": op.mode, "dedupe": op.dedupe}

    def still_valid(result: dict[str, Any]) -> bool:
        parent = result.get("parent")
        if not parent:
            return False
        content = content_without(repo, parent, without) if without else content_id(repo, parent)
        return bool(content == state.content)

    return OperatorStep(op.branch, {"data": data, "branch": state}, params, still_valid)


def _merge_step(op: Any, repo: Repository) -> OperatorStep:
    if op.quarantine:
        raise UsageError("a merge with a quarantine branch cannot be cached (its side branch is not restored)")
    source, into = resolve_input(repo, op.source), _branch_state(repo, op.into, None)

    def still_valid(result: dict[str, Any]) -> bool:
        ours, theirs = result.get("ours"), result.get("theirs")
        if not ours or not theirs:
            return False
        return content_id(repo, ours) == into.content and content_id(repo, theirs) == source.content

    params = {"into": op.into, "policy": op.policy}
    return OperatorStep(op.into, {"source": source, "into": into}, params, still_valid)


_STEPS: dict[str, Callable[[Any, Repository], OperatorStep]] = {
    "snapshot": _snapshot_step,
    "write_table": _write_table_step,
    "merge": _merge_step,
}


def operator_code(op: Any) -> str:
    """The code fingerprint of an operator step: its class and the dacflow version (new code, new keys)."""
    cls = type(op)
    return hash_bytes(
        f"dacflow-operator/{OPERATOR_STEP_VERSION} {cls.__module__}.{cls.__qualname__} {__version__}".encode()
    )


def run_operator_step(op: Any, context: Mapping[str, Any], work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run an operator's `work()` as a cached step; on a hit return its cached result with its branch restored.

    The key is the operator class, its parameters and the content of what it reads (source files, rows, the
    branch it writes on). The XCom gains `cache`: {"hit", "key", "output", "recorded"}."""
    from .operators import conflict_summary, failing_with_one_line

    hook = op.hook
    with failing_with_one_line():
        repo = hook.get_repo(create=op.cache_kind != "merge")
        spec = _STEPS[op.cache_kind](op, repo)
        name = f"airflow.{type(op).__name__}"
        with cached_step(
            repo, name, inputs=spec.inputs, params=spec.params, code=operator_code(op), output_branch=spec.branch,
            engine="airflow", lineage=context_lineage(context),
        ) as run:  # fmt: skip
            if not run.hit:
                result = work()
                if spec.still_valid(result):
                    run.done(result.get("commit"), result=result)
                else:
                    log.info("not caching %s: what it read changed while it ran", name)
                    run.discard()
        if run.hit:
            result = dict(run.result) if isinstance(run.result, dict) else {"branch": spec.branch}
            result["commit"] = run.restored or run.output
            if getattr(op, "sign", False) and result["commit"] != run.output:
                result = op.signed(hook, result)
            log.info("skipped: cache hit (step %s, key %s): %s restored to %s", name, run.key[:12], spec.branch,
                     str(result["commit"])[:12])  # fmt: skip
            if op.cache_kind == "merge":
                count = int(result.get("conflicts") or 0)
                context["ti"].xcom_push(key="conflicts", value=conflict_summary([], count))
            op.announce(context, hook, spec.branch, result)
    return {**result, "cache": {"hit": run.hit, "key": run.key, "output": run.output, "recorded": run.recorded}}


__all__ = ["context_lineage", "dac_step", "operator_code", "run_operator_step", "source_listing"]
