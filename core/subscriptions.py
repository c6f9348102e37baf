"""Publish and subscribe: a publisher marks branches as followable; subscribers pull each new commit's delta.

On-store objects (JSON, versioned, one key each; neither is a ref, so they never hold a commit id):

- `published/<quoted branch>` in the publisher's store: `{"type": "published", "v": 1, "branch", "time",
  "author", "message"}`. Only published branches can be subscribed to; unpublishing withdraws them.
- `subscriptions/<quoted local branch>` in the subscriber's store: `{"type": "subscription", "v": 1, "source",
  "branch", "local", "peers", "created"}`. The local branch name is the subscription's name (a subscriber's own
  `main` is never clobbered: subscribe `--as` another name).

Only store URLs are recorded, never credentials: every store opens with its SDK's usual credential chain. `sync`
moves each local branch to its source's head by `dacflow.transfer`, sending only what the subscriber lacks, with
the peers serving data too; `watch` polls each source branch (`dacflow.watch.BranchWatch`) and syncs on every
new commit.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from .errors import (
    DacflowError,
    KeyNotFoundError,
    PreconditionFailedError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    UsageError,
)
from .names import check_ref_name
from .objects import utc_now
from .records import decode_record
from .repository import Repository, default_author
from .snapshot import ProgressFn
from .stores.base import CREATE
from .watch import BranchWatch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PUBLISHED = "published"
SUBSCRIPTIONS = "subscriptions"
_RECORD = {PUBLISHED: "published", SUBSCRIPTIONS: "subscription"}  # key prefix -> the record's "type"
#: Longest pause between retries of a subscription whose sync failed (watch).
MAX_BACKOFF = 300.0

Opener = Callable[[str], Repository]


class NotPublishedError(RefNotFoundError):
    """A subscription asked for a branch its owner has not published."""


class SyncError(DacflowError):
    """One or more subscriptions failed to sync (each report says why)."""


# -- URLs ----------------------------------------------------------------------------------------------------


def check_url(url: str, what: str = "store URL") -> str:
    """Return `url` if it carries no credentials (user:password@, query string, fragment); else refuse it.

    The message shows the URL without the offending part, so the secret is never echoed."""
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"empty {what}")
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc or parts.query or parts.fragment:
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
        raise UsageError(
            f"{what} {shown} carries credentials or parameters; dacflow records store URLs only: give credentials "
            "through the environment (see docs/stores.md)",
            url=shown,
        )
    return url


def _open(url: str) -> Repository:
    return Repository.open(check_url(url))


def _key(kind: str, name: str) -> str:
    # Quoting '/' keeps the key space flat, as for refs: 'a' and 'a/b' can both exist on every store.
    return f"{kind}/{quote(name, safe='')}"


def _decode(data: bytes, kind: str, key: str) -> dict[str, Any]:
    return decode_record(data, kind, FORMAT_VERSION, f"{kind} record {key}", key=key)


def _encode(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# -- publishing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Published:
    """A published branch: who published it when, and where it points now (None: the branch is gone)."""

    branch: str
    time: str
    author: str
    message: str = ""
    head: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"branch": self.branch, "time": self.time, "author": self.author, "message": self.message,
                "head": self.head}  # fmt: skip


def publish(repo: Repository, branch: str, message: str = "") -> tuple[Published, bool]:
    """Mark `branch` as published; return (record, True if it was not published before).

    Raise `RefNotFoundError` if the branch does not exist. Publishing twice keeps the first record."""
    check_ref_name(branch)
    head = repo.head(branch)
    if head is None:
        raise RefNotFoundError(f"no branch {branch!r} in {repo.url} to publish", ref=branch)
    doc = {"type": PUBLISHED, "v": FORMAT_VERSION, "branch": branch, "time": utc_now(), "author": default_author(),
           "message": message}  # fmt: skip
    try:
        repo.store.put(_key(PUBLISHED, branch), _encode(doc), CREATE)
        created = True
    except PreconditionFailedError:
        doc, created = (_read(repo, PUBLISHED, branch) or doc), False
    log.info("published %s of %s", branch, repo.url)
    return _published(doc, head), created


def unpublish(repo: Repository, branch: str) -> Published:
    """Withdraw a published branch (the branch itself stays); raise `NotPublishedError` if it was not published."""
    doc = _read(repo, PUBLISHED, check_ref_name(branch))
    if doc is None:
        raise NotPublishedError(f"branch {branch!r} of {repo.url} is not published", ref=branch)
    repo.store.delete(_key(PUBLISHED, branch))
    return _published(doc, repo.head(branch))


def published(repo: Repository) -> dict[str, Published]:
    """Every published branch of a repository, with its current head."""
    out: dict[str, Published] = {}
    heads = repo.branches()
    for info in repo.store.list(f"{PUBLISHED}/"):
        name = unquote(info.key[len(PUBLISHED) + 1 :])
        doc = _read(repo, PUBLISHED, name)
        if doc is not None:
            out[name] = _published(doc, heads.get(name))
    return out


def _published(doc: dict[str, Any], head: str | None) -> Published:
    return Published(str(doc["branch"]), str(doc.get("time", "")), str(doc.get("author", "")),
                     str(doc.get("message", "")), head)  # fmt: skip


def _read(repo: Repository, kind: str, name: str) -> dict[str, Any] | None:
    key = _key(kind, name)
    try:
        data = repo.store.get(key)
    except KeyNotFoundError:
        return None
    return _decode(data, _RECORD[kind], key)


# -- subscribing ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    """Branch `branch` of the repository at `source`, followed into local branch `local` (the name).

    `peers` are other repositories holding the same data, which serve part of it during a sync."""

    source: str
    branch: str
    local: str
    peers: tuple[str, ...] = ()
    created: str = ""
    version: int = FORMAT_VERSION

    @property
    def name(self) -> str:
        return self.local

    def to_json(self) -> dict[str, Any]:
        return {"type": "subscription", "v": self.version, "source": self.source, "branch": self.branch,
                "local": self.local, "peers": list(self.peers), "created": self.created}  # fmt: skip

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Subscription:
        peers = doc.get("peers") or []
        return cls(str(doc["source"]), str(doc["branch"]), str(doc["local"]), tuple(str(p) for p in peers),
                   str(doc.get("created", "")), int(doc["v"]))  # fmt: skip


def subscribe(
    dst: Repository,
    src_url: str,
    branch: str,
    as_: str | None = None,
    peers: Sequence[str] = (),
    *,
    opener: Opener | None = None,
) -> tuple[Subscription, bool]:
    """Record in `dst` a subscription to published branch `branch` of `src_url`; return (it, True if new).

    The local branch is `as_` (default: `branch`). Refuse a branch that is not published (`NotPublishedError`),
    a URL carrying credentials (`UsageError`), and a local branch or subscription that already follows
    something else (`RefExistsError`). Nothing is transferred: `sync` does that."""
    open_ = opener or _open
    check_url(src_url, "source URL")
    for peer in peers:
        check_url(peer, "peer URL")
    local = check_ref_name(as_ or branch)
    check_ref_name(branch)
    src = open_(src_url)
    if _read(src, PUBLISHED, branch) is None:
        raise NotPublishedError(
            f"branch {branch!r} of {src.url} is not published; its owner can run "
            f"`dacflow --repo {src.url} publish {branch}`",
            ref=branch,
            url=src.url,
        )
    head = src.head(branch)
    if head is None:
        raise RefNotFoundError(f"branch {branch!r} is published but no longer exists in {src.url}", ref=branch)
    sub = Subscription(src.url, branch, local, tuple(open_(p).url for p in peers), utc_now())
    existing = _read(dst, SUBSCRIPTIONS, local)
    if existing is not None:
        old = Subscription.from_json(existing)
        if (old.source, old.branch, old.peers) == (sub.source, sub.branch, sub.peers):
            return old, False
        raise RefExistsError(
            f"subscription {local!r} in {dst.url} already follows {old.branch!r} of {old.source}; "
            f"unsubscribe it first or subscribe --as another name",
            ref=local,
        )
    mine = dst.head(local)
    if mine is not None and mine != head and not _contains(src, head, mine):
        raise RefExistsError(
            f"branch {local!r} in {dst.url} has its own history; subscribe --as another name so it is not clobbered",
            ref=local,
        )
    try:
        dst.store.put(_key(SUBSCRIPTIONS, local), _encode(sub.to_json()), CREATE)
    except PreconditionFailedError:
        raise RefExistsError(f"subscription {local!r} was created meanwhile in {dst.url}", ref=local) from None
    log.info("%s subscribed to %s of %s as %s", dst.url, branch, src.url, local)
    return sub, True


def subscriptions(dst: Repository) -> dict[str, Subscription]:
    """Every subscription recorded in `dst`, by name (= local branch)."""
    out: dict[str, Subscription] = {}
    for info in dst.store.list(f"{SUBSCRIPTIONS}/"):
        name = unquote(info.key[len(SUBSCRIPTIONS) + 1 :])
        doc = _read(dst, SUBSCRIPTIONS, name)
        if doc is not None:
            out[name] = Subscription.from_json(doc)
    return out


def unsubscribe(dst: Repository, name: str) -> Subscription:
    """Forget a subscription (its local branch and commits stay); raise `RefNotFoundError` if there is none."""
    doc = _read(dst, SUBSCRIPTIONS, name)
    if doc is None:
        raise RefNotFoundError(f"no subscription {name!r} in {dst.url}", ref=name)
    dst.store.delete(_key(SUBSCRIPTIONS, name))
    return Subscription.from_json(doc)


# -- syncing -------------------------------------------------------------------------------------------------


@dataclass
class SyncReport:
    """What syncing one subscription did: status `created|updated|unchanged|failed`, the local branch's move
    and the transfer figures (stored bytes sent, per serving source)."""

    name: str
    source: str
    branch: str
    local: str
    status: str = "unchanged"
    from_: str | None = None
    to: str | None = None
    commits: int = 0
    objects_sent: int = 0
    bytes_sent: int = 0
    raw_bytes_sent: int = 0
    objects_skipped: int = 0
    requests: int = 0
    by_source: dict[str, int] = field(default_factory=dict)
    peers_unreachable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "source": self.source, "branch": self.branch, "local": self.local,
            "status": self.status, "from": self.from_, "to": self.to, "commits": self.commits,
            "objects_sent": self.objects_sent, "bytes_sent": self.bytes_sent, "raw_bytes_sent": self.raw_bytes_sent,
            "objects_skipped": self.objects_skipped, "requests": self.requests, "by_source": self.by_source,
            "peers_unreachable": self.peers_unreachable, "seconds": round(self.seconds, 4), "error": self.error,
            "error_type": self.error_type,
        }  # fmt: skip


def _selected(dst: Repository, names: Iterable[str] | None) -> list[Subscription]:
    subs = subscriptions(dst)
    if not names:
        return [subs[n] for n in sorted(subs)]
    missing = [n for n in names if n not in subs]
    if missing:
        raise RefNotFoundError(f"no subscription {missing[0]!r} in {dst.url} (see `dacflow subscriptions`)",
                               ref=missing[0])  # fmt: skip
    return [subs[n] for n in dict.fromkeys(names)]


def sync(
    dst: Repository,
    names: Iterable[str] | None = None,
    progress: ProgressFn | None = None,
    *,
    force: bool = False,
    opener: Opener | None = None,
    require_signed: Sequence[Any] | None = None,
) -> list[SyncReport]:
    """Bring every subscription of `dst` (or those named) up to its source's head; one report each.

    A failing subscription (unreachable source, rewritten history, withdrawn branch, with `require_signed` a
    source head not signed by a trusted key) is reported as `failed` with a one-line error, nothing of it is
    copied, and the others still sync. `force` follows a source whose history was rewritten (the local branch's
    own history is replaced). Raise `RefNotFoundError` for an unknown name."""
    return [
        sync_one(dst, sub, progress, force=force, opener=opener, require_signed=require_signed)
        for sub in _selected(dst, names)
    ]


def sync_one(
    dst: Repository,
    sub: Subscription,
    progress: ProgressFn | None = None,
    *,
    force: bool = False,
    opener: Opener | None = None,
    require_signed: Sequence[Any] | None = None,
) -> SyncReport:
    """Sync one subscription; never raises a `DacflowError` (the report carries it)."""
    from .transfer import transfer

    t0 = time.perf_counter()
    report = SyncReport(sub.name, sub.source, sub.branch, sub.local)
    open_ = opener or _open
    try:
        src = open_(sub.source)
        if _read(src, PUBLISHED, sub.branch) is None:
            raise NotPublishedError(f"branch {sub.branch!r} of {src.url} is no longer published", ref=sub.branch)
        head = src.head(sub.branch)
        if head is None:
            raise RefNotFoundError(f"branch {sub.branch!r} no longer exists in {src.url}", ref=sub.branch)
        mine = dst.head(sub.local)
        report.from_, report.to = mine, mine
        if mine == head:
            return report
        if mine is not None and not force and not _contains(src, head, mine):
            raise _diverged(src, sub, mine, head)
        peers = []
        for url in sub.peers:
            try:
                peers.append(open_(url))
            except DacflowError as exc:
                log.warning("peer %s of subscription %s is unreachable: %s", url, sub.name, exc.message)
                report.peers_unreachable.append(url)
        step = None
        if progress is not None:
            step = _labelled(progress, sub.name)
        moved = transfer(
            src, dst, {sub.branch: sub.local}, sources=peers, force=force, progress=step, require_signed=require_signed
        )
        ref = moved.refs[f"branches/{sub.local}"]
        report.status, report.from_, report.to = ref["status"], ref["from"], ref["to"]
        report.commits, report.objects_sent, report.bytes_sent = moved.commits, moved.objects_sent, moved.bytes_sent
        report.raw_bytes_sent, report.objects_skipped = moved.raw_bytes_sent, moved.objects_skipped
        report.requests, report.by_source = moved.requests, dict(moved.by_source)
        log.info("synced %s: %s -> %s, %d bytes", sub.name, (mine or "(new)")[:12], head[:12], moved.bytes_sent)
    except DacflowError as exc:
        report.status, report.error = "failed", " ".join(exc.message.split())
        report.error_type, report.exit_code = type(exc).__name__, exc.exit_code
        log.warning("subscription %s failed: %s", sub.name, report.error)
    finally:
        report.seconds = time.perf_counter() - t0
    return report


def _labelled(progress: ProgressFn, name: str) -> ProgressFn:
    def step(phase: str, done: int, total: int) -> None:
        progress(f"{name}: {phase}", done, total)

    return step


def _contains(repo: Repository, head: str, commit: str) -> bool:
    """True if `commit` is `head` or one of its ancestors in `repo`."""
    from .transfer import _is_ancestor

    try:
        return _is_ancestor(repo, commit, head)
    except DacflowError:
        return False


def _diverged(src: Repository, sub: Subscription, mine: str, head: str) -> RefConflictError:
    if src.odb.locate(mine) is not None:  # the source once had the synced commit: it rewrote its branch
        text = (
            f"subscription {sub.name!r}: branch {sub.branch!r} of {src.url} was rewritten (its head {head[:12]} does "
            f"not contain {mine[:12]}, synced before); sync --force to follow it, or unsubscribe"
        )
    else:
        text = (
            f"subscription {sub.name!r}: local branch {sub.local!r} has commits {src.url} lacks (local commits, or "
            "a rewritten and collected source); move them to another branch, or sync --force to replace them"
        )
    return RefConflictError(text, ref=sub.local, subscription=sub.name, expected=mine, actual=head)


def failures(reports: Iterable[SyncReport]) -> SyncError | None:
    """A `SyncError` summarising the failed reports in one line (exit code of the first failure), or None."""
    failed = [r for r in reports if not r.ok]
    if not failed:
        return None
    return SyncError(
        f"{len(failed)} subscription(s) failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed),
        names=[r.name for r in failed],
        exit_code=failed[0].exit_code or SyncError.exit_code,
    )


# -- watching ------------------------------------------------------------------------------------------------


def watch(
    dst: Repository,
    interval: float = 5.0,
    *,
    names: Iterable[str] | None = None,
    once: bool = False,
    stop: Callable[[], bool] | None = None,
    max_events: int | None = None,
    on_event: Callable[[SyncReport], None] | None = None,
    force: bool = False,
    opener: Opener | None = None,
    progress: ProgressFn | None = None,
) -> list[SyncReport]:
    """Follow subscriptions: poll each source branch every `interval` seconds and sync when it moves.

    A source ahead of its local branch at start is synced at once. Stops after one pass (`once`), after
    `max_events` syncs, or when `stop()` returns True; returns the report of every sync made (each is also
    given to `on_event` as it happens). A failed sync is retried with back-off; a source that cannot be read
    is logged and polled again. Subscriptions added or removed meanwhile are picked up on each pass."""
    if interval < 0:
        raise UsageError("the watch interval must not be negative")
    open_ = opener or _open
    wanted = list(names) if names else None
    _selected(dst, wanted)  # unknown names fail now, not silently never
    watches: dict[str, tuple[Subscription, BranchWatch]] = {}
    retry: dict[str, tuple[float, float]] = {}  # name -> (when to retry, current back-off)
    events: list[SyncReport] = []
    while True:
        subs = subscriptions(dst)
        for name in list(watches):
            if name not in subs:
                del watches[name]
        for name in wanted or sorted(subs):
            sub = subs.get(name)
            if sub is None:
                continue
            report = _watch_step(dst, sub, watches, retry, open_, interval, force, progress, once)
            if report is None:
                continue
            events.append(report)
            if on_event is not None:
                on_event(report)
            if max_events is not None and len(events) >= max_events:
                return events
        if once or (stop is not None and stop()):
            return events
        _sleep(interval, stop)
        if stop is not None and stop():
            return events


def _watch_step(
    dst: Repository,
    sub: Subscription,
    watches: dict[str, tuple[Subscription, BranchWatch]],
    retry: dict[str, tuple[float, float]],
    open_: Opener,
    interval: float,
    force: bool,
    progress: ProgressFn | None,
    once: bool,
) -> SyncReport | None:
    now = time.monotonic()
    if sub.name in retry and now < retry[sub.name][0]:
        return None
    current = watches.get(sub.name)
    try:
        if current is None or current[0] != sub:
            source = open_(sub.source)
            current = (sub, BranchWatch(source, sub.branch, after=dst.head(sub.local)))
            watches[sub.name] = current
        move = current[1].poll()
    except DacflowError as exc:
        log.warning("watching %s (%s of %s) failed: %s", sub.name, sub.branch, sub.source, exc.message)
        if once:
            return SyncReport(sub.name, sub.source, sub.branch, sub.local, "failed", error=exc.message,
                              error_type=type(exc).__name__, exit_code=exc.exit_code)  # fmt: skip
        return None
    if move is None and sub.name not in retry:
        return None
    report = sync_one(dst, sub, progress, force=force, opener=open_)
    if report.ok:
        retry.pop(sub.name, None)
    elif report.error_type == "RefConflictError":
        retry.pop(sub.name, None)  # nothing changes until the next commit: wait for it, do not hammer
    else:  # perhaps passing (store unreachable): try again, backing off
        backoff = min(MAX_BACKOFF, max(interval, retry.get(sub.name, (0.0, interval / 2))[1] * 2, 0.1))
        retry[sub.name] = (time.monotonic() + backoff, backoff)
    return report


def _sleep(seconds: float, stop: Callable[[], bool] | None) -> None:
    """Sleep, looking at `stop` every 0.1 s so a stop request is honoured quickly."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
        if stop is not None and stop():
            return


__all__ = [
    "NotPublishedError",
    "Published",
    "Subscription",
    "SyncError",
    "SyncReport",
    "check_url",
    "failures",
    "publish",
    "published",
    "subscribe",
    "subscriptions",
    "sync",
    "sync_one",
    "unpublish",
    "unsubscribe",
    "watch",
]
