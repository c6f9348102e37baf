"""Operators: snapshot, write table, branch, merge, diff, transfer and tag — thin shells over `DacHook`.

Each returns plain JSON (commit ids, counts, bytes) as its XCom, stamps the commits it makes with the DAG, run,
task and input commits that made them (`dacflow.lineage` metadata, see `dacflow.lineage`), signs them with the
connection's key when asked (`sign=True`), sets the extra of its dacflow outlet assets to the commit it produced,
and tells OpenLineage what it read and wrote, each dataset with the commit as its version. A dacflow error fails
the task with one line naming the problem; only transient store errors are left to Airflow's retries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from dacflow import DacflowError, MergeConflictError
from dacflow.errors import TransientStoreError
from dacflow.watch import describe_move

from .assets import SCHEME, create_asset, parse_uri
from .hooks import DacHook, trusted_keys
from .triggers import one_line

log = logging.getLogger(__name__)

CONFLICT_ROWS_IN_XCOM = 100  # the conflict report in XCom lists at most this many conflicts (the count is exact)


@contextmanager
def failing_with_one_line() -> Iterator[None]:
    """Turn a dacflow error into a task failure whose message is one line (transient ones stay retryable)."""
    try:
        yield
    except TransientStoreError as exc:
        raise AirflowException(f"dacflow: {one_line(exc)}") from None
    except DacflowError as exc:
        raise AirflowFailException(f"dacflow: {one_line(exc)}") from None


def json_safe(value: Any) -> Any:
    """A value as plain JSON (timestamps and other scalars become strings), as XCom wants."""
    return json.loads(json.dumps(value, default=str))


def run_meta(context: Mapping[str, Any], inputs: Sequence[str | None] = (), code: str | None = None) -> dict[str, Any]:
    """Lineage of a commit made by a task (`dacflow.lineage`): engine airflow, DAG, run, task, the commits the
    task read and optionally a code fingerprint (`dacflow.lineage.code_fingerprint(fn)`)."""
    from dacflow.lineage import lineage_meta
    from dacflow.stepcache import current_step

    ti = context.get("ti")
    step = current_step()  # running under `cache=True`: the commit also names its cache key and code
    return lineage_meta(
        "airflow",
        pipeline=getattr(ti, "dag_id", None),
        run=context.get("run_id") or getattr(ti, "run_id", None),
        task=getattr(ti, "task_id", None),
        code=code or (step.code if step else None),
        inputs=[i for i in inputs if i],
        step=step.key if step else None,
    )


class DacBaseOperator(BaseOperator):
    """What every dacflow operator shares: the repository (connection and/or URL), outlets and lineage."""

    ui_color = "#d6eadf"

    def __init__(
        self,
        *,
        dacflow_conn_id: str | None = DacHook.default_conn_name,
        url: str | None = None,
        sign: bool = False,
        cache: bool = False,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.dacflow_conn_id, self.url, self.sign = dacflow_conn_id, url, sign
        if cache and self.cache_kind is None:
            raise ValueError(f"{type(self).__name__} does not support cache=True")
        self.cache = cache
        self._lineage: tuple[list[Asset], list[Asset]] = ([], [])
        self._versions: dict[str, str] = {}  # asset URI -> the commit read or written (OpenLineage version)

    #: Operators whose work the step cache can skip set this ("snapshot", "write_table", "merge") and define `work`.
    cache_kind: str | None = None

    @property
    def hook(self) -> DacHook:
        return DacHook(self.dacflow_conn_id, url=self.url)

    def execute(self, context: Any) -> Any:
        """Run the operator; with `cache=True` skip the work when the same step already ran (see `decorators`)."""
        if not self.cache:
            return self.work(context)
        from .decorators import run_operator_step

        return run_operator_step(self, context, lambda: self.work(context))

    def work(self, context: Any) -> Any:
        raise NotImplementedError

    def declare_outlet(self, branch: str | None, table: str | None = None) -> None:
        """Add the written branch's asset to the outlets when its store URL and branch are known at parse time."""
        if self.url and branch and "{{" not in f"{self.url}{branch}{table or ''}":
            asset = create_asset(self.url, branch, table)
            if all(getattr(o, "uri", None) != asset.uri for o in self.outlets):
                self.outlets = [*self.outlets, asset]

    def signed(self, hook: DacHook, result: dict[str, Any]) -> dict[str, Any]:
        """With `sign`, sign the commit this task made with the connection's key (`signed_by`). A task that
        changed nothing signs nothing: the head it found may be someone else's commit."""
        if not self.sign or not result.get("commit") or result.get("created") is False:
            return result
        return {**result, "signed_by": hook.sign_commit(str(result["commit"]))}

    def announce(
        self,
        context: Mapping[str, Any],
        hook: DacHook,
        branch: str,
        extra: Mapping[str, Any],
        inputs: Sequence[Asset] = (),
        table: str | None = None,
    ) -> None:
        """Record what this task wrote: outlet event extras, hook lineage and the OpenLineage datasets."""
        written = create_asset(hook.url, branch, table)
        if extra.get("commit"):
            self._versions[written.uri] = str(extra["commit"])
        for outlet in self.outlets:
            uri = getattr(outlet, "uri", "")
            if isinstance(outlet, Asset) and uri.startswith(f"{SCHEME}://") and parse_uri(uri)[1] == branch:
                context["outlet_events"][outlet].extra = json_safe(dict(extra))
        hook.record_lineage(inputs, [written])
        self._lineage = (list(inputs), [written])

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage inputs and outputs of the finished task (called by the OpenLineage provider)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        from .assets import openlineage_dataset

        inputs, outputs = self._lineage
        versions = getattr(self, "_versions", {})
        return OperatorLineage(
            inputs=[_versioned(openlineage_dataset(a), versions.get(a.uri)) for a in inputs],
            outputs=[_versioned(openlineage_dataset(a), versions.get(a.uri)) for a in outputs],
        )


def _versioned(dataset: Any, commit: str | None) -> Any:
    """An OpenLineage dataset with the dacflow commit as its version facet (a commit is a dataset version)."""
    if not commit:
        return dataset
    import attr
    from openlineage.client.generated.dataset_version_dataset import DatasetVersionDatasetFacet

    return attr.evolve(dataset, facets={**(dataset.facets or {}), "version": DatasetVersionDatasetFacet(commit)})


class DacSnapshotOperator(DacBaseOperator):
    """Commit a directory or an object-store prefix (`s3://`, `gs://`, `az://`) on `branch`.

    `tables` declares tables inside it ({name: (glob, key columns)}), `dedupe="last"` lets a later file win
    a repeated key; `source_conn_id` supplies credentials for a cloud source. Returns the commit result
    (commit, parent, created, file and byte counts).
    """

    cache_kind = "snapshot"
    template_fields: Sequence[str] = ("source", "branch", "message", "url", "meta")

    def __init__(
        self,
        *,
        source: str,
        branch: str,
        message: str = "",
        meta: dict[str, Any] | None = None,
        tables: dict[str, tuple[str, Sequence[str]]] | None = None,
        source_conn_id: str | None = None,
        dedupe: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source, self.branch, self.message, self.meta = source, branch, message, meta or {}
        self.tables, self.source_conn_id, self.dedupe = tables, source_conn_id, dedupe
        self.declare_outlet(branch)

    def work(self, context: Any) -> dict[str, Any]:
        hook = self.hook
        with failing_with_one_line():
            meta = {**self.meta, **run_meta(context)}
            result = hook.snapshot(
                self.source, self.branch, message=self.message or f"snapshot of {self.source}", meta=meta,
                tables=self.tables, source_conn_id=self.source_conn_id, dedupe=self.dedupe,
            )  # fmt: skip
            result = self.signed(hook, result)
        self.announce(context, hook, self.branch, result, [Asset(name=self.source, uri=_source_uri(self.source))])
        return json_safe(result)


class DacWriteTableOperator(DacBaseOperator):
    """Write rows to a table on `branch`: append, upsert (by `key`), overwrite or delete.

    `data` is a Parquet/CSV/JSON-lines path, a list of row dicts (e.g. from XCom) or a dict of columns.
    Returns the commit result with inserted/updated/deleted counts.
    """

    cache_kind = "write_table"
    template_fields: Sequence[str] = ("data", "branch", "table", "mode", "message", "url")

    def __init__(
        self,
        *,
        branch: str,
        table: str,
        data: Any,
        key: Sequence[str] | None = None,
        mode: str = "append",
        message: str = "",
        dedupe: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.branch, self.table, self.data, self.key = branch, table, data, list(key) if key else None
        self.mode, self.message, self.dedupe = mode, message, dedupe
        self.declare_outlet(branch)

    def work(self, context: Any) -> dict[str, Any]:
        hook = self.hook
        with failing_with_one_line():
            repo = hook.get_repo(create=True)
            before = repo.head(self.branch) or repo.head(repo.default_branch)  # what the write starts from
            result = hook.write_table(
                self.branch, self.table, self.data, key=self.key, mode=self.mode,
                message=self.message or f"{self.mode} {self.table}", meta=run_meta(context, [before]),
                dedupe=self.dedupe,
            )  # fmt: skip
            result = self.signed(hook, result)
        self.announce(context, hook, self.branch, result)
        return json_safe(result)


class DacBranchOperator(DacBaseOperator):
    """Create branch `branch` from `from_ref` (left alone if it exists), or delete it with `delete=True`."""

    template_fields: Sequence[str] = ("branch", "from_ref", "url")

    def __init__(self, *, branch: str, from_ref: str | None = None, delete: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.branch, self.from_ref, self.delete = branch, from_ref, delete

    def execute(self, context: Any) -> dict[str, Any]:
        with failing_with_one_line():
            return self.hook.branch(self.branch, self.from_ref, delete=self.delete)


class DacTagOperator(DacBaseOperator):
    """Point tag `tag` at the commit `ref` resolves to (e.g. a release of a training set)."""

    template_fields: Sequence[str] = ("tag", "ref", "url")

    def __init__(self, *, tag: str, ref: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.tag, self.ref = tag, ref

    def execute(self, context: Any) -> dict[str, Any]:
        with failing_with_one_line():
            return self.hook.tag(self.tag, self.ref)


class DacMergeOperator(DacBaseOperator):
    """Three-way, row-level merge of `source` into branch `into` under `policy`.

    Policies: fail (a conflict fails the task; nothing is written), ours, theirs, latest:<column>, or
    {column: policy, "*": default}. With `quarantine`, unresolved conflicts go to that branch and the merge
    succeeds. The conflict summary is pushed to XCom key `conflicts` either way; returns the merge result.
    Into a gated branch this is the write-audit-publish step: a gate veto fails the task with every reason on one
    line and `into` stays where it was (docs/gates.md).
    """

    cache_kind = "merge"
    template_fields: Sequence[str] = ("source", "into", "policy", "quarantine", "message", "url")

    def __init__(
        self,
        *,
        source: str,
        into: str,
        policy: str | dict[str, str] = "fail",
        quarantine: str | None = None,
        message: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source, self.into, self.policy, self.quarantine, self.message = source, into, policy, quarantine, message
        self.declare_outlet(into)

    def work(self, context: Any) -> dict[str, Any]:
        hook = self.hook
        ti = context["ti"]
        with failing_with_one_line():
            repo = hook.get_repo()
            read = [repo.resolve(self.source), repo.head(self.into)]
            try:
                result = hook.merge(
                    self.source, self.into, policy=self.policy, quarantine=self.quarantine,
                    message=self.message, meta=run_meta(context, read),
                )  # fmt: skip
            except MergeConflictError as exc:  # the report goes to XCom before the task fails
                conflicts = list(getattr(exc, "conflicts", []))
                ti.xcom_push(key="conflicts", value=conflict_summary(conflicts, getattr(exc, "count", None)))
                raise
            out = self.signed(hook, json_safe(result.to_json()))
        self._versions[create_asset(hook.url, self.source).uri] = read[0]
        summary = conflict_summary(result.conflict_list)
        ti.xcom_push(key="conflicts", value=summary)
        if summary["count"]:
            log.warning("merge %s -> %s: %d conflict(s), %d unresolved", self.source, self.into,
                        summary["count"], summary["unresolved"])  # fmt: skip
        if result.commit:
            self.announce(context, hook, self.into, out, [create_asset(hook.url, self.source)])
        return out


def conflict_summary(conflicts: Sequence[Mapping[str, Any]], count: int | None = None) -> dict[str, Any]:
    """A merge's conflicts as JSON: counts (exact) and the first conflicts (table, key, column, values)."""
    rows = [dict(c) for c in conflicts[:CONFLICT_ROWS_IN_XCOM]]
    return json_safe(
        {
            "count": count if count is not None else len(conflicts),
            "unresolved": sum(1 for c in conflicts if not c.get("resolved")),
            "rows": rows,
        }
    )


class DacDiffOperator(DacBaseOperator):
    """What changed from `base` to `target`; with `table`, export the changed rows to Parquet files under
    `output_path` (inserted, updated, updated_before, deleted) for the next task, and return the counts."""

    template_fields: Sequence[str] = ("base", "target", "table", "output_path", "url")

    def __init__(
        self,
        *,
        base: str,
        target: str,
        table: str | None = None,
        output_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.base, self.target, self.table, self.output_path = base, target, table, output_path

    def execute(self, context: Any) -> dict[str, Any]:
        with failing_with_one_line():
            return json_safe(self.hook.diff(self.base, self.target, table=self.table, output_path=self.output_path))


class DacTransferOperator(BaseOperator):
    """Copy branches/tags and their history between two repositories on any stores (e.g. an Azure edge to an
    S3 hub), moving only the objects the target lacks. A missing target repository is created.

    Returns the transfer report: bytes and objects sent and skipped, requests, and each ref's move.
    """

    template_fields: Sequence[str] = ("source_url", "target_url", "refs")
    ui_color = "#f2e3c9"

    def __init__(
        self,
        *,
        source_conn_id: str | None = None,
        source_url: str | None = None,
        target_conn_id: str | None = None,
        target_url: str | None = None,
        refs: Sequence[str] | None = None,
        force: bool = False,
        require_signed: Sequence[str] | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_conn_id, self.source_url = source_conn_id, source_url
        self.target_conn_id, self.target_url = target_conn_id, target_url
        self.refs, self.force = list(refs) if refs else None, force
        self.require_signed = [require_signed] if isinstance(require_signed, str) else require_signed
        self._lineage: tuple[list[Asset], list[Asset]] = ([], [])
        self._versions: dict[str, str] = {}
        if target_url and self.refs and not any("{{" in x for x in [target_url, *self.refs]):
            self.outlets = [*self.outlets, *(create_asset(target_url, r) for r in self.refs)]

    def execute(self, context: Any) -> dict[str, Any]:
        source = DacHook(self.source_conn_id, url=self.source_url)
        target = DacHook(self.target_conn_id, url=self.target_url)
        with failing_with_one_line():
            trusted = trusted_keys(self.require_signed) if self.require_signed else None
            report = source.transfer_to(target, self.refs, force=self.force, require_signed=trusted)
        names = [r.split("/", 1)[1] for r in report["refs"] if r.startswith("branches/")]
        inputs = [create_asset(source.url, n) for n in names]
        outputs = [create_asset(target.url, n) for n in names]
        moved = {r.split("/", 1)[1]: v for r, v in report["refs"].items() if r.startswith("branches/")}
        for outlet in self.outlets:
            uri = getattr(outlet, "uri", "")
            if uri.startswith(f"{SCHEME}://") and (move := moved.get(parse_uri(uri)[1])) and move["to"]:
                described = describe_move(target.get_repo(), parse_uri(uri)[1], move["to"], move["from"])
                context["outlet_events"][outlet].extra = json_safe(described.to_json())
        target.record_lineage(inputs, outputs)
        self._lineage = (inputs, outputs)
        self._versions = {a.uri: moved[n]["to"] for n, a in [*zip(names, inputs, strict=True),
                                                             *zip(names, outputs, strict=True)]}  # fmt: skip
        log.info("sent %d bytes in %d objects (%d skipped)", report["bytes_sent"], report["objects_sent"],
                 report["objects_skipped"])  # fmt: skip
        return json_safe(report)

    get_openlineage_facets_on_complete = DacBaseOperator.get_openlineage_facets_on_complete


def _source_uri(source: str) -> str:
    import os

    return source if "://" in source else f"file://{os.path.abspath(source)}"


class DacSyncOperator(DacBaseOperator):
    """Bring the repository's subscriptions (all, or those named) up to date, pulling only deltas from each
    source and its peers; return the per-subscription reports (status, from, to, bytes sent per source).

    `source_conn_id` gives credentials for the sources and peers (default: each store's environment chain).
    Each synced branch's outlet asset gets the commit it moved to as its extra. A failing subscription fails the
    task with one line after the others synced; the reports are in XCom key `reports` either way."""

    template_fields: Sequence[str] = ("subscriptions", "url")

    def __init__(
        self,
        *,
        subscriptions: Sequence[str] | None = None,
        source_conn_id: str | None = None,
        force: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.subscriptions, self.source_conn_id, self.force = list(subscriptions or []) or None, source_conn_id, force
        for name in self.subscriptions or []:
            self.declare_outlet(name)

    def execute(self, context: Any) -> dict[str, Any]:
        from dacflow.subscriptions import failures, sync

        hook, conn = self.hook, self.source_conn_id
        with failing_with_one_line():
            repo = hook.get_repo()
            reports = sync(repo, self.subscriptions, force=self.force,
                           opener=(lambda url: DacHook(conn, url=url).get_repo()) if conn else None)  # fmt: skip
            out = json_safe({"repo": repo.url, "ok": all(r.ok for r in reports),
                             "subscriptions": [r.to_json() for r in reports]})  # fmt: skip
            context["ti"].xcom_push(key="reports", value=out)
            inputs, outputs = [], []
            for r in reports:
                if r.ok and r.to and r.status != "unchanged":
                    src = create_asset(r.source, r.branch)
                    self.announce(context, hook, r.local, describe_move(repo, r.local, r.to, r.from_).to_json(), [src])
                    self._versions[src.uri] = r.to
                    inputs.append(src)
                    outputs.extend(self._lineage[1])
            self._lineage = (inputs, outputs)
            failed = failures(reports)
            if failed is not None and any(r.error_type == "TransientStoreError" for r in reports):
                raise AirflowException(f"dacflow: {one_line(failed)}")
            if failed is not None:
                raise failed
        return out
