"""The `dacflow` command line: the same verbs as the Python API, with progress bars and `--json` output.

Every failure dacflow foresees prints one line (`dacflow: error: ...`) and exits non-zero; no traceback unless
`--debug` is given.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import __version__
from ..errors import DacflowError, UsageError
from ..repository import Repository

log = logging.getLogger("dacflow.cli")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class Ctx:
    """Options shared by all commands."""

    def __init__(self, repo_url: str | None, as_json: bool, debug: bool) -> None:
        self.repo_url = repo_url
        self.json = as_json
        self.debug = debug

    def open(self) -> Repository:
        if not self.repo_url:
            raise UsageError("no repository given: pass --repo PATH|URL or set DACFLOW_REPO")
        return Repository.open(self.repo_url)

    def emit(self, doc: dict[str, Any], human: Callable[[], None]) -> None:
        if self.json:
            click.echo(json.dumps(doc, sort_keys=True, default=str))
        else:
            human()


pass_ctx = click.make_pass_decorator(Ctx)


#: Progress phases that count items rather than bytes.
_COUNTED = {"scan": "entries", "read": "packs", "gc": "packs"}


@contextmanager
def progress_bar(ctx: Ctx, label: str, unit_bytes: bool = True) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; yields the callback the library calls."""
    if ctx.json or not err.is_terminal:
        yield None
        return
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=err, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            unit = _COUNTED.get(phase, "" if unit_bytes else "items")
            if unit:
                detail = f"{done}/{total} {unit}" if total else f"{done} {unit}"
            else:
                detail = f"{human_bytes(done)} / {human_bytes(total)}" if total else human_bytes(done)
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{label} ({phase})", total=total or None, detail=detail)
            bar.update(tasks[phase], completed=done, total=total or None, detail=detail)

        yield update


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def parse_meta(items: tuple[str, ...]) -> dict[str, Any]:
    """Commit metadata from --meta KEY=VALUE items, with the lineage of a command-line commit (engine cli)."""
    from ..lineage import with_lineage

    meta = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--meta takes KEY=VALUE, got {item!r}")
        meta[key] = value
    return with_lineage(meta, "cli")


sign_option = click.option(
    "--sign", "sign_key", metavar="KEYFILE", help="Sign the commit with this Ed25519 private key (docs/signing.md)."
)


def sign_new(repo: Repository, commit: str | None, key: str | None) -> dict[str, str]:
    """Sign the commit a command made (None: it made none) with the --sign key file; the JSON to add to its output."""
    if not key or commit is None:
        return {}
    from ..signing import sign_commit

    return {"signed_by": sign_commit(repo, commit, key)}


def parse_tables(items: tuple[str, ...]) -> dict[str, tuple[str, list[str]]]:
    tables = {}
    for item in items:
        name, sep, rest = item.partition("=")
        pattern, sep2, keys = rest.rpartition(":")
        if not sep or not sep2 or not name or not pattern or not keys:
            raise UsageError(f"--table takes NAME=GLOB:KEY1,KEY2, got {item!r}")
        tables[name] = (pattern, [k.strip() for k in keys.split(",") if k.strip()])
    return tables


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--repo", "-r", envvar="DACFLOW_REPO", metavar="PATH|URL", help="Repository (or $DACFLOW_REPO).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("-v", "--verbose", count=True, help="Log more (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(__version__, prog_name="dacflow")
@click.pass_context
def cli(click_ctx: click.Context, repo: str | None, as_json: bool, verbose: int, debug: bool) -> None:
    """dacflow: snapshots, branches, diffs and merges for datasets."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    click_ctx.obj = Ctx(repo, as_json, debug)


@cli.command()
@click.argument("location", required=False, metavar="[PATH|URL]")
@click.option(
    "--compression",
    type=click.Choice(["none", "zstd"]),
    default="none",
    show_default=True,
    help="Store data chunks zstd-compressed (saves space and transfer for text, costs CPU: "
    "see docs/benchmarks.md); metadata is always compressed.",
)
@click.option("--default-branch", default="main", show_default=True)
@pass_ctx
def init(ctx: Ctx, location: str | None, compression: str, default_branch: str) -> None:
    """Create a repository at PATH|URL (default: --repo)."""
    url = location or ctx.repo_url
    if not url:
        raise UsageError("say where: dacflow init PATH|URL (or pass --repo)")
    repo = Repository.init(url, compression=compression, default_branch=default_branch)
    head = repo.head(repo.default_branch)
    ctx.emit(
        {"repo": repo.url, "id": repo.config.id, "branch": repo.default_branch, "commit": head},
        lambda: out.print(f"Initialised dacflow repository at {repo.url} (branch {repo.default_branch})"),
    )


@cli.command()
@click.argument("directory")
@click.option("-b", "--branch", help="Branch to commit to (default: the checkout's branch, else the default).")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata to record on the commit (repeatable).")
@click.option("--no-cache", is_flag=True, help="Hash every file even if its stat is unchanged.")
@click.option("--allow-empty", is_flag=True, help="Commit even if nothing changed.")
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="NAME=GLOB:KEY1,KEY2",
    help="Store the Parquet/CSV files matching GLOB as table NAME with that key (repeatable).",
)
@sign_option
@pass_ctx
def snapshot(
    ctx: Ctx,
    directory: str,
    branch: str | None,
    message: str,
    meta: tuple[str, ...],
    no_cache: bool,
    allow_empty: bool,
    tables: tuple[str, ...],
    sign_key: str | None,
) -> None:
    """Store DIRECTORY as a new commit on a branch (only new chunks are written)."""
    repo = ctx.open()
    with progress_bar(ctx, "snapshot") as progress:
        result = repo.snapshot(
            directory,
            branch,
            message,
            parse_meta(meta),
            progress=progress,
            use_cache=not no_cache,
            allow_empty=allow_empty,
            tables=parse_tables(tables),
        )
    signed = sign_new(repo, result.commit if result.created else None, sign_key)
    s = result.stats

    def human() -> None:
        verb = "Committed" if result.created else "No change; branch stays at"
        out.print(f"{verb} {result.commit[:12]} on {result.branch}")
        out.print(
            f"  {s['files']} files, {human_bytes(s['bytes_total'])}: {s['files_hashed']} hashed, "
            f"{s['files_cached']} unchanged; {human_bytes(s['bytes_new'])} new "
            f"({human_bytes(s['bytes_stored'])} stored), {human_bytes(s['bytes_reused'])} reused "
            f"in {result.seconds:.2f}s"
        )
        if signed:
            out.print(f"  signed by key {signed['signed_by']}")

    ctx.emit(result.to_json() | signed, human)


@cli.command(name="log")
@click.argument("ref", required=False)
@click.option("-n", "--limit", type=int, default=None, help="Show at most N commits.")
@pass_ctx
def log_cmd(ctx: Ctx, ref: str | None, limit: int | None) -> None:
    """Show the history of REF (default: the default branch), newest first."""
    repo = ctx.open()
    entries = list(repo.log(ref, limit))
    doc = {
        "ref": ref or repo.default_branch,
        "commits": [
            {
                "commit": cid,
                "parents": list(c.parents),
                "time": c.time,
                "author": c.author,
                "message": c.message,
                "meta": dict(c.meta),
                "tree": c.tree,
            }
            for cid, c in entries
        ],
    }

    def human() -> None:
        for cid, c in entries:
            out.print(f"[yellow]{cid[:12]}[/] {c.time[:19]} {c.author}  {c.message}")
            for k, v in sorted(c.meta.items()):
                out.print(f"    {k}={v}")

    ctx.emit(doc, human)


@cli.command()
@click.argument("target", metavar="REF[:PATH]")
@pass_ctx
def show(ctx: Ctx, target: str) -> None:
    """Show a commit, or the directory or file at PATH in it."""
    repo = ctx.open()
    ref, _, path = target.partition(":")
    cid = repo.resolve(ref)
    commit = repo.odb.get_commit(cid)
    entry = repo.entry(cid, path)
    doc: dict[str, Any] = {"commit": cid, "path": path, "kind": entry.kind, "size": entry.size}
    if not path:
        doc |= {
            "parents": list(commit.parents),
            "time": commit.time,
            "author": commit.author,
            "message": commit.message,
            "meta": dict(commit.meta),
            "tree": commit.tree,
        }
    if entry.kind == "dir":
        doc["entries"] = [
            {"name": e.name, "kind": e.kind, "size": e.size, "id": e.ref} for e in repo.odb.get_tree(entry.ref)
        ]
    elif entry.kind == "file":
        fobj = repo.odb.get_file(entry.ref)
        doc |= {"id": entry.ref, "chunks": len(fobj.chunks)}
    else:
        doc["target"] = entry.ref

    def human() -> None:
        if not path:
            out.print(
                f"commit [yellow]{cid}[/]\nauthor {commit.author}\ndate   {commit.time}\n\n    {commit.message}\n"
            )
        if entry.kind == "dir":
            table = Table(box=None, show_header=False)
            for e in doc["entries"]:
                table.add_row(e["kind"], human_bytes(e["size"]), e["name"] + ("/" if e["kind"] == "dir" else ""))
            out.print(table)
        elif entry.kind == "file":
            out.print(f"file {path}: {human_bytes(entry.size)} in {doc['chunks']} chunks, id {entry.ref}")
        else:
            out.print(f"link {path} -> {entry.ref}")

    ctx.emit(doc, human)


@cli.command()
@click.argument("target", metavar="REF:PATH")
@click.option("-o", "--output", help="Write to this file instead of standard output.")
@pass_ctx
def cat(ctx: Ctx, target: str, output: str | None) -> None:
    """Print the content of a file in a snapshot (verified)."""
    repo = ctx.open()
    ref, sep, path = target.partition(":")
    if not sep or not path:
        raise UsageError("cat takes REF:PATH, e.g. main:data/file.csv")
    data = repo.read_file(ref, path)
    if output:
        with open(output, "wb") as f:
            f.write(data)
    else:
        sys.stdout.buffer.write(data)


def _list_refs(ctx: Ctx, kind: str, refs: dict[str, str]) -> None:
    def human() -> None:
        for name, commit in sorted(refs.items()):
            out.print(f"{name}  {commit[:12]}")

    ctx.emit({kind: refs}, human)


def _deleted(ctx: Ctx, kind: str, name: str, commit: str) -> None:
    ctx.emit({"deleted": name, "commit": commit}, lambda: out.print(f"Deleted {kind} {name} (was {commit[:12]})"))


@cli.command()
@click.argument("name", required=False)
@click.option("--from", "from_", metavar="REF", help="Where a new branch starts (default: the default branch).")
@click.option("-d", "--delete", is_flag=True, help="Delete the branch NAME.")
@pass_ctx
def branch(ctx: Ctx, name: str | None, from_: str | None, delete: bool) -> None:
    """List branches; with NAME create one; with -d NAME delete it."""
    repo = ctx.open()
    if name is None:
        if delete:
            raise UsageError("branch -d needs a NAME")
        _list_refs(ctx, "branches", repo.branches())
        return
    if delete:
        _deleted(ctx, "branch", name, repo.delete_branch(name))
        return
    b = repo.create_branch(name, from_)
    ctx.emit({"branch": name, "commit": b.head}, lambda: out.print(f"Created branch {name} at {b.head[:12]}"))


@cli.command()
@click.argument("name", required=False)
@click.argument("ref", required=False)
@click.option("-d", "--delete", is_flag=True, help="Delete the tag NAME.")
@pass_ctx
def tag(ctx: Ctx, name: str | None, ref: str | None, delete: bool) -> None:
    """List tags; with NAME [REF] create one (default REF: the default branch); with -d NAME delete it."""
    repo = ctx.open()
    if name is None:
        _list_refs(ctx, "tags", repo.tags())
        return
    if delete:
        _deleted(ctx, "tag", name, repo.delete_tag(name))
        return
    commit = repo.tag(name, ref or repo.default_branch)
    ctx.emit({"tag": name, "commit": commit}, lambda: out.print(f"Tagged {commit[:12]} as {name}"))


def _print_diff(doc: dict[str, Any]) -> None:
    marks = {"added": "[green]+[/]", "removed": "[red]-[/]", "modified": "[yellow]~[/]"}
    for c in doc["changes"]:
        if c["status"] == "modified":
            sizes = f"{human_bytes(c['old_size'])} -> {human_bytes(c['new_size'])}"
            detail = f"{sizes}, {human_bytes(c['bytes_changed'])} changed"
        else:
            detail = human_bytes(c["new_size"] or c["old_size"])
        out.print(f"{marks[c['status']]} {c['path']}  ({detail})")
    out.print(
        f"{doc['added']} added, {doc['removed']} removed, {doc['modified']} modified; "
        f"{human_bytes(doc['bytes_changed'])} of new content"
    )


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option("--table", "table_name", metavar="NAME", help="Compare the rows of this table instead of paths.")
@click.option("--export", "export_dir", metavar="DIR", help="With --table: write the delta rows as Parquet files.")
@pass_ctx
def diff(ctx: Ctx, a: str, b: str, table_name: str | None, export_dir: str | None) -> None:
    """Show paths added, removed and modified from snapshot A to B (with --table: rows)."""
    repo = ctx.open()
    ends = {"from": repo.resolve(a), "to": repo.resolve(b)}
    if table_name is None:
        if export_dir:
            raise UsageError("--export needs --table NAME")
        result = repo.diff(a, b)
        doc = ends | result.to_json()
        ctx.emit(doc, lambda: _print_diff(doc))
        return
    delta = repo.diff(a, b, table=table_name)
    files = delta.export(export_dir) if export_dir else {}
    doc = ends | {"table": table_name} | delta.counts | {"exported": files}

    def human() -> None:
        c = delta.counts
        out.print(f"{table_name}: {c['inserted']} inserted, {c['updated']} updated, {c['deleted']} deleted")
        for kind, path in files.items():
            out.print(f"  {kind}: {path}")

    ctx.emit(doc, human)


@cli.command()
@click.argument("target", metavar="REF[:PATH]")
@click.argument("directory")
@click.option("-f", "--force", is_flag=True, help="Write into a non-empty directory, replacing what conflicts.")
@pass_ctx
def checkout(ctx: Ctx, target: str, directory: str, force: bool) -> None:
    """Write the snapshot REF (or its directory PATH) into DIRECTORY."""
    repo = ctx.open()
    ref, _, path = target.partition(":")
    with progress_bar(ctx, "checkout") as progress:
        commit, stats = repo.checkout(ref, directory, path=path, force=force, progress=progress)
    doc = {"commit": commit, "directory": os.path.abspath(directory)} | stats.to_json()
    ctx.emit(
        doc,
        lambda: out.print(
            f"Checked out {commit[:12]} into {directory}: {stats.files} files, {human_bytes(stats.bytes)}"
        ),
    )


@cli.command()
@click.argument("directory")
@click.option("-b", "--branch", help="Compare with this branch (default: the checkout's branch, else the default).")
@pass_ctx
def status(ctx: Ctx, directory: str, branch: str | None) -> None:
    """Show what changed in DIRECTORY since the head of its branch (nothing is stored)."""
    repo = ctx.open()
    name, result = repo.status(directory, branch)
    doc = {"branch": name, "clean": not result} | result.to_json()

    def human() -> None:
        if not result:
            out.print(f"Nothing changed since {name}")
        else:
            _print_diff(doc)

    ctx.emit(doc, human)


@cli.command()
@click.option("--read-data", is_flag=True, help="Also read and re-hash every stored byte.")
@pass_ctx
def check(ctx: Ctx, read_data: bool) -> None:
    """Verify that every object reachable from every ref exists (and, with --read-data, is intact)."""
    repo = ctx.open()
    with progress_bar(ctx, "check", unit_bytes=False) as progress:
        report = repo.check(read_data=read_data, progress=progress)

    def human() -> None:
        for p in report.problems:
            out.print(f"[red]{p.kind}[/] {p.what} {p.id}: {p.detail}")
        summary = f"{report.commits} commits, {report.trees} trees, {report.files} files, {report.chunks} chunks" + (
            f", {report.packs} packs read ({human_bytes(report.bytes_read)})" if read_data else ""
        )
        out.print(("[green]ok[/]: " if report.ok else f"[red]{len(report.problems)} problems[/]: ") + summary)

    ctx.emit(report.to_json(), human)
    if not report.ok:
        sys.exit(10)


@cli.command()
@click.option(
    "--grace",
    "grace_hours",
    type=float,
    default=24.0,
    show_default=True,
    help="Keep unreachable objects younger than this many hours.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@pass_ctx
def gc(ctx: Ctx, grace_hours: float, dry_run: bool) -> None:
    """Delete objects no ref reaches, once older than the grace period."""
    if grace_hours < 0:
        raise UsageError("--grace must not be negative")
    repo = ctx.open()
    with progress_bar(ctx, "gc", unit_bytes=False) as progress:
        report = repo.gc(grace_hours=grace_hours, dry_run=dry_run, progress=progress)
    ctx.emit(
        report.to_json(),
        lambda: out.print(
            f"{'Would delete' if dry_run else 'Deleted'} {report.objects_deleted} objects "
            f"({human_bytes(report.bytes_freed)}): {report.packs_deleted} packs deleted, "
            f"{report.packs_rewritten} rewritten; {report.kept_young} unreachable objects kept (younger than grace)"
        ),
    )


def _two_repos(ctx: Ctx, args: tuple[str, ...], verb: str, missing_is_src: bool) -> tuple[str, str]:
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1 and ctx.repo_url:
        return (ctx.repo_url, args[0]) if missing_is_src else (args[0], ctx.repo_url)
    raise UsageError(f"{verb} takes SRC DST (or one of them, the other being --repo)")


def _report_transfer(ctx: Ctx, report: Any) -> None:
    doc = report.to_json()

    def human() -> None:
        for name, r in sorted(doc["refs"].items()):
            frm = (r["from"] or "(new)")[:12]
            out.print(f"{name}: {frm} -> {r['to'][:12]} ({r['status']})")
        out.print(
            f"sent {doc['objects_sent']} objects, {human_bytes(doc['bytes_sent'])} "
            f"({doc['packs_copied_whole']} packs whole); skipped {doc['objects_skipped']} already present "
            f"({human_bytes(doc['raw_bytes_skipped'])}); {doc['requests']} requests in {doc['seconds']:.2f}s "
            f"({human_bytes(doc['throughput_bytes_per_s'])}/s)"
        )

    ctx.emit(doc, human)


_ref_option = click.option(
    "--ref", "refs", multiple=True, metavar="NAME", help="Branch or tag to send (repeatable; default: all)."
)
_force_option = click.option("--force", is_flag=True, help="Overwrite destination branches that diverged.")
_require_signed_option = click.option(
    "--require-signed",
    "trusted",
    multiple=True,
    metavar="KEY",
    help="Refuse (sending nothing) unless the tip of every ref is signed by one of these public keys "
    "(key files or directories of *.pub; repeatable).",
)


@cli.command()
@click.argument("repos", nargs=-1, metavar="[SRC] DST")
@_ref_option
@_force_option
@_require_signed_option
@pass_ctx
def push(ctx: Ctx, repos: tuple[str, ...], refs: tuple[str, ...], force: bool, trusted: tuple[str, ...]) -> None:
    """Send refs and the objects they need from SRC (default: --repo) to DST; only what DST lacks moves."""
    from ..transfer import transfer

    src, dst = _two_repos(ctx, repos, "push", missing_is_src=True)
    with progress_bar(ctx, "push") as progress:
        report = transfer(
            src, dst, list(refs) or None, force=force, progress=progress, require_signed=list(trusted) or None
        )
    _report_transfer(ctx, report)


@cli.command()
@click.argument("repos", nargs=-1, metavar="SRC [DST]")
@_ref_option
@_force_option
@click.option(
    "--from", "peers", multiple=True, metavar="URL", help="Another repository that may serve data (repeatable)."
)
@_require_signed_option
@pass_ctx
def pull(
    ctx: Ctx,
    repos: tuple[str, ...],
    refs: tuple[str, ...],
    force: bool,
    peers: tuple[str, ...],
    trusted: tuple[str, ...],
) -> None:
    """Fetch refs from SRC into DST (default: --repo); data may come from several --from peers at once."""
    from ..transfer import transfer

    src, dst = _two_repos(ctx, repos, "pull", missing_is_src=False)
    with progress_bar(ctx, "pull") as progress:
        report = transfer(
            src, dst, list(refs) or None, sources=list(peers), force=force, progress=progress,
            require_signed=list(trusted) or None,
        )  # fmt: skip
    _report_transfer(ctx, report)


@cli.command(name="clone")
@click.argument("src")
@click.argument("dst")
@pass_ctx
def clone_cmd(ctx: Ctx, src: str, dst: str) -> None:
    """Create a repository at DST with every ref and object of SRC."""
    from ..transfer import clone

    with progress_bar(ctx, "clone") as progress:
        _, report = clone(src, dst, progress=progress)
    _report_transfer(ctx, report)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every foreseen error into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        cli.main(args=argv, prog_name="dacflow", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("dacflow: aborted")
        sys.exit(130)
    except click.ClickException as exc:
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see: {exc.ctx.command_path} --help)"
        click.echo(f"dacflow: error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    except DacflowError as exc:
        if debug:
            raise
        click.echo(f"dacflow: error: {exc.message}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("dacflow: interrupted", err=True)
        sys.exit(130)
    except OSError as exc:
        if debug:
            raise
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        click.echo(f"dacflow: error: {exc.strerror or exc}{where}", err=True)
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        if debug:
            raise
        click.echo(f"dacflow: internal error: {type(exc).__name__}: {exc} (rerun with --debug and report it)", err=True)
        sys.exit(70)


if __name__ == "__main__":
    main()


from . import cache as _cache  # noqa: E402,F401 - registers `dacflow cache list|clear`
from . import demo as _demo  # noqa: E402,F401 - registers `dacflow demo` on the group above
from . import gates as _gates  # noqa: E402,F401 - registers `dacflow gate ...` and `dacflow branch protect`
from . import lineage as _lineage  # noqa: E402,F401 - registers `dacflow lineage`
from . import signing as _signing  # noqa: E402,F401 - registers keygen/sign/verify
from . import subscriptions as _subscriptions  # noqa: E402,F401 - registers publish/subscribe/sync/watch/registry
from . import tables as _tables  # noqa: E402,F401 - registers `dacflow table ...` and `dacflow merge`
