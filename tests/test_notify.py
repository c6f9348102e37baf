"""Notifiers after a commit or merge: a webhook POST of the commit summary (to a local HTTP server the test starts)
and a log line; a failing webhook never fails the commit and never shows its secret."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow as pa
import pytest
from dacflow import Repository
from dacflow.gates import add_gate
from dacflow.notify import post_webhook, redact_url


class Hook:
    """A local webhook receiver: records each POST (path, headers, JSON body) and answers `status`."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.requests: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                kind = self.headers["Content-Type"]
                hook.requests.append({"path": self.path, "type": kind, "body": json.loads(body)})
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def test_a_webhook_receives_the_commit_summary(repo: Repository, hook: Hook) -> None:
    add_gate(repo, "webhook", "main", url=f"{hook.url}/dacflow/T0K3N")
    root = repo.head("main")
    result = repo.write_table("main", "vitals", pa.table({"id": [1, 2, 3]}), key=["id"], message="first rows")
    assert [r["path"] for r in hook.requests] == ["/dacflow/T0K3N"] and hook.requests[0]["type"] == "application/json"
    body = hook.requests[0]["body"]
    commit = repo.get_commit(result.commit)
    assert body == {
        "event": "commit",
        "action": "commit",
        "repo": repo.url,
        "branch": "main",
        "from": root,
        "to": result.commit,
        "source": None,
        "commit": {
            "id": result.commit,
            "parents": [root],
            "author": commit.author,
            "time": commit.time,
            "message": "first rows",
        },
        "paths": {"added": 1, "removed": 0, "modified": 0, "changes": [
            {"path": "vitals", "status": "added", "kind": "table"}
        ]},
        "tables": {"vitals": {"mode": "upsert", "inserted": 3, "updated": 0, "deleted": 0}},
    }  # fmt: skip
    # a merge notifies as a merge, with its source; other branches have no notifier
    repo.branch("dev")
    repo.commit_changes("dev", {"notes.txt": b"n"})
    assert len(hook.requests) == 1
    merged = repo.merge("dev", "main")
    body = hook.requests[1]["body"]
    assert (body["event"], body["action"], body["source"], body["to"]) == ("merge", "merge", "dev", merged.commit)
    assert body["paths"]["changes"] == [{"path": "notes.txt", "status": "added", "kind": "file"}]


def test_a_failing_webhook_does_not_fail_the_commit_nor_show_its_secret(
    repo: Repository, caplog: pytest.LogCaptureFixture
) -> None:
    down = Hook(status=503)
    try:
        add_gate(repo, "webhook", "main", url=f"{down.url}/hooks/S3CR3T?token=S3CR3T", retries=2, timeout=2)
        with caplog.at_level(logging.INFO, logger="dacflow.notify"):
            result = repo.commit_changes("main", {"a.txt": b"1"})
        assert result.created and repo.head("main") == result.commit
        assert len(down.requests) == 3  # the first attempt and two retries
        assert f"webhook {down.url} failed after 3 attempt(s): HTTP 503 (the commit stands)" in caplog.text
        assert "S3CR3T" not in caplog.text
    finally:
        down.close()
    # nobody listening at all: the commit still stands
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dacflow.notify"):
        again = repo.commit_changes("main", {"a.txt": b"2"})
    assert again.created and repo.head("main") == again.commit
    assert "failed after 3 attempt(s): URLError" in caplog.text


def test_a_webhook_url_can_stay_out_of_the_repository(
    repo: Repository, hook: Hook, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    gate = add_gate(repo, "webhook", "main", url_env="DACFLOW_TEST_HOOK")
    assert hook.url not in repo.store.get("gates").decode()
    with caplog.at_level(logging.WARNING, logger="dacflow.notify"):
        assert repo.commit_changes("main", {"a": b"1"}).created  # not set: nothing sent, nothing fails
    assert hook.requests == [] and f"webhook {gate['id']}: $DACFLOW_TEST_HOOK is not set" in caplog.text
    monkeypatch.setenv("DACFLOW_TEST_HOOK", f"{hook.url}/x")
    c = repo.commit_changes("main", {"a": b"2"}).commit
    assert [r["body"]["to"] for r in hook.requests] == [c]


def test_the_log_notifier_writes_one_line(repo: Repository, caplog: pytest.LogCaptureFixture) -> None:
    add_gate(repo, "log", "ma*", level="warning")
    with caplog.at_level(logging.WARNING, logger="dacflow.notify"):
        c = repo.commit_changes("main", {"a": b"1"}, message="add a")
    (record,) = [r for r in caplog.records if r.name == "dacflow.notify"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith(f"commit {repo.url} on main: ") and c.commit[:12] in record.getMessage()
    assert record.getMessage().endswith(": add a")


def test_post_webhook_and_redaction(hook: Hook) -> None:
    assert post_webhook(f"{hook.url}/ok", {"to": "x"}, retries=0)
    assert hook.requests[0]["body"] == {"to": "x"}
    assert not post_webhook("http://127.0.0.1:9/closed", {"to": "x"}, timeout=1, retries=0)
    assert redact_url("https://user:pw@host:8443/p/a?sig=abc#frag") == "https://host:8443/p/a"
    assert redact_url("/local/dir") == "/local/dir"


def test_a_url_env_that_holds_no_url_is_never_logged(
    repo: Repository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever can edit the gate config must not be able to read another variable through the logs."""
    monkeypatch.setenv("DACFLOW_TEST_NOT_A_URL", "supersecret-token-4711")
    add_gate(repo, "webhook", "main", url_env="DACFLOW_TEST_NOT_A_URL")
    caplog.set_level(logging.DEBUG)
    repo.commit_changes("main", {"a.txt": b"x"}, "a commit")  # the commit stands
    assert repo.read_file("main", "a.txt") == b"x"
    assert "not an http(s) URL" in caplog.text and "$DACFLOW_TEST_NOT_A_URL" in caplog.text
    assert "supersecret" not in caplog.text
