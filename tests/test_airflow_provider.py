"""The Airflow provider (issue 5): registration, connections to stores on the emulators, one-line failures that
commit nothing, secrets that never leak, the sensor and triggers, asset watchers, operator outputs and lineage.

DAG runs use `dag.test()` on the session's DAG folder (tests/airflow_dags/dac_test_*.py); their task logs go to
stdout, where `capfd` reads them. The first `dag.test()` of a process starts Airflow's in-process API server
(~10-15 s); the `airflow_ready` fixture pays that once for the module.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import shutil
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow_support import airflow_cli, load_dag, run_dag, set_connection
from conftest import write_tree
from dacflow import Repository
from emulators import AZURITE_ACCOUNT, AZURITE_KEY, azurite_connection_string

TRIGGERS = "dacflow.providers.airflow.triggers"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
FAILURE = re.compile(r"^airflow\.sdk\.exceptions\.Airflow(?:Fail)?Exception: (.*)$")
TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")


# -- helpers -------------------------------------------------------------------------------------------------


def task_logs(text: str) -> dict[str, str]:
    """Split `dag.test()` output into each task's log (from its `[DAG TEST] starting` line to the next one)."""
    logs: dict[str, str] = {}
    current = None
    for line in text.splitlines(keepends=True):
        m = TASK_START.search(line)
        if m:
            current = m.group(1)
        if current is not None:
            logs[current] = logs.get(current, "") + line
    return logs


def failure_reason(log: str) -> str:
    """The reason a task failed with: the last line of its traceback, checked to be exactly one line."""
    lines = log.splitlines()
    hits = [i for i, line in enumerate(lines) if FAILURE.match(line)]
    assert hits, f"no task failure in the log:\n{log[-3000:]}"
    i = hits[-1]
    assert i + 1 < len(lines) and TIMESTAMP.match(lines[i + 1]), f"the reason runs over lines: {lines[i : i + 3]}"
    m = FAILURE.match(lines[i])
    assert m is not None
    return m.group(1)


def rows_of(table: pa.Table, key: str = "id") -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r[key])


def put_rows(repo: Repository, branch: str, rows: list[dict[str, Any]], table: str = "t", **kw: Any) -> str:
    result = repo.write_table(branch, table, pa.Table.from_pylist(rows), key=["id"], **kw)
    assert result.commit is not None
    return str(result.commit)


def asset_events(dag_id: str, run_id: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    """(asset URI, task id, extra) of every asset event a DAG run emitted, from the metadata database."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetModel.uri, AssetEvent.source_task_id, AssetEvent.extra)
            .join(AssetEvent, AssetEvent.asset_id == AssetModel.id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        )
        return [(uri, task_id, dict(extra or {})) for uri, task_id, extra in session.execute(query)]


async def next_event(agen: Any, timeout: float) -> Any:
    return await asyncio.wait_for(agen.__anext__(), timeout)


def first_event(trigger: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Run a trigger until its first event; return the payload."""

    async def go() -> Any:
        agen = trigger.run()
        try:
            return await next_event(agen, timeout)
        finally:
            await agen.aclose()

    return asyncio.run(go()).payload


def later(delay: float, fn: Any, *args: Any) -> threading.Thread:
    """Call fn(*args) from a thread after `delay` seconds (a commit landing while a trigger waits)."""

    def run() -> None:
        time.sleep(delay)
        fn(*args)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class FakeStateStore:
    """The asset state store a triggerer injects into an event trigger (`aget`/`aset`), kept in a dict."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.broken = False

    async def aget(self, key: str) -> Any:
        if self.broken:
            raise ConnectionError("state store unreachable")
        return self.values.get(key)

    async def aset(self, key: str, value: Any) -> None:
        if self.broken:
            raise ConnectionError("state store unreachable")
        self.values[key] = value


class Records(logging.Handler):
    """Every record the `dacflow` loggers emit, unmasked (Airflow's logging setup replaces root handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        return "\n".join(formatter.format(r) for r in self.records)


@pytest.fixture
def dacflow_log() -> Iterator[Records]:
    handler, logger = Records(), logging.getLogger("dacflow")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class OutletEvents(dict):
    """`context["outlet_events"]`: an accessor with an `extra` dict per asset."""

    def __missing__(self, asset: Any) -> Any:
        self[asset] = SimpleNamespace(extra={})
        return self[asset]


def task_context(task_id: str = "t", run_id: str = "manual__1") -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id="dag_x",
        task_id=task_id,
        run_id=run_id,
        try_number=1,
        xcom_push=lambda key, value: pushed.update({key: value}),
    )
    return {"ti": ti, "run_id": run_id, "outlet_events": OutletEvents(), "pushed": pushed}


class _CurrentStdout:
    """A stream that writes to whatever `sys.stdout` is now (pytest swaps it per test; logging keeps the old one)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def run_logged(folder: Path, filename: str, capfd: pytest.CaptureFixture[str], conf: dict | None = None) -> Any:
    """`run_dag` with every log line (Airflow's and the tasks') readable through `capfd`: (outcome, task logs)."""
    capfd.readouterr()
    moved = []
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not isinstance(handler.stream, _CurrentStdout):
            moved.append((handler, handler.setStream(_CurrentStdout())))  # type: ignore[arg-type]
    try:
        out = run_dag(folder, filename, conf)
    finally:  # later tests (e.g. CLI --json output read from stdout) must not see Airflow's log lines
        for handler, stream in moved:
            handler.setStream(stream)
    captured = capfd.readouterr()
    return out, captured.out + captured.err


@pytest.fixture(scope="module")
def airflow_ready(airflow_dags: Path) -> Path:
    """The DAG folder, after one `dag.test()` has started Airflow's in-process API server (the slow first run)."""
    out = run_dag(airflow_dags, "dac_test_watch.py")
    assert out.state == "success", out.tasks
    assert out.xcoms[("seen", "return_value")] == []  # a manual run: no asset event started it
    return airflow_dags


# -- 1. registration -------------------------------------------------------------------------------------------


def test_provider_info_comes_from_the_entry_point_of_the_dacflow_distribution() -> None:
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist and ep.dist.name == "dacflow"]
    assert len(eps) == 1
    info = eps[0].load()()
    assert info["package-name"] == eps[0].dist.name == "dacflow"
    conn = info["connection-types"][0]
    assert (conn["connection-type"], conn["hook-class-name"]) == ("dacflow", "dacflow.providers.airflow.hooks.DacHook")
    secret = {k for k, v in conn["conn-fields"].items() if v["schema"].get("format") == "password"}
    assert secret == {
        "aws_secret_access_key", "aws_session_token", "gcp_keyfile_json", "azure_connection_string", "azure_credential",
        "signing_key",
    }  # fmt: skip


def test_providers_manager_knows_the_hook_asset_scheme_triggers_and_sensitive_fields() -> None:
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    from dacflow.providers.airflow import assets

    pm, runtime = ProvidersManager(), ProvidersManagerTaskRuntime()
    assert "dacflow" in pm.providers
    hook = runtime.hooks["dacflow"]
    assert hook is not None
    assert (hook.hook_class_name, hook.package_name, hook.connection_id_attribute_name) == (
        "dacflow.providers.airflow.hooks.DacHook", "dacflow", "dacflow_conn_id"
    )  # fmt: skip
    assert runtime.asset_uri_handlers["dacflow"] is assets.sanitize_uri
    assert runtime.asset_factories["dacflow"] is assets.create_asset
    assert runtime.asset_to_openlineage_converters["dacflow"] is assets.convert_asset_to_openlineage
    assert any(t.trigger_class_name == TRIGGERS and t.package_name == "dacflow" for t in pm.trigger)
    widgets = {k: w for k, w in pm.connection_form_widgets.items() if k.startswith("extra__dacflow__")}
    sensitive = {w.field_name for w in widgets.values() if w.is_sensitive}
    assert sensitive == {
        "aws_secret_access_key", "aws_session_token", "gcp_keyfile_json", "azure_connection_string", "azure_credential",
        "signing_key",
    }  # fmt: skip
    assert {"url", "endpoint_url", "aws_access_key_id"} <= {w.field_name for w in widgets.values()} - sensitive
    assert "password" in pm.field_behaviours["dacflow"]["hidden_fields"]


def test_airflow_cli_lists_the_dacflow_hook(airflow_dags: Path) -> None:
    done = airflow_cli("providers", "hooks", "-o", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    hooks = json.loads(done.stdout[done.stdout.index("[") :])
    ours = [h for h in hooks if h.get("connection_type") == "dacflow"]
    assert len(ours) == 1, ours
    assert ours[0]["class"] == "dacflow.providers.airflow.hooks.DacHook"
    assert ours[0]["package_name"] == "dacflow"


# -- 2. connections -> stores on the emulators -----------------------------------------------------------------


def _s3_dacflow(mp: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    bucket, moto = request.getfixturevalue("s3_env"), request.getfixturevalue("moto_server")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        mp.delenv(name)  # only the connection can say where and who
    keys = {"aws_access_key_id": "AKIDDACFLOW", "aws_secret_access_key": "dacflow-s3-secret"}
    url = f"s3://{bucket}/repo"
    set_connection(mp, "dac_case", "dacflow", extra={"url": url, "endpoint_url": moto.endpoint, **keys})
    return url, {"endpoint_url": moto.endpoint, "region": "us-east-1", **keys}


def _s3_aws(mp: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    bucket, moto = request.getfixturevalue("s3_env"), request.getfixturevalue("moto_server")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        mp.delenv(name)
    set_connection(mp, "dac_case", "aws", login="AKIDAWS", password="aws-conn-secret",
                   extra={"endpoint_url": moto.endpoint, "region_name": "eu-west-1"})  # fmt: skip
    keys = {"aws_access_key_id": "AKIDAWS", "aws_secret_access_key": "aws-conn-secret"}
    return f"s3://{bucket}/repo", {"endpoint_url": moto.endpoint, "region": "eu-west-1", **keys}


def _gcs(mp: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    bucket = request.getfixturevalue("gcs_env")
    set_connection(mp, "dac_case", "google_cloud_platform", extra={"project": "dacflow-test"})
    return f"gs://{bucket}/repo", {}


def _wasb_string(mp: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    container, azurite = request.getfixturevalue("azure_env"), request.getfixturevalue("azurite_server")
    mp.delenv("AZURE_STORAGE_CONNECTION_STRING")
    conn_str = azurite_connection_string(azurite.port)
    set_connection(mp, "dac_case", "wasb", extra={"connection_string": conn_str})
    return f"az://{container}/repo", {"connection_string": conn_str}


def _wasb_key(mp: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    container, azurite = request.getfixturevalue("azure_env"), request.getfixturevalue("azurite_server")
    mp.delenv("AZURE_STORAGE_CONNECTION_STRING")
    host = f"http://127.0.0.1:{azurite.port}/{AZURITE_ACCOUNT}"
    set_connection(mp, "dac_case", "wasb", login=AZURITE_ACCOUNT, password=AZURITE_KEY, host=host)
    return f"az://{container}/repo", {"connection_string": azurite_connection_string(azurite.port)}


CONNECTION_CASES = {
    "dacflow-s3": _s3_dacflow,
    "aws": _s3_aws,
    "google_cloud_platform": _gcs,
    "wasb-connection-string": _wasb_string,
    "wasb-account-key-host": _wasb_key,
}


@pytest.mark.parametrize("case", list(CONNECTION_CASES))
def test_connection_opens_its_store(
    case: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dacflow.providers.airflow.hooks import DacHook

    url, plain_options = CONNECTION_CASES[case](monkeypatch, request)
    payload = os.urandom(300_000)
    src = write_tree(tmp_path / "src", {"data/blob.bin": payload, "notes.txt": f"case {case}\n".encode()})
    hook = DacHook("dac_case", url=None if case == "dacflow-s3" else url)
    assert hook.url == url
    result = hook.snapshot(str(src), "main", message=f"via {case}")
    ok, message = hook.test_connection()
    assert ok and "1 branch(es)" in message, message

    plain = Repository.open(url, **plain_options)
    assert plain.head("main") == result["commit"]
    assert plain.get_commit("main").message == f"via {case}"
    assert plain.read_file("main", "data/blob.bin") == payload
    assert plain.read_file("main", "notes.txt") == f"case {case}\n".encode()


def test_transfer_azure_edge_to_s3_hub_sends_only_the_delta(
    azure_env: str, s3_env: str, azurite_server: Any, moto_server: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from dacflow.providers.airflow.hooks import DacHook

    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    set_connection(
        monkeypatch, "dac_edge", "wasb", extra={"connection_string": azurite_connection_string(azurite_server.port)}
    )
    set_connection(
        monkeypatch, "dac_hub", "dacflow", extra={"url": f"s3://{s3_env}/hub", "endpoint_url": moto_server.endpoint}
    )
    edge, hub = DacHook("dac_edge", url=f"az://{azure_env}/edge"), DacHook("dac_hub")

    big = bytearray(os.urandom(4 << 20))
    src = write_tree(tmp_path / "src", {"big.bin": bytes(big), "small.txt": b"v1\n"})
    first_commit = edge.snapshot(str(src), "main")["commit"]
    first = edge.transfer_to(hub, ["main"])
    root = edge.get_repo().get_commit(first_commit).parents[0]  # the hub is created with the same root commit
    assert first["refs"]["branches/main"] == {"from": root, "to": first_commit, "status": "updated"}
    assert Repository.open(f"s3://{s3_env}/hub", endpoint_url=moto_server.endpoint).head("main") == first_commit

    big[2_000_003:2_000_003] = b"inserted mid-file " * 6  # a small edit at an odd offset in the middle
    write_tree(src, {"big.bin": bytes(big), "small.txt": b"v2\n"})
    second_commit = edge.snapshot(str(src), "main")["commit"]
    second = edge.transfer_to(hub, ["main"])
    assert second["refs"]["branches/main"] == {"from": first_commit, "to": second_commit, "status": "updated"}

    hub_repo = Repository.open(f"s3://{s3_env}/hub", endpoint_url=moto_server.endpoint)
    assert hub_repo.head("main") == second_commit
    assert hub_repo.read_file("main", "big.bin") == bytes(big)
    assert list(hub_repo.get_commit(second_commit).parents) == [first_commit]
    ratio = second["bytes_sent"] / first["bytes_sent"]
    assert first["bytes_sent"] >= 4 << 20 and second["objects_skipped"] > 0
    assert ratio < 0.2, f"second transfer sent {second['bytes_sent']} bytes vs {first['bytes_sent']} ({ratio:.1%})"
    print(f"Azure -> S3: first {first['bytes_sent']} B, after a small edit {second['bytes_sent']} B ({ratio:.1%})")


# -- 3. bad input: one-line failures, nothing half-committed ---------------------------------------------------

EXPECTED_FAILURES = {
    "unknown_conn": r"dacflow: Airflow connection 'dac_nowhere' is not defined; create it \(type dacflow, aws, .*",
    "http_conn": r"dacflow: connection 'dac_http' has type 'http'; use dacflow, aws, google_cloud_platform or wasb",
    "foreign_no_url": r"dacflow: connection 'dac_aws_nourl' \(aws\) holds credentials only; pass the store url .*",
    "aws_gs_url": r"dacflow: connection 'dac_aws_nourl' has type 'aws'; it opens s3:// URLs, not gs://",
    "bad_scheme": r"dacflow: no store for URL scheme 'ftp'; known schemes: az, file, gs, s3 .*",
    "merge_missing": r"dacflow: unknown ref 'no-such-branch'.*",
    "diff_missing": r"dacflow: unknown ref 'no-such-branch'.*",
    "tag_missing": r"dacflow: unknown ref 'no-such-branch'.*",
    "merge_conflict": r"dacflow: merging conflicting into main met 3 unresolved conflict\(s\), e\.g\. table 't' .*",
}


def test_bad_input_fails_each_task_with_one_line_and_commits_nothing(
    airflow_ready: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    repo = Repository.init(str(tmp_path / "repo"))
    put_rows(repo, "main", [{"id": i, "v": i} for i in range(10)])
    repo.branch("conflicting", "main")
    put_rows(repo, "main", [{"id": i, "v": 100 + i} for i in range(3)])
    put_rows(repo, "conflicting", [{"id": i, "v": 200 + i} for i in range(3)] + [{"id": 50, "v": 50}])
    before = (repo.branches(), repo.tags(), repo.read_table("main", "t").to_pylist())
    monkeypatch.setenv("DACFLOW_TEST_FAIL_REPO", str(tmp_path / "repo"))
    set_connection(monkeypatch, "dac_http", "http", host="example.com")
    set_connection(monkeypatch, "dac_aws_nourl", "aws", login="AKIDNOURL", password="nourl-secret")
    monkeypatch.delenv("AIRFLOW_CONN_DAC_NOWHERE", raising=False)

    out, text = run_logged(airflow_ready, "dac_test_failures.py", capfd)
    logs = task_logs(text)

    assert out.state == "failed"
    assert out.tasks == dict.fromkeys(EXPECTED_FAILURES, "failed")
    for task_id, pattern in EXPECTED_FAILURES.items():
        reason = failure_reason(logs[task_id])
        assert re.fullmatch(pattern, reason), f"{task_id}: {reason!r}"
    conflicts = out.xcoms[("merge_conflict", "conflicts")]
    assert (conflicts["count"], conflicts["unresolved"], len(conflicts["rows"])) == (3, 3, 3)
    assert sorted((r["key"], r["ours"], r["theirs"]) for r in conflicts["rows"]) == [
        (json.dumps({"id": i}), str(100 + i), str(200 + i)) for i in range(3)
    ]
    after = Repository.open(str(tmp_path / "repo"))
    assert (after.branches(), after.tags(), after.read_table("main", "t").to_pylist()) == before


# -- 4. canary secrets -----------------------------------------------------------------------------------------


def _canary(tag: str) -> str:
    return f"dacflowcanary{tag}{uuid.uuid4().hex}"


def _bad_gcp_key(canary: str) -> str:
    """A service-account key file whose private key is a canary (it fails to parse)."""
    return json.dumps({
        "type": "service_account", "project_id": "dacflow-test", "private_key_id": "k1",
        "private_key": f"-----BEGIN PRIVATE KEY-----\n{canary}\n-----END PRIVATE KEY-----\n",
        "client_email": "tester@dacflow-test.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token",
    })  # fmt: skip


def test_store_spec_registers_every_secret_with_the_masker(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk._shared.secrets_masker import redact
    from dacflow import UsageError
    from dacflow.providers.airflow.hooks import DacHook

    c = {name: _canary(name) for name in ("s3key", "token", "azconn", "azcred", "awspw", "sas", "azkey", "gcp")}
    account = f"acct{uuid.uuid4().hex[:12]}"
    assert all(redact(f"<{v}>") == f"<{v}>" for v in c.values())  # nothing masks them before a hook reads them
    set_connection(monkeypatch, "dac_c1", "dacflow", extra={
        "url": "s3://bucket/repo", "aws_access_key_id": "AKIDC1", "aws_secret_access_key": c["s3key"],
        "aws_session_token": c["token"], "azure_connection_string": c["azconn"], "azure_credential": c["azcred"],
    })  # fmt: skip
    set_connection(monkeypatch, "dac_c2", "aws", login="AKIDC2", password=c["awspw"])
    set_connection(
        monkeypatch, "dac_c3", "wasb", host="https://acct.blob.core.windows.net", extra={"sas_token": c["sas"]}
    )
    set_connection(monkeypatch, "dac_c5", "wasb", login=account, password=c["azkey"])
    set_connection(monkeypatch, "dac_c4", "google_cloud_platform", extra={"keyfile_dict": _bad_gcp_key(c["gcp"])})

    _, options = DacHook("dac_c1").store_spec()
    assert options["aws_secret_access_key"] == c["s3key"]  # the store gets the real secret ...
    DacHook("dac_c2", url="s3://bucket/repo").store_spec()
    assert DacHook("dac_c3", url="az://container/repo").store_spec()[1]["credential"] == c["sas"]
    DacHook("dac_c5", url="az://container/repo").store_spec()
    with pytest.raises(UsageError) as err:
        DacHook("dac_c4", url="gs://bucket/repo").store_spec()
    assert c["gcp"] not in str(err.value) and "not usable" in str(err.value)
    for name, value in c.items():  # ... and every log line from now on hides it
        if name != "gcp":
            assert redact(f"<{value}>") == "<***>", name
    assert redact(f"https://{account}.blob.core.windows.net") == f"https://{account}.blob.core.windows.net"
    key = json.loads(_bad_gcp_key(c["gcp"]))["private_key"]
    assert c["gcp"] not in redact(f"key {key}")


def test_canary_secrets_reach_no_log_xcom_or_error(
    airflow_ready: Path,
    s3_env: str,
    moto_server: Any,
    azure_env: str,
    azurite_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    dacflow_log: Records,
) -> None:
    from dacflow import DacflowError
    from dacflow.providers.airflow.hooks import DacHook

    s3_canary, aws_canary, gcp_canary = _canary("s3"), _canary("aws"), _canary("gcp")
    az_canary = base64.b64encode(_canary("az").encode()).decode()  # an account key must be base64 to sign with
    canaries = {"s3": s3_canary, "aws": aws_canary, "az": az_canary, "gcp": gcp_canary}
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name)
    s3_url = f"s3://{s3_env}/repo"
    monkeypatch.setenv("DACFLOW_TEST_SECRETS_S3", s3_url)
    monkeypatch.setenv("DACFLOW_TEST_SECRETS_AZ", f"az://{azure_env}/repo")
    monkeypatch.setenv("DACFLOW_TEST_SECRETS_GS", "gs://dacflow-canary/repo")
    set_connection(monkeypatch, "dac_canary_s3", "dacflow", extra={
        "url": s3_url, "endpoint_url": moto_server.endpoint, "aws_access_key_id": "AKIDCANARY",
        "aws_secret_access_key": s3_canary,
    })  # fmt: skip
    set_connection(monkeypatch, "dac_canary_aws", "aws", login="AKIDCANARY2", password=aws_canary,
                   extra={"endpoint_url": moto_server.endpoint, "region_name": "us-east-1"})  # fmt: skip
    set_connection(monkeypatch, "dac_canary_az", "wasb", login=AZURITE_ACCOUNT, password=az_canary,
                   host=f"http://127.0.0.1:{azurite_server.port}/{AZURITE_ACCOUNT}")  # fmt: skip
    set_connection(
        monkeypatch, "dac_canary_gcp", "google_cloud_platform", extra={"keyfile_dict": _bad_gcp_key(gcp_canary)}
    )

    out, text = run_logged(airflow_ready, "dac_test_secrets.py", capfd)

    assert out.tasks == {"s3_write": "success", "aws_branch": "success", "azure_bad_key": "failed",
                         "gcp_bad_key": "failed"}, out.tasks  # fmt: skip
    logs = task_logs(text)
    reasons = {t: failure_reason(logs[t]) for t in ("azure_bad_key", "gcp_bad_key")}
    assert (
        reasons["gcp_bad_key"] == "dacflow: the Google service account key in the connection is not usable (ValueError)"
    )
    assert re.fullmatch(
        r"dacflow: Azure get of 'config' in az://\S+ failed: .*failed to authenticate.*", reasons["azure_bad_key"]
    )
    hub = Repository.open(s3_url, endpoint_url=moto_server.endpoint, aws_access_key_id="x", aws_secret_access_key="y")
    assert rows_of(hub.read_table("main", "t")) == [{"id": 1, "v": "one"}, {"id": 2, "v": "two"}]
    assert hub.head("dev") == hub.head("main") == out.xcoms[("s3_write", "return_value")]["commit"]

    assert "[DAG TEST] starting task_id=s3_write" in text and s3_url in text  # the captures did see the run
    assert f"initialised repository {s3_url}" in dacflow_log.text()
    with pytest.raises(DacflowError) as err:  # the error itself, before any masking of log lines
        DacHook("dac_canary_az", url=f"az://{azure_env}/repo").get_repo()
    direct = f"{err.value} {err.value.data!r}"
    assert az_canary not in direct and base64.b64decode(az_canary).decode() not in direct
    xcoms = json.dumps({f"{k}": v for k, v in out.xcoms.items()}, default=str)
    for name, canary in canaries.items():
        for where, content in {
            "task logs": text,
            "dacflow logs": dacflow_log.text(),
            "XCom": xcoms,
            "errors": str(reasons),
        }.items():
            assert canary not in content, f"the {name} canary leaked into {where}"


# -- 5. sensor and triggers ------------------------------------------------------------------------------------


def test_snapshot_trigger_serialises_and_rebuilds(tmp_path: Path) -> None:
    from airflow.sdk._shared.module_loading import import_string
    from dacflow.providers.airflow.triggers import DacSnapshotTrigger

    trigger = DacSnapshotTrigger(branch="main", dacflow_conn_id="hub", url=str(tmp_path), after="ab" * 32,
                                 meta_match={"stage": "clean"}, poke_interval=2)  # fmt: skip
    classpath, kwargs = trigger.serialize()
    assert classpath == f"{TRIGGERS}.DacSnapshotTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON, as the triggerer table stores it
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert (rebuilt.after, rebuilt.meta_match, rebuilt.poke_interval) == ("ab" * 32, {"stage": "clean"}, 2.0)


def test_snapshot_trigger_fires_when_a_commit_lands(repo: Repository) -> None:
    from dacflow.providers.airflow.triggers import DacSnapshotTrigger

    start = repo.head("main")
    trigger = DacSnapshotTrigger(branch="main", url=repo.url, after=start, poke_interval=0.05)
    committed: list[str] = []
    writer = later(0.4, lambda: committed.append(put_rows(repo, "main", [{"id": 1, "v": 1}, {"id": 2, "v": 2}])))
    t0 = time.monotonic()
    event = first_event(trigger)
    writer.join(10)  # the ref moves before put_rows returns
    assert time.monotonic() - t0 >= 0.35  # it waited for the commit
    assert event == {"status": "success", "branch": "main", "commit": committed[0], "previous": start, "parent": start,
                     "message": repo.get_commit(committed[0]).message,
                     "changes": {"t": {"inserted": 2, "updated": 0, "deleted": 0}}}  # fmt: skip


def test_snapshot_trigger_skips_commits_whose_metadata_does_not_match(repo: Repository) -> None:
    from dacflow.providers.airflow.triggers import DacSnapshotTrigger

    start = repo.head("main")
    trigger = DacSnapshotTrigger(branch="main", url=repo.url, after=start, meta_match={"stage": "clean"},
                                 poke_interval=0.05)  # fmt: skip
    commits: list[str] = []

    def two_commits() -> None:
        commits.append(put_rows(repo, "main", [{"id": 1, "v": 1}], meta={"stage": "raw"}))
        time.sleep(0.3)  # the trigger sees the raw commit, skips it, and keeps waiting
        commits.append(put_rows(repo, "main", [{"id": 1, "v": 2}], meta={"stage": "clean"}))

    writer = later(0.2, two_commits)
    event = first_event(trigger)
    writer.join(10)
    assert event["commit"] == commits[1] and event["parent"] == commits[0]
    assert event["previous"] == commits[0]  # the skipped commit counted as seen


def test_snapshot_trigger_reports_a_missing_or_vanishing_repository(repo: Repository, tmp_path: Path) -> None:
    from dacflow.providers.airflow.triggers import DacSnapshotTrigger

    missing = DacSnapshotTrigger(branch="main", url=str(tmp_path / "nothing"), poke_interval=0.05)
    event = first_event(missing)
    assert event["status"] == "error" and event["branch"] == "main"
    assert event["message"].startswith("no dacflow repository at file://") and "\n" not in event["message"]

    watching = DacSnapshotTrigger(branch="main", url=repo.url, after=repo.head("main"), poke_interval=0.05)
    later(0.5, shutil.rmtree, repo.url.removeprefix("file://"))  # deleted while the trigger polls
    t0 = time.monotonic()
    event = first_event(watching, timeout=10)
    assert time.monotonic() - t0 >= 0.45
    assert event == {"status": "error", "branch": "main", "message": f"the dacflow repository at {repo.url} is gone"}


def test_branch_event_trigger_reports_each_new_commit_and_resumes_after_a_restart(repo: Repository) -> None:
    from dacflow.providers.airflow.triggers import DacBranchEventTrigger

    state = FakeStateStore()
    start = repo.head("main")

    def trigger() -> Any:
        t = DacBranchEventTrigger(branch="main", url=repo.url, poke_interval=0.05)
        t.asset_state_store = state  # what the triggerer injects
        return t

    async def first_life() -> list[dict[str, Any]]:
        agen = trigger().run()
        pending = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.5)
        assert not pending.done(), "the head at start is the baseline, not news"
        c1 = await asyncio.to_thread(put_rows, repo, "main", [{"id": 1, "v": 1}])
        e1 = (await asyncio.wait_for(pending, 5)).payload
        c2 = await asyncio.to_thread(put_rows, repo, "main", [{"id": 2, "v": 2}])
        e2 = (await next_event(agen, 5)).payload
        await agen.aclose()
        assert (e1["commit"], e1["previous"], e1["parent"]) == (c1, start, start)
        assert (e2["commit"], e2["previous"], e2["parent"]) == (c2, c1, c1)
        return [e1, e2]

    events = asyncio.run(first_life())
    assert state.values == {"dacflow.seen.main": events[1]["commit"]}

    missed = put_rows(repo, "main", [{"id": 3, "v": 3}])  # lands while no triggerer runs
    event = first_event(trigger(), timeout=5)
    assert (event["commit"], event["previous"], event["parent"]) == (missed, events[1]["commit"], events[1]["commit"])
    assert event["changes"] == {"t": {"inserted": 1, "updated": 0, "deleted": 0}}
    assert state.values == {"dacflow.seen.main": missed}


def test_branch_event_trigger_logs_store_errors_and_never_fires_on_them(tmp_path: Path, dacflow_log: Records) -> None:
    from dacflow.providers.airflow.triggers import DacBranchEventTrigger

    state = FakeStateStore()
    state.broken = True
    t = DacBranchEventTrigger(branch="main", url=str(tmp_path / "not-yet"), poke_interval=0.05)
    t.asset_state_store = state

    async def run() -> tuple[bool, str | None]:
        agen = t.run()
        pending = asyncio.ensure_future(agen.__anext__())
        await asyncio.sleep(0.6)
        fired = pending.done()
        # The repository appears (whole, by a rename): the trigger recovers, takes its head as the baseline,
        # then reports news.
        await asyncio.to_thread(Repository.init, str(tmp_path / "staging"))
        os.rename(tmp_path / "staging", tmp_path / "not-yet")
        repo = Repository.open(str(tmp_path / "not-yet"))
        await asyncio.sleep(0.4)
        assert not pending.done()
        state.broken = False
        commit = await asyncio.to_thread(put_rows, repo, "main", [{"id": 1, "v": 1}])
        event = (await asyncio.wait_for(pending, 5)).payload
        await agen.aclose()
        return fired, commit if event["commit"] == commit else None

    fired, commit = asyncio.run(run())
    assert not fired and commit is not None
    failures = [r.getMessage() for r in dacflow_log.records if "watching branch main failed" in r.getMessage()]
    assert len(failures) >= 2 and all("no dacflow repository at" in m and "\n" not in m for m in failures)
    assert any("cannot read the asset state store" in r.getMessage() for r in dacflow_log.records)


def test_sensor_dag_waits_in_poke_mode_and_deferred_and_returns_the_move(
    airflow_ready: Path, monkeypatch: pytest.MonkeyPatch, repo: Repository, capfd: pytest.CaptureFixture[str]
) -> None:
    start = put_rows(repo, "main", [{"id": 0, "v": 0}])  # also loads the table engine before the run
    repo.branch("a", "main")
    repo.branch("b", "main")
    monkeypatch.setenv("DACFLOW_TEST_SENSOR_REPO", repo.url.removeprefix("file://"))
    monkeypatch.setenv("DACFLOW_TEST_SENSOR_AFTER", start)

    out, text = run_logged(airflow_ready, "dac_test_sensor.py", capfd)

    assert out.state == "success", out.tasks
    logs = task_logs(text)
    for task_id, branch in (("wait_poke", "a"), ("wait_deferred", "b")):
        head = repo.head(branch)
        assert head != start
        assert out.xcoms[(task_id, "return_value")] == {
            "branch": branch, "commit": head, "previous": start, "parent": start,
            "message": repo.get_commit(head).message, "changes": {"moves": {"inserted": 1, "updated": 0, "deleted": 0}},
        }  # fmt: skip
    # Each commit landed while its sensor waited: the poke-mode one in its task, the other after it deferred.
    assert f"branch a -> {repo.head('a')[:16]}" in logs["wait_poke"] and "running trigger" not in logs["wait_poke"]
    deferred = logs["wait_deferred"]
    assert f"branch b -> {repo.head('b')[:16]}" in deferred.split("[DAG TEST] running trigger in line", 1)[1]


def test_sensor_dag_fails_with_one_line_when_the_repository_vanishes(
    airflow_ready: Path, monkeypatch: pytest.MonkeyPatch, repo: Repository, capfd: pytest.CaptureFixture[str]
) -> None:
    repo.branch("a", "main")
    monkeypatch.setenv("DACFLOW_TEST_SENSOR_REPO", repo.url.removeprefix("file://"))
    monkeypatch.setenv("DACFLOW_TEST_SENSOR_AFTER", repo.head("a"))

    out, text = run_logged(airflow_ready, "dac_test_sensor_gone.py", capfd)

    assert out.tasks == {"delete_later": "success", "wait_gone": "failed"}
    reason = failure_reason(task_logs(text)["wait_gone"])
    assert re.fullmatch(
        rf"dacflow: waiting for branch 'a' failed: (the dacflow repository at {re.escape(repo.url)} is gone"
        rf"|no dacflow repository at {re.escape(repo.url)};.*)",
        reason,
    ), reason


def test_asset_watcher_registers_the_trigger_and_its_event_queues_the_dag(
    airflow_dags: Path, monkeypatch: pytest.MonkeyPatch, repo: Repository
) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.models.dag import DagModel
    from airflow.models.trigger import Trigger
    from airflow.sdk._shared.module_loading import import_string
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.session import create_session
    from dacflow.providers.airflow.assets import asset_uri
    from sqlalchemy import select

    monkeypatch.setenv("DACFLOW_TEST_WATCH_REPO", repo.url.removeprefix("file://"))
    uri = asset_uri(repo.url, "main")
    dag = load_dag(airflow_dags, "dac_test_watch.py")
    (asset,) = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag)).timetable.asset_condition.objects
    assert asset.uri == uri
    assert [(w.name, w.trigger["classpath"]) for w in asset.watchers] == [
        ("dacflow_test_main_commits", f"{TRIGGERS}.DacBranchEventTrigger")
    ]

    DagBundlesManager().sync_bundles_to_db()
    bag = BundleDagBag(dag_folder=str(airflow_dags / "dac_test_watch.py"), bundle_path=str(airflow_dags),
                       bundle_name="dags-folder")  # fmt: skip
    assert not bag.import_errors and list(bag.dags) == ["dacflow_test_watch"]
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.get(DagModel, "dacflow_test_watch").is_paused = False  # only active DAGs' watchers get triggers
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        model = session.scalars(select(AssetModel).where(AssetModel.uri == uri)).one()
        (row,) = model.triggers
        trigger_id, classpath, kwargs = row.id, row.classpath, dict(row.kwargs)
    assert classpath == f"{TRIGGERS}.DacBranchEventTrigger"
    assert kwargs == {"branch": "main", "dacflow_conn_id": None, "url": repo.url.removeprefix("file://"),
                      "meta_match": {}, "poke_interval": 0.2}  # fmt: skip

    # The triggerer's part: rebuild the trigger from its row, run it until a commit lands, submit the event.
    trigger = import_string(classpath)(**kwargs)
    committed: list[str] = []
    writer = later(0.6, lambda: committed.append(put_rows(repo, "main", [{"id": 1, "v": 1}])))
    payload = first_event(trigger, timeout=10)
    writer.join(10)
    assert payload["commit"] == committed[0]
    from airflow.triggers.base import TriggerEvent

    Trigger.submit_event(trigger_id, TriggerEvent(payload))

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.asset_id == model.id)).all()
        assert [e.extra for e in events] == [{"from_trigger": True, "payload": payload}]
        queued = session.scalars(select(AssetDagRunQueue).where(AssetDagRunQueue.asset_id == model.id)).all()
        assert [q.target_dag_id for q in queued] == ["dacflow_test_watch"]


# -- 6. operators' outputs, assets and lineage -----------------------------------------------------------------

PEOPLE = [{"id": i, "name": n, "score": float(s)} for i, n, s in
          [(1, "ann", 10), (2, "bea", 20), (3, "cat", 30), (4, "dan", 40), (5, "eve", 50)]]  # fmt: skip


def test_operators_dag_outputs_commits_rows_files_and_asset_events(
    airflow_ready: Path, monkeypatch: pytest.MonkeyPatch, repo: Repository, tmp_path: Path
) -> None:
    from dacflow.providers.airflow.assets import asset_uri

    pq.write_table(pa.Table.from_pylist(PEOPLE), tmp_path / "people.parquet")
    path = repo.url.removeprefix("file://")
    monkeypatch.setenv("DACFLOW_TEST_OPS_REPO", path)
    monkeypatch.setenv("DACFLOW_TEST_OPS_PARQUET", str(tmp_path / "people.parquet"))
    monkeypatch.setenv("DACFLOW_TEST_OPS_OUT", str(tmp_path / "diff"))
    root = repo.head("main")

    out = run_dag(airflow_ready, "dac_test_ops.py")

    assert out.state == "success", out.tasks
    x = {task: value for (task, key), value in out.xcoms.items() if key == "return_value"}
    assert x["branch_dev"] == {"branch": "dev", "commit": root, "created": True}
    c1, c2 = x["write_parquet"]["commit"], x["write_rows"]["commit"]
    assert (x["write_parquet"]["parent"], x["write_parquet"]["inserted"], x["write_parquet"]["rows"]) == (root, 5, 5)
    assert x["tag_v1"] == {"tag": "v1", "commit": c1} and repo.tags() == {"v1": c1}
    assert (x["write_rows"]["parent"], x["write_rows"]["inserted"], x["write_rows"]["updated"]) == (c1, 1, 2)
    changed = {2: {"id": 2, "name": "bea", "score": 20.5}, 4: {"id": 4, "name": "dan", "score": 44.0},
               7: {"id": 7, "name": "gus", "score": 7.0}}  # fmt: skip
    expected = [changed.get(r["id"], r) for r in PEOPLE] + [changed[7]]
    assert rows_of(repo.read_table("dev", "people")) == expected

    diff = x["diff"]
    assert (diff["base"], diff["target"], diff["table"]) == (c1, c2, "people")
    assert (diff["inserted"], diff["updated"], diff["deleted"]) == (1, 2, 0)
    files = {name: rows_of(pq.read_table(p)) for name, p in diff["files"].items()}
    assert files["inserted"] == [changed[7]]
    assert files["updated"] == [changed[2], changed[4]]
    assert files["updated_before"] == [PEOPLE[1], PEOPLE[3]]
    assert files["deleted"] == []

    merge = x["merge"]
    assert merge["commit"] == repo.head("main") == c2 and merge["fast_forward"] is True
    assert out.xcoms[("merge", "conflicts")] == {"count": 0, "unresolved": 0, "rows": []}
    for commit, task, before in ((c1, "write_parquet", root), (c2, "write_rows", c1)):
        assert repo.get_commit(commit).meta["dacflow.lineage"] == {
            "engine": "airflow", "pipeline": "dacflow_test_ops", "run": out.run_id, "task": task, "inputs": [before]
        }  # fmt: skip

    events = sorted(asset_events("dacflow_test_ops", out.run_id), key=lambda e: str(e[1]))
    dev, main = asset_uri(path, "dev"), asset_uri(path, "main")
    assert [(uri, task, extra["commit"]) for uri, task, extra in events] == [
        (main, "merge", c2), (dev, "write_parquet", c1), (dev, "write_rows", c2)
    ]  # fmt: skip
    assert events[2][2]["updated"] == 2 and events[1][2]["inserted"] == 5


def test_snapshot_operator_lineage_outlet_extra_and_run_metadata(
    s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dacflow.providers.airflow.assets import create_asset
    from dacflow.providers.airflow.operators import DacSnapshotOperator

    src = write_tree(tmp_path / "landing", {"a.csv": b"id,v\n1,2\n"})
    url = f"s3://{s3_env}/hub"
    op = DacSnapshotOperator(task_id="snap", dacflow_conn_id=None, url=url, source=str(src), branch="main")
    assert [o.uri for o in op.outlets] == [create_asset(url, "main").uri]  # declared at parse time
    ctx = task_context("snap")
    result = op.execute(ctx)

    assert Repository.open(url).read_file("main", "a.csv") == b"id,v\n1,2\n"
    assert ctx["outlet_events"][op.outlets[0]].extra["commit"] == result["commit"]
    assert Repository.open(url).get_commit(result["commit"]).meta["dacflow.lineage"]["task"] == "snap"
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"dacflow://s3/{s3_env}", "hub@main")]
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(src))]


def test_write_table_operator_lineage_names_the_table_branch(repo: Repository) -> None:
    from dacflow.providers.airflow.assets import convert_asset_to_openlineage, create_asset
    from dacflow.providers.airflow.operators import DacMergeOperator, DacWriteTableOperator

    op = DacWriteTableOperator(task_id="w", dacflow_conn_id=None, url=repo.url, branch="dev", table="people",
                               data=PEOPLE, key=["id"], mode="upsert")  # fmt: skip
    result = op.execute(task_context("w"))
    assert result["inserted"] == 5 and repo.head("dev") == result["commit"]
    lineage = op.get_openlineage_facets_on_complete(None)
    local = repo.url.removeprefix("file:///")
    bucket, _, rest = local.partition("/")
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"dacflow://file/{bucket}", f"{rest}@dev")]

    merge = DacMergeOperator(task_id="m", dacflow_conn_id=None, url=repo.url, source="dev", into="main")
    merge.execute(task_context("m"))
    lineage = merge.get_openlineage_facets_on_complete(None)
    assert [d.name for d in lineage.inputs] == [f"{rest}@dev"] and [d.name for d in lineage.outputs] == [f"{rest}@main"]
    ds = convert_asset_to_openlineage(create_asset("gs://bkt/data/heart", "main", "readings"))
    assert (ds.namespace, ds.name) == ("dacflow://gs/bkt", "data/heart@main/readings")


@pytest.mark.parametrize(
    "store, branch, table",
    [("s3://bucket/datasets/heart", "main", None), ("gs://b/p", "region/na-gcp", "readings"),
     ("az://container/deep/er path", "feature.x", None), ("/srv/data/repo", "main", "t")],
)  # fmt: skip
def test_asset_uri_round_trips(store: str, branch: str, table: str | None) -> None:
    from dacflow.providers.airflow.assets import asset_uri, create_asset, parse_uri, sanitize_uri

    uri = asset_uri(store, branch, table)
    assert uri.startswith("dacflow://") and parse_uri(uri) == (store, branch, table)
    assert urllib.parse.urlunsplit(sanitize_uri(urllib.parse.urlsplit(uri))) == uri
    asset = create_asset(store, branch, table)
    assert (asset.uri, asset.name) == (uri, uri)
    assert create_asset(store, branch, table, name="nice").name == "nice"


@pytest.mark.parametrize(
    "uri, message",
    [("s3://bucket/p?branch=main", "is not a dacflow asset URI"),
     ("dacflow://s3/bucket/p", "names no branch"),
     ("dacflow://s3/bucket/p?branch=a..b", "invalid branch name 'a..b'"),
     ("dacflow://s3/bucket/p?branch=x.lock", "invalid branch name 'x.lock'"),
     ("dacflow://s3/?branch=main", "names no bucket or path")],
)  # fmt: skip
def test_bad_asset_uris_raise_clear_value_errors(uri: str, message: str) -> None:
    from airflow.sdk import Asset
    from dacflow.providers.airflow.assets import sanitize_uri

    with pytest.raises(ValueError, match=re.escape(message)):
        sanitize_uri(urllib.parse.urlsplit(uri))
    if uri.startswith("dacflow://"):
        with pytest.raises(ValueError, match=re.escape(message)):  # Airflow calls our handler for the scheme
            Asset(uri=uri)


def test_hook_write_table_passes_dedupe_and_writes_nothing_for_no_rows(tmp_path: Path) -> None:
    """`DacWriteTableOperator(dedupe="last")` reaches the core; an empty XCom list is no change, not an error."""
    from dacflow import DacflowError
    from dacflow.providers.airflow.hooks import DacHook

    hook = DacHook(None, url=str(tmp_path / "repo"))
    rows = [{"id": 1, "v": "a"}, {"id": 1, "v": "b"}]
    with pytest.raises(DacflowError, match="duplicate key"):
        hook.write_table("main", "t", rows, key=["id"])
    done = hook.write_table("main", "t", rows, key=["id"], dedupe="last")
    assert done["created"] and hook.get_repo().read_table("main", "t").to_pylist() == [{"id": 1, "v": "b"}]
    again = hook.write_table("main", "t", [], key=["id"], mode="upsert")
    assert not again["created"] and again["commit"] == done["commit"]
