"""Notifiers run after a branch moved: a log line, or a webhook POST of the commit summary (JSON).

A notification never fails the commit it reports: a webhook that times out or answers an error is retried a few
times (with a short backoff), then logged and given up. What is sent is the summary below, nothing else: no
credentials, no store URL parameters, no commit metadata beyond the table counts. A webhook URL that is itself a
secret (chat webhooks usually are) can be kept out of the repository with `url_env`: the name of an environment
variable read where the commit runs. Logs name a webhook by scheme and host only.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from .hooks import RefChange

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
DEFAULT_RETRIES = 2
BACKOFF = 0.5  # seconds before the first retry; doubles each time
MAX_PATHS = 50  # changed paths listed in a summary (the counts are exact)


def redact_url(url: str) -> str:
    """A URL without user info, query string and fragment (where secrets hide)."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _host(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check_webhook(gate: dict[str, Any]) -> None:
    """Validate a webhook notifier's fields (in place): an http(s) `url` or a `url_env`, timeout, retries."""
    url, env = gate.get("url"), gate.get("url_env")
    if bool(url) == bool(env):
        raise UsageError("a webhook takes a url or url_env (an environment variable holding it), not both")
    if url is not None and urllib.parse.urlsplit(str(url)).scheme not in ("http", "https"):
        raise UsageError(f"a webhook URL must be http or https, got {redact_url(str(url))!r}")
    if env is not None and (not isinstance(env, str) or not env.replace("_", "").isalnum()):
        raise UsageError(f"url_env names an environment variable, got {env!r}")
    timeout = gate.setdefault("timeout", DEFAULT_TIMEOUT)
    retries = gate.setdefault("retries", DEFAULT_RETRIES)
    if not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise UsageError(f"webhook timeout is seconds in (0, 60], got {timeout!r}")
    if not isinstance(retries, int) or not 0 <= retries <= 10:
        raise UsageError(f"webhook retries is a count from 0 to 10, got {retries!r}")


def summary(change: RefChange) -> dict[str, Any]:
    """What a notification says about a move: repository, branch, from/to, the commit and what changed."""
    commit = change.commit
    paths = change.paths
    meta = commit.meta
    tables = meta.get("dacflow.tables") if change.action == "commit" else None
    merged = meta.get("dacflow.merge")
    merged = merged if isinstance(merged, Mapping) else {}
    return {
        "event": "commit" if change.action == "commit" else "merge",
        "action": change.action,
        "repo": redact_url(change.repo.url),
        "branch": change.branch,
        "from": change.old,
        "to": change.new,
        "source": change.source or None,
        "commit": {
            "id": change.new,
            "parents": list(commit.parents),
            "author": commit.author,
            "time": commit.time,
            "message": commit.message,
        },
        "paths": {
            "added": len(paths.added),
            "removed": len(paths.removed),
            "modified": len(paths.modified),
            "changes": [{"path": c.path, "status": c.status, "kind": c.kind} for c in paths.changes[:MAX_PATHS]],
        },
        "tables": tables if isinstance(tables, Mapping) else {"rows_changed": merged.get("rows_changed", {})},
    }


def post_webhook(
    url: str, doc: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES
) -> bool:
    """POST `doc` as JSON to `url`; True on a 2xx answer. Never raises: failures are retried, then logged."""
    body = json.dumps(doc, sort_keys=True, default=str).encode()
    from . import __version__

    headers = {"Content-Type": "application/json", "User-Agent": f"dacflow/{__version__}"}
    delay = BACKOFF
    for attempt in range(retries + 1):
        try:
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) checked on add
                if 200 <= response.status < 300:
                    log.info("webhook %s: %s %s", _host(url), response.status, doc.get("to", "")[:12])
                    return True
                problem = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < retries:
            log.info("webhook %s failed (%s); retrying in %.1fs", _host(url), problem, delay)
            time.sleep(delay)
            delay *= 2
    log.warning("webhook %s failed after %d attempt(s): %s (the commit stands)", _host(url), retries + 1, problem)
    return False


def send(gate: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """Deliver `doc` through one notifier of the gate config (kind `log` or `webhook`); never raises."""
    try:
        if gate["kind"] == "log":
            level = logging.getLevelName(str(gate.get("level", "INFO")).upper())
            log.log(level if isinstance(level, int) else logging.INFO,
                    "%s %s on %s: %s -> %s by %s: %s", doc["event"], doc["repo"], doc["branch"],
                    (doc["from"] or "-")[:12], doc["to"][:12], doc["commit"]["author"],
                    doc["commit"]["message"])  # fmt: skip
            return True
        url = gate.get("url") or os.environ.get(str(gate.get("url_env")), "")
        if not url:
            log.warning("webhook %s: $%s is not set; nothing sent", gate.get("id"), gate.get("url_env"))
            return False
        parts = urllib.parse.urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:  # never echo it: it may be any secret
            log.warning("webhook %s: the URL (from %s) is not an http(s) URL; nothing sent", gate.get("id"),
                        f"${gate['url_env']}" if gate.get("url_env") else "the gate config")  # fmt: skip
            return False
        return post_webhook(
            str(url),
            doc,
            timeout=float(gate.get("timeout", DEFAULT_TIMEOUT)),
            retries=int(gate.get("retries", DEFAULT_RETRIES)),
        )
    except Exception:  # noqa: BLE001 - a notification never fails the commit
        log.warning("notifier %s failed", gate.get("id"), exc_info=True)
        return False


__all__ = ["check_webhook", "post_webhook", "redact_url", "send", "summary"]
