"""CLI verbs for publish/subscribe: `publish`, `published`, `subscribe`, `subscriptions`, `unsubscribe`, `sync`,
`watch` and `registry add|list|remove`."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from ..errors import UsageError
from ..registry import RegistryEntry, registry_add, registry_list, registry_remove
from ..repository import Repository
from ..subscriptions import (
    SyncReport,
    failures,
    publish,
    published,
    subscribe,
    subscriptions,
    sync,
    unpublish,
    unsubscribe,
    watch,
)
from .main import Ctx, _require_signed_option, cli, human_bytes, out, pass_ctx, progress_bar


@cli.command(name="publish")
@click.argument("branch")
@click.option("--unpublish", "withdraw", is_flag=True, help="Withdraw the branch (the branch itself stays).")
@click.option("-m", "--message", default="", help="A note for subscribers (shown by `published` and registries).")
@pass_ctx
def publish_cmd(ctx: Ctx, branch: str, withdraw: bool, message: str) -> None:
    """Mark BRANCH of --repo as published, so other stores can subscribe to it (--unpublish withdraws it)."""
    repo = ctx.open()
    if withdraw:
        record = unpublish(repo, branch)
        ctx.emit(
            {"branch": branch, "published": False, "repo": repo.url},
            lambda: out.print(f"Unpublished {branch} of {repo.url} (published since {record.time[:19]})"),
        )
        return
    record, created = publish(repo, branch, message)
    doc = record.to_json() | {"published": True, "new": created, "repo": repo.url}

    def human() -> None:
        verb = "Published" if created else "Already published:"
        out.print(f"{verb} {branch} of {repo.url} (head {(record.head or '')[:12]})")
        out.print(f"  follow it with: dacflow subscribe {repo.url} {branch} --into DST")

    ctx.emit(doc, human)


@cli.command(name="published")
@click.argument("url", required=False, metavar="[URL]")
@pass_ctx
def published_cmd(ctx: Ctx, url: str | None) -> None:
    """List the published branches of URL (default: --repo) and their heads."""
    repo = Repository.open(url) if url else ctx.open()
    records = published(repo)

    def human() -> None:
        if not records:
            out.print(f"{repo.url} publishes nothing (dacflow --repo {repo.url} publish BRANCH)")
        for name, p in sorted(records.items()):
            note = f"  {p.message}" if p.message else ""
            out.print(f"{name}  {(p.head or '(branch gone)')[:12]}  since {p.time[:19]} by {p.author}{note}")

    ctx.emit({"repo": repo.url, "published": {n: p.to_json() for n, p in records.items()}}, human)


@cli.command(name="subscribe")
@click.argument("src_url", metavar="SRC_URL")
@click.argument("branch")
@click.option("--into", "dst_url", metavar="DST", help="The subscribing repository (default: --repo).")
@click.option("--as", "as_", metavar="NAME", help="Local branch to sync into (default: BRANCH).")
@click.option("--peer", "peers", multiple=True, metavar="URL", help="Another store holding the data (repeatable).")
@pass_ctx
def subscribe_cmd(
    ctx: Ctx, src_url: str, branch: str, dst_url: str | None, as_: str | None, peers: tuple[str, ...]
) -> None:
    """Record in DST a subscription to published BRANCH of SRC_URL; `dacflow sync` then pulls its deltas."""
    url = dst_url or ctx.repo_url
    if not url:
        raise UsageError("say which repository subscribes: --into DST (or --repo)")
    dst = Repository.open(url)
    sub, created = subscribe(dst, src_url, branch, as_, list(peers))
    doc = sub.to_json() | {"name": sub.name, "new": created, "repo": dst.url}

    def human() -> None:
        verb = "Subscribed" if created else "Already subscribed:"
        out.print(f"{verb} {dst.url} branch {sub.local} <- {sub.branch} of {sub.source}")
        if sub.peers:
            out.print(f"  peers: {', '.join(sub.peers)}")
        out.print(f"  bring it up to date with: dacflow --repo {dst.url} sync {sub.name}")

    ctx.emit(doc, human)


@cli.command(name="subscriptions")
@pass_ctx
def subscriptions_cmd(ctx: Ctx) -> None:
    """List the subscriptions of --repo and where each local branch stands."""
    repo = ctx.open()
    subs = subscriptions(repo)
    heads = repo.branches()
    doc = {"repo": repo.url, "subscriptions": {n: s.to_json() | {"head": heads.get(s.local)} for n, s in subs.items()}}

    def human() -> None:
        if not subs:
            out.print(f"{repo.url} follows nothing (dacflow subscribe SRC_URL BRANCH --into {repo.url})")
            return
        table = Table(box=None)
        for col in ("name", "source", "branch", "head", "peers"):
            table.add_column(col)
        for n, s in sorted(subs.items()):
            table.add_row(n, s.source, s.branch, (heads.get(s.local) or "(not synced)")[:12], ", ".join(s.peers))
        out.print(table)

    ctx.emit(doc, human)


@cli.command(name="unsubscribe")
@click.argument("name")
@pass_ctx
def unsubscribe_cmd(ctx: Ctx, name: str) -> None:
    """Forget subscription NAME of --repo (its local branch and commits stay)."""
    repo = ctx.open()
    sub = unsubscribe(repo, name)
    ctx.emit(
        {"repo": repo.url, "unsubscribed": name, "source": sub.source, "branch": sub.branch},
        lambda: out.print(f"Unsubscribed {name} (was following {sub.branch} of {sub.source})"),
    )


def _line(r: SyncReport) -> str:
    if not r.ok:
        return f"[red]{r.name}: failed[/]: {r.error}"
    if r.status == "unchanged":
        return f"{r.name}: up to date at {(r.to or '')[:12]}"
    served = ", ".join(f"{human_bytes(n)} from {src}" for src, n in sorted(r.by_source.items()) if n)
    return (
        f"{r.name}: {(r.from_ or '(new)')[:12]} -> {(r.to or '')[:12]} ({r.status}): {r.commits} commits, "
        f"{human_bytes(r.bytes_sent)} sent" + (f" ({served})" if len(r.by_source) > 1 else "") + f" in {r.seconds:.2f}s"
    )


def _exit_if_failed(reports: list[SyncReport]) -> None:
    failed = failures(reports)
    if failed is not None:
        click.echo(f"dacflow: error: {failed.message}", err=True)
        sys.exit(failed.exit_code)


@cli.command(name="sync")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--force", is_flag=True, help="Follow a source whose history was rewritten (replaces local history).")
@_require_signed_option
@pass_ctx
def sync_cmd(ctx: Ctx, names: tuple[str, ...], force: bool, trusted: tuple[str, ...]) -> None:
    """Bring every subscription of --repo (or those NAMEd) up to date, pulling only deltas.

    Each subscription is reported; one that fails does not stop the others, and the exit code is non-zero."""
    repo = ctx.open()
    with progress_bar(ctx, "sync") as progress:
        reports = sync(repo, list(names) or None, progress, force=force, require_signed=list(trusted) or None)
    doc = {"repo": repo.url, "ok": all(r.ok for r in reports), "subscriptions": [r.to_json() for r in reports]}

    def human() -> None:
        if not reports:
            out.print(f"{repo.url} follows nothing (dacflow subscribe SRC_URL BRANCH --into {repo.url})")
        for r in reports:
            out.print(_line(r))

    ctx.emit(doc, human)
    _exit_if_failed(reports)


@cli.command(name="watch")
@click.argument("names", nargs=-1, metavar="[NAME...]")
@click.option("--interval", type=float, default=5.0, show_default=True, help="Seconds between looks at each source.")
@click.option("--once", is_flag=True, help="Look once, sync what moved, and exit.")
@click.option("--max-events", type=int, default=None, help="Exit after this many syncs.")
@click.option("--force", is_flag=True, help="Follow sources whose history was rewritten.")
@pass_ctx
def watch_cmd(
    ctx: Ctx, names: tuple[str, ...], interval: float, once: bool, max_events: int | None, force: bool
) -> None:
    """Follow the subscriptions of --repo (or those NAMEd): sync each time a source branch moves.

    Each sync prints a line (with --json, one JSON object per line). Stop with Ctrl-C."""
    repo = ctx.open()

    def event(report: SyncReport) -> None:
        ctx.emit(report.to_json(), lambda: out.print(_line(report)))

    try:
        reports = watch(
            repo, interval, names=list(names) or None, once=once, max_events=max_events, on_event=event, force=force
        )
    except KeyboardInterrupt:
        return
    if once:
        _exit_if_failed(reports)


# -- registry ------------------------------------------------------------------------------------------------


@cli.group(name="registry")
def registry_group() -> None:
    """A plain file listing stores and what they publish: what can be followed, without a server."""


def _entry_doc(entry: RegistryEntry) -> dict[str, Any]:
    return entry.with_url()


def _print_entry(entry: RegistryEntry) -> None:
    state = f"  [red]unreadable[/]: {entry.error}" if entry.error else ""
    out.print(f"[bold]{entry.url}[/]  (checked {entry.checked[:19]}){state}")
    if not entry.published:
        out.print("  publishes nothing")
    for name, info in sorted(entry.published.items()):
        note = f"  {info.get('message')}" if info.get("message") else ""
        out.print(f"  {name}  {(info.get('head') or '(gone)')[:12]}{note}")


@registry_group.command(name="add")
@click.argument("file", metavar="FILE")
@click.argument("url", metavar="URL")
@pass_ctx
def registry_add_cmd(ctx: Ctx, file: str, url: str) -> None:
    """Read what the store at URL publishes and record it in registry FILE (a path or a store URL)."""
    entry = registry_add(file, url)
    ctx.emit(_entry_doc(entry) | {"registry": file}, lambda: _print_entry(entry))


@registry_group.command(name="list")
@click.argument("file", metavar="FILE")
@click.option("--refresh", is_flag=True, help="Read every listed store again first.")
@pass_ctx
def registry_list_cmd(ctx: Ctx, file: str, refresh: bool) -> None:
    """List the stores in registry FILE and the branches each publishes (what can be followed)."""
    entries = registry_list(file, refresh=refresh)

    def human() -> None:
        if not entries:
            out.print(f"registry {file} is empty (dacflow registry add {file} URL)")
        for entry in entries:
            _print_entry(entry)

    ctx.emit({"registry": file, "stores": [_entry_doc(e) for e in entries]}, human)


@registry_group.command(name="remove")
@click.argument("file", metavar="FILE")
@click.argument("url", metavar="URL")
@pass_ctx
def registry_remove_cmd(ctx: Ctx, file: str, url: str) -> None:
    """Drop the store at URL from registry FILE."""
    entry = registry_remove(file, url)
    ctx.emit({"registry": file, "removed": entry.url}, lambda: out.print(f"Removed {entry.url} from {file}"))
