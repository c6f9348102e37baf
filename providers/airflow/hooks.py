"""`DacHook`: an Airflow connection turned into a dacflow repository, and every repository action operators use.

The hook accepts our own `dacflow` connection type, or existing `aws`, `google_cloud_platform` and `wasb`
connections (with a store URL), so a team reuses the credentials it already has for cross-cloud transfers.
Every secret read from a connection is masked in task logs before it is used.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseHook
from dacflow import DacflowError, Repository, RepositoryNotFoundError, UsageError
from dacflow.stores import open_store

from .get_provider_info import SECRET_FIELDS

log = logging.getLogger(__name__)

CLOUD_SCHEMES = ("s3", "gs", "az")
_GCS_SCOPES = ["https://www.googleapis.com/auth/devstorage.read_write"]


def _mask(value: Any) -> None:
    """Hide a secret from every task log line from now on."""
    if value:
        from airflow.sdk.log import mask_secret

        mask_secret(value)


def _scheme(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep else "file"


def _extra(conn: Any) -> dict[str, Any]:
    """The connection's extra fields, accepting both plain and `extra__<type>__` prefixed keys."""
    extra = dict(conn.extra_dejson or {})
    prefix = f"extra__{conn.conn_type}__"
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in extra.items() if v not in (None, "")}


def _aws_options(conn: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    service = extra.get("service_config") or {}
    endpoint = extra.get("endpoint_url") or (service.get("s3") or {}).get("endpoint_url") or conn.host or None
    return {
        "aws_access_key_id": conn.login or extra.get("aws_access_key_id"),
        "aws_secret_access_key": conn.password or extra.get("aws_secret_access_key"),
        "aws_session_token": extra.get("aws_session_token"),
        "region": extra.get("region_name") or extra.get("region"),
        "endpoint_url": endpoint,
        "profile": extra.get("profile_name"),
    }


def _gcp_options(extra: Mapping[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"project": extra.get("project") or extra.get("gcp_project")}
    keyfile = extra.get("keyfile_dict") or extra.get("gcp_keyfile_json")
    key_path = extra.get("key_path")
    if keyfile or key_path:
        from google.oauth2 import service_account

        try:
            if keyfile:
                info = keyfile if isinstance(keyfile, dict) else json.loads(keyfile)
                _mask(info.get("private_key"))
                creds = service_account.Credentials.from_service_account_info(info, scopes=_GCS_SCOPES)
            else:
                creds = service_account.Credentials.from_service_account_file(key_path, scopes=_GCS_SCOPES)
        except (ValueError, OSError, KeyError) as exc:
            problem = type(exc).__name__
            raise UsageError(f"the Google service account key in the connection is not usable ({problem})") from None
        options["credentials"] = creds
        options["project"] = options["project"] or getattr(creds, "project_id", None)
    if extra.get("endpoint") or extra.get("endpoint_url"):
        options["endpoint"] = extra.get("endpoint") or extra.get("endpoint_url")
    return options


def _wasb_options(conn: Any, extra: Mapping[str, Any]) -> dict[str, Any]:
    if extra.get("connection_string"):
        return {"connection_string": extra["connection_string"]}
    account_url = conn.host or extra.get("account_url")
    if account_url and "://" not in account_url:
        account_url = f"https://{account_url}"
    if not account_url and conn.login:
        account_url = f"https://{conn.login}.blob.core.windows.net"
    options: dict[str, Any] = {"account_url": account_url}
    key = conn.password or extra.get("shared_access_key")
    if key and conn.login:
        options["credential"] = {"account_name": conn.login, "account_key": key}
    elif extra.get("sas_token") or key:
        options["credential"] = extra.get("sas_token") or key
    return options


def _dacflow_options(scheme: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    if scheme == "s3":
        return {
            "endpoint_url": extra.get("endpoint_url"),
            "region": extra.get("region"),
            "aws_access_key_id": extra.get("aws_access_key_id"),
            "aws_secret_access_key": extra.get("aws_secret_access_key"),
            "aws_session_token": extra.get("aws_session_token"),
        }
    if scheme == "gs":
        return _gcp_options(
            {"project": extra.get("gcp_project"), "keyfile_dict": extra.get("gcp_keyfile_json"),
             "endpoint": extra.get("endpoint_url")}
        )  # fmt: skip
    if scheme == "az":
        return {
            "connection_string": extra.get("azure_connection_string"),
            "account_url": extra.get("azure_account_url"),
            "credential": extra.get("azure_credential"),
        }
    return {}


# connection type -> (store scheme it can open, how to read its options)
_FOREIGN = {"aws": "s3", "google_cloud_platform": "gs", "gcp": "gs", "wasb": "az"}


class DacHook(BaseHook):
    """Open a dacflow repository from an Airflow connection and act on it.

    `dacflow_conn_id` names a `dacflow`, `aws`, `google_cloud_platform` or `wasb` connection (None: no
    connection, the store's own environment credentials); `url` overrides or supplies the store URL (the
    foreign connection types hold credentials only, so they need it).
    """

    conn_name_attr = "dacflow_conn_id"
    default_conn_name = "dacflow_default"
    conn_type = "dacflow"
    hook_name = "dacflow repository"

    def __init__(self, dacflow_conn_id: str | None = default_conn_name, url: str | None = None) -> None:
        super().__init__()
        self.dacflow_conn_id = dacflow_conn_id
        self._url = url
        self._spec: tuple[str, dict[str, Any]] | None = None
        self._repo: Repository | None = None

    # -- connection -> store ---------------------------------------------------------------------------------
    def _connection(self) -> Any:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.dacflow_conn_id)  # type: ignore[arg-type]
        except AirflowNotFoundException:
            raise UsageError(
                f"Airflow connection {self.dacflow_conn_id!r} is not defined; create it (type dacflow, aws, "
                "google_cloud_platform or wasb) or pass the store url without a connection"
            ) from None

    def store_spec(self) -> tuple[str, dict[str, Any]]:
        """Return (store URL, store options) for this hook; secrets among the options are masked."""
        if self._spec is not None:
            return self._spec
        url, options = self._url, {}
        if self.dacflow_conn_id:
            conn = self._connection()
            extra = _extra(conn)
            for name in SECRET_FIELDS | {"connection_string", "sas_token", "shared_access_key", "keyfile_dict"}:
                _mask(extra.get(name))
            _mask(conn.password)
            if conn.conn_type == "dacflow":
                url = url or extra.get("url") or conn.host
                if url:
                    options = _dacflow_options(_scheme(url), extra)
            elif conn.conn_type in _FOREIGN:
                if not url:
                    raise UsageError(
                        f"connection {self.dacflow_conn_id!r} ({conn.conn_type}) holds credentials only; pass the "
                        f"store url too, e.g. {_FOREIGN[conn.conn_type]}://bucket/prefix"
                    )
                want = _FOREIGN[conn.conn_type]
                if _scheme(url) != want:
                    raise UsageError(
                        f"connection {self.dacflow_conn_id!r} has type {conn.conn_type!r}; it opens "
                        f"{want}:// URLs, not {_scheme(url)}://"
                    )
                if want == "s3":
                    options = _aws_options(conn, extra)
                elif want == "gs":
                    options = _gcp_options(extra)
                else:
                    options = _wasb_options(conn, extra)
            else:
                raise UsageError(
                    f"connection {self.dacflow_conn_id!r} has type {conn.conn_type!r}; use dacflow, aws, "
                    "google_cloud_platform or wasb"
                )
        if not url:
            raise UsageError(f"no store URL: set the url field of connection {self.dacflow_conn_id!r} or pass url")
        for value in options.values():
            if isinstance(value, dict):  # a credential dict: its key, not the account name every URL shows
                for k, v in value.items():
                    if k != "account_name":
                        _mask(v)
        self._spec = str(url), {k: v for k, v in options.items() if v not in (None, "")}
        return self._spec

    @property
    def url(self) -> str:
        return self.store_spec()[0]

    def get_repo(self, *, create: bool = False, like: Repository | None = None) -> Repository:
        """Open the repository (cached per hook); with `create`, make it when missing (settings from `like`)."""
        if self._repo is None:
            url, options = self.store_spec()
            if like is not None and create:
                from dacflow.transfer import open_or_init_like

                self._repo = open_or_init_like(like, url, **options)
            else:
                try:
                    self._repo = Repository.open(url, **options)
                except RepositoryNotFoundError:
                    if not create:
                        raise
                    log.info("creating a dacflow repository at %s", url)
                    self._repo = Repository.init(url, **options)
        return self._repo

    def get_conn(self) -> Repository:
        """Airflow's hook entry point: the opened repository."""
        return self.get_repo()

    def test_connection(self) -> tuple[bool, str]:
        """Open the repository and report its branches (the UI's Test button)."""
        try:
            repo = self.get_repo()
            return True, f"dacflow repository at {repo.url} with {len(repo.branches())} branch(es)"
        except DacflowError as exc:
            return False, str(exc)

    # -- repository actions ----------------------------------------------------------------------------------
    def head(self, branch: str) -> str | None:
        """The commit a branch points at, or None if it does not exist."""
        return self.get_repo().head(branch)

    def snapshot(
        self,
        source: str,
        branch: str,
        *,
        message: str = "",
        meta: Mapping[str, Any] | None = None,
        tables: Mapping[str, tuple[str, Sequence[str]]] | None = None,
        source_conn_id: str | None = None,
        dedupe: str | None = None,
        create: bool = True,
    ) -> dict[str, Any]:
        """Commit a local directory or an object-store prefix (`s3://…`, `gs://…`, `az://…`) on `branch`.

        `tables` declares tables among the files; `dedupe="last"` lets a later file's row win a repeated key."""
        repo = self.get_repo(create=create)
        if _scheme(source) in CLOUD_SCHEMES:
            with tempfile.TemporaryDirectory(prefix="dacflow-stage-") as staged:
                n = stage_prefix(source, staged, source_conn_id)
                log.info("staged %d object(s) from %s", n, source)
                result = repo.snapshot(staged, branch, message, meta, tables=tables, dedupe=dedupe)
        else:
            if not os.path.isdir(source):
                raise UsageError(f"snapshot source {source!r} is not a directory")
            result = repo.snapshot(source, branch, message, meta, tables=tables, dedupe=dedupe)
        return result.to_json()

    def write_table(
        self,
        branch: str,
        table: str,
        data: Any,
        *,
        key: Sequence[str] | None = None,
        mode: str = "append",
        message: str = "",
        meta: Mapping[str, Any] | None = None,
        dedupe: str | None = None,
    ) -> dict[str, Any]:
        """Write rows (a Parquet/CSV/JSON-lines path, a list of dicts or an Arrow table) to `table` on `branch`."""
        rows = load_rows(data)
        repo = self.get_repo(create=True)
        result = repo.write_table(branch, table, rows, key=key, mode=mode, message=message, meta=meta, dedupe=dedupe)
        return result.to_json()

    def branch(self, name: str, from_: str | None = None, *, delete: bool = False) -> dict[str, Any]:
        """Create branch `name` from `from_` (existing: left as is), or delete it."""
        repo = self.get_repo()
        if delete:
            return {"branch": name, "deleted": repo.delete_branch(name)}
        existed = repo.head(name) is not None
        b = repo.branch(name, from_)
        return {"branch": name, "commit": repo.head(b.name), "created": not existed}

    def tag(self, name: str, ref: str) -> dict[str, Any]:
        """Point tag `name` at the commit `ref` resolves to."""
        return {"tag": name, "commit": self.get_repo().tag(name, ref)}

    def merge(
        self,
        source: str,
        into: str,
        *,
        policy: Any = "fail",
        quarantine: str | None = None,
        message: str = "",
        meta: Mapping[str, Any] | None = None,
    ) -> Any:
        """Three-way merge of `source` into branch `into`; returns the core `MergeResult`."""
        return self.get_repo().merge(source, into, policy, quarantine=quarantine, message=message, meta=meta)

    def diff(self, base: str, target: str, *, table: str | None = None, output_path: str | None = None) -> dict:
        """What changed from `base` to `target`: row counts (and Parquet files under `output_path`) for a
        table, else the changed paths."""
        repo = self.get_repo()
        a, b = repo.resolve(base), repo.resolve(target)
        if table is None:
            return {"base": a, "target": b, **repo.diff(a, b).to_json()}
        delta = repo.diff(a, b, table=table)
        out: dict[str, Any] = {"base": a, "target": b, "table": table, **delta.counts}
        if output_path:
            out["files"] = delta.export(output_path)
        return out

    def transfer_to(
        self, target: DacHook, refs: Sequence[str] | None = None, *, force: bool = False, require_signed: Any = None
    ) -> dict[str, Any]:
        """Copy `refs` (default: all) and their history to the target hook's repository, only what it lacks.

        A missing target repository is created with this repository's settings. With `require_signed` (trusted
        public keys, see `trusted_keys`) every ref's tip must carry a trusted signature, checked here before the
        target is even opened: a refused transfer changes nothing."""
        from dacflow.transfer import transfer

        src = self.get_repo()
        if require_signed is not None:
            from dacflow.signing import verify_refs

            branches, tags = src.branches(), src.tags()
            tips = {**{f"tag {t!r}": c for t, c in tags.items()}, **{f"branch {b!r}": c for b, c in branches.items()}}
            if refs:  # named as `transfer` names them; an unknown name is left for `transfer` to report
                named = [f"branch {n!r}" if n in branches else f"tag {n.removeprefix('tags/')!r}" for n in refs]
                tips = {label: tips[label] for label in named if label in tips}
            verify_refs(src, list(tips.items()), require_signed)
        dst = target.get_repo(create=True, like=src)
        return transfer(src, dst, refs, force=force, require_signed=require_signed).to_json()

    # -- signing ---------------------------------------------------------------------------------------------
    def signing_key(self) -> Any:
        """The Ed25519 private key in the connection's `signing_key` field (PEM or base64 seed), masked in logs."""
        if not self.dacflow_conn_id:
            raise UsageError("signing needs a dacflow connection whose signing_key holds the private key")
        key = _extra(self._connection()).get("signing_key")
        if not key:
            raise UsageError(
                f"connection {self.dacflow_conn_id!r} has no signing_key; add the Ed25519 private key (PEM) to it "
                "or do not ask the task to sign"
            )
        _mask_key(str(key))
        from dacflow.signing import load_private_key

        return load_private_key(str(key).replace("\\n", "\n"))

    def sign_commit(self, commit: str) -> str:
        """Sign `commit` in this repository with the connection's signing key; return the key id."""
        from dacflow.signing import sign_commit

        return sign_commit(self.get_repo(), commit, self.signing_key())

    def public_keys(self) -> list[str]:
        """Public keys this connection vouches for: its `trusted_keys` field, else the public half of its key."""
        extra = _extra(self._connection())
        if extra.get("trusted_keys"):
            return [str(extra["trusted_keys"]).replace("\\n", "\n")]
        if extra.get("signing_key"):
            from dacflow.signing import public_key_pem

            return [public_key_pem(self.signing_key())]
        raise UsageError(f"connection {self.dacflow_conn_id!r} has neither trusted_keys nor signing_key")

    def record_lineage(self, inputs: Sequence[Any] = (), outputs: Sequence[Any] = ()) -> None:
        """Tell Airflow's hook-level lineage (read by OpenLineage) which assets this hook read and wrote."""
        try:
            from airflow.sdk.lineage import get_hook_lineage_collector
        except ImportError:  # pragma: no cover - older Airflow
            return
        collector = get_hook_lineage_collector()
        for asset in inputs:
            collector.add_input_asset(self, uri=asset.uri, name=asset.name)
        for asset in outputs:
            collector.add_output_asset(self, uri=asset.uri, name=asset.name)


def _mask_key(text: str) -> None:
    """Mask a key in task logs: the whole text and each line of its body (a log line may show one)."""
    _mask(text)
    for line in text.replace("\\n", "\n").splitlines():
        if line.strip() and not line.startswith("-----"):
            _mask(line.strip())


def trusted_keys(sources: Sequence[str] | str) -> list[str]:
    """Trusted public keys for `require_signed`: each source is a key file, a directory of `*.pub` files, key
    text, or the id of an Airflow connection (its `trusted_keys`, else the public half of its `signing_key`)."""
    out: list[str] = []
    for source in [sources] if isinstance(sources, str) else sources:
        text = str(source)
        if os.path.exists(text) or "BEGIN " in text or text.startswith("ssh-ed25519 "):
            out.append(text)
        elif os.sep in text or text.endswith((".pub", ".pem")):
            raise UsageError(f"no trusted key file or directory {text!r}", path=text)
        else:
            out.extend(DacHook(text).public_keys())
    return out


def stage_prefix(url: str, dest: str, conn_id: str | None = None) -> int:
    """Download every object under an object-store prefix into `dest` (keys that would escape it are refused)."""
    _, options = DacHook(conn_id, url=url).store_spec() if conn_id else (url, {})
    store = open_store(url, **options)
    root = os.path.realpath(dest)
    count = 0
    for info in store.list(""):
        target = os.path.realpath(os.path.join(root, info.key))
        if not target.startswith(root + os.sep) or info.key.endswith("/"):
            raise UsageError(f"object key {info.key!r} under {url} is not a safe relative path; not staging it")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(store.get(info.key))
        count += 1
    return count


def load_rows(data: Any) -> Any:
    """Rows as Arrow: a path to Parquet / CSV / JSON-lines (file or directory of Parquet), a list of dicts,
    a dict of columns, or anything `write_table` takes already."""
    import pyarrow as pa

    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if not os.path.exists(path):
            raise UsageError(f"table source {path!r} does not exist")
        if path.endswith(".csv"):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(path)
        if path.endswith((".jsonl", ".json", ".ndjson")):
            import pyarrow.json as pjson

            return pjson.read_json(path)
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if isinstance(data, list):
        return pa.Table.from_pylist(data)
    if isinstance(data, dict):
        return pa.table(data)
    return data
