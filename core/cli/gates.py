"""CLI verbs for quality gates: `dacflow gate add|list|remove|check|plugin` and `dacflow branch protect|unprotect`.

`dacflow branch` keeps its usage (list; NAME [--from REF] creates; -d NAME deletes); `protect` and `unprotect`
as its first argument are subcommands (so a branch named "protect" is created with `dacflow branch --from REF
protect`).
"""

from __future__ import annotations

import re
import sys
from typing import Any

import click
from rich.table import Table

from ..errors import GateRejectedError, UsageError
from ..gates import (
    KINDS,
    GateConfig,
    add_gate,
    add_plugin,
    audit,
    gate_config,
    protect,
    remove_gate,
    remove_plugin,
    schema_contract,
    unprotect,
)
from .main import Ctx, branch, cli, out, pass_ctx

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `123`, `10KB`, `5MiB`, `1.5GB` (KB = 1000, KiB = 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(f"not a size: {text!r} (e.g. 5000000, 5MB, 5MiB)")
    number, unit = float(m.group(1)), (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit and unit[0] != "b" else 0
    return int(number * base**power)


def _number(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _pairs(items: tuple[str, ...], what: str, sep: str = "=") -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, found, value = item.partition(sep)
        if not found or not name.strip() or not value.strip():
            raise UsageError(f"{what} takes NAME{sep}VALUE, got {item!r}")
        out.append((name.strip(), value.strip()))
    return out


def _describe(gate: dict[str, Any]) -> str:
    skip = {"id", "kind", "branch", "table", "path"}
    return ", ".join(f"{k}={v}" for k, v in sorted(gate.items()) if k not in skip)


def _config_doc(repo_url: str, cfg: GateConfig, branch_name: str | None = None) -> dict[str, Any]:
    from ..hooks import entry_point_plugins

    gates = [g for g in cfg.gates if branch_name is None or g["branch"] == branch_name]
    found = [{"name": n, "loaded": p is not None, "error": e or None} for n, p, e in entry_point_plugins()]
    return {
        "repo": repo_url,
        "revision": cfg.revision,
        "protected": list(cfg.protected),
        "plugins": list(cfg.plugins),
        "entry_points": found,
        "gates": gates,
    }


@cli.group()
def gate() -> None:
    """Quality gates: validators that must pass before a branch moves (write-audit-publish)."""


@gate.command(name="list")
@click.option("-b", "--branch", "branch_name", help="Only the gates of this branch (name or pattern as added).")
@pass_ctx
def gate_list(ctx: Ctx, branch_name: str | None) -> None:
    """Show the gates, protected branches and plugins of the repository."""
    repo = ctx.open()
    doc = _config_doc(repo.url, gate_config(repo), branch_name)

    def human() -> None:
        out.print(f"gate config revision {doc['revision']}; protected: {', '.join(doc['protected']) or '(none)'}")
        table = Table(box=None)
        for col in ("id", "branch", "kind", "on", "rules"):
            table.add_column(col)
        for g in doc["gates"]:
            table.add_row(g["id"], g["branch"], g["kind"], str(g.get("table") or g.get("path") or ""), _describe(g))
        if doc["gates"]:
            out.print(table)
        for name in doc["plugins"]:
            out.print(f"plugin (config): {name}")
        for ep in doc["entry_points"]:
            out.print(f"plugin (entry point): {ep['name']}" + ("" if ep["loaded"] else f" BROKEN: {ep['error']}"))

    ctx.emit(doc, human)


@gate.command(name="add")
@click.argument("kind", type=click.Choice(KINDS))
@click.option("-b", "--branch", "branch_name", required=True, help="Branch name or pattern (e.g. 'release/*').")
@click.option("--table", "table_name", help="The table a schema, rows or guard gate checks.")
@click.option("--column", "columns", multiple=True, metavar="NAME=TYPE", help="schema: a column and its Arrow type.")
@click.option("--key", help="schema: the key columns, comma separated.")
@click.option("--exact", is_flag=True, help="schema: no columns beyond the contract's.")
@click.option("--like", metavar="REF", help="schema: take the columns and key of --table as it is in REF.")
@click.option("--not-null", "not_null", multiple=True, metavar="COL", help="rows: COL must not be null.")
@click.option("--range", "ranges", multiple=True, metavar="COL=MIN:MAX", help="rows: bounds (one may be empty).")
@click.option("--allowed", multiple=True, metavar="COL=V1,V2", help="rows: the values COL may take.")
@click.option("--max-delete-pct", type=float, help="guard: most rows of --table a move may delete, in percent.")
@click.option("--max-shrink-pct", type=float, help="guard: most a file under --path may shrink, in percent.")
@click.option("--path", "path", metavar="GLOB", help="guard/paths: the files checked (fnmatch; '*' spans '/').")
@click.option("--allow", multiple=True, metavar="GLOB", help="paths: globs every added or changed path must match.")
@click.option("--max-size", metavar="SIZE", help="paths: largest file allowed (e.g. 50MB).")
@click.option("--url", help="webhook: where to POST the commit summary.")
@click.option("--url-env", metavar="VAR", help="webhook: an environment variable holding the URL (keeps it secret).")
@click.option("--timeout", type=float, help="webhook: seconds per attempt (default 5).")
@click.option("--retries", type=int, help="webhook: attempts after the first (default 2).")
@click.option("--level", help="log: the log level (default INFO).")
@pass_ctx
def gate_add(ctx: Ctx, kind: str, branch_name: str, table_name: str | None, columns: tuple[str, ...],
             key: str | None, exact: bool, like: str | None, not_null: tuple[str, ...], ranges: tuple[str, ...],
             allowed: tuple[str, ...], max_delete_pct: float | None, max_shrink_pct: float | None, path: str | None,
             allow: tuple[str, ...], max_size: str | None, url: str | None, url_env: str | None,
             timeout: float | None, retries: int | None, level: str | None) -> None:  # fmt: skip
    """Add a gate of KIND (schema, rows, guard, paths, webhook, log) on a branch; adding it twice is harmless."""
    repo = ctx.open()
    spec: dict[str, Any] = {"table": table_name, "path": path}
    if kind == "schema":
        cols = dict(_pairs(columns, "--column"))
        keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
        if like:
            if not table_name:
                raise UsageError("--like needs --table")
            adopted = schema_contract(repo, like, table_name)
            cols, keys = {**adopted["columns"], **cols}, keys or adopted["key"]
        spec |= {"columns": cols, "key": keys, "exact": exact}
    elif kind == "rows":
        bounds = {}
        for col, text in _pairs(ranges, "--range"):
            lo, sep, hi = text.partition(":")
            if not sep:
                raise UsageError(f"--range takes COL=MIN:MAX, got {col}={text}")
            bounds[col] = [_number(lo), _number(hi)]
        values = {col: [v.strip() for v in text.split(",")] for col, text in _pairs(allowed, "--allowed")}
        spec |= {"not_null": list(not_null), "ranges": bounds, "allowed": values}
    elif kind == "guard":
        spec |= {"max_delete_pct": max_delete_pct, "max_shrink_pct": max_shrink_pct}
    elif kind == "paths":
        spec |= {"allow": list(allow), "max_size": parse_size(max_size) if max_size else None}
    elif kind == "webhook":
        spec |= {"url": url, "url_env": url_env, "timeout": timeout, "retries": retries}
    elif kind == "log":
        spec |= {"level": level}
    added = add_gate(repo, kind, branch_name, **spec)
    ctx.emit(
        {"repo": repo.url, "gate": added},
        lambda: out.print(f"Gate {added['id']} ({kind}) guards {branch_name}: {_describe(added)}"),
    )


@gate.command(name="remove")
@click.argument("gate_id", metavar="ID")
@pass_ctx
def gate_remove(ctx: Ctx, gate_id: str) -> None:
    """Remove the gate ID (or a unique prefix of 4+ characters)."""
    repo = ctx.open()
    gone = remove_gate(repo, gate_id)
    ctx.emit({"repo": repo.url, "removed": gone}, lambda: out.print(f"Removed gate {gone['id']} ({gone['kind']})"))


@gate.command(name="check")
@click.argument("ref")
@click.option("-b", "--branch", "branch_name", required=True, help="The guarded branch REF would be merged into.")
@pass_ctx
def gate_check(ctx: Ctx, ref: str, branch_name: str) -> None:
    """Audit: would the gates of BRANCH accept moving it to REF? Nothing moves; exit 12 if not."""
    repo = ctx.open()
    reasons = audit(repo, ref, branch_name)
    doc = {"repo": repo.url, "ref": ref, "branch": branch_name, "ok": not reasons, "reasons": reasons}

    def human() -> None:
        if not reasons:
            out.print(f"[green]ok[/]: the gates of {branch_name} accept {ref}")
        for r in reasons:
            out.print(f"[red]refused[/]: {r}")

    ctx.emit(doc, human)
    if reasons:
        sys.exit(GateRejectedError.exit_code)


@gate.command(name="plugin")
@click.argument("name", metavar="MODULE[:ATTR]")
@click.option("-d", "--delete", is_flag=True, help="Remove the plugin from the config.")
@pass_ctx
def gate_plugin(ctx: Ctx, name: str, delete: bool) -> None:
    """Name a plugin (importable where dacflow runs) in the repository's gate config, or remove it with -d."""
    repo = ctx.open()
    cfg = remove_plugin(repo, name) if delete else add_plugin(repo, name)
    ctx.emit(
        {"repo": repo.url, "plugins": list(cfg.plugins)},
        lambda: out.print(f"{'Removed' if delete else 'Added'} plugin {name}; plugins: {', '.join(cfg.plugins)}"),
    )


# -- `dacflow branch protect|unprotect` -----------------------------------------------------------------------------
class BranchGroup(click.Group):
    """`dacflow branch` as before, unless its first argument names a subcommand (protect, unprotect)."""

    def __init__(self, default: click.Command) -> None:
        super().__init__(
            name=default.name,
            help=f"{default.help} `branch protect NAME` refuses direct commits to NAME (merges must pass its "
            "gates); `branch unprotect NAME` lifts that.",
            context_settings=default.context_settings,
        )
        self.default = default

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        if args and (args[0] in self.commands or args[0] in ("-h", "--help")):
            return super().make_context(info_name, args, parent=parent, **extra)
        return self.default.make_context(info_name, args, parent=parent, **extra)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[NAME] [--from REF] [-d] | protect NAME | unprotect NAME")


branch_group = BranchGroup(branch)


@branch_group.command(name="protect")
@click.argument("name")
@pass_ctx
def branch_protect(ctx: Ctx, name: str) -> None:
    """Protect NAME (or a pattern such as 'release/*'): direct commits are refused; merges must pass its gates."""
    repo = ctx.open()
    cfg = protect(repo, name)
    ctx.emit(
        {"repo": repo.url, "protected": list(cfg.protected)},
        lambda: out.print(f"Protected {name}; protected branches: {', '.join(cfg.protected)}"),
    )


@branch_group.command(name="unprotect")
@click.argument("name")
@pass_ctx
def branch_unprotect(ctx: Ctx, name: str) -> None:
    """Lift the protection of NAME (its gates stay)."""
    repo = ctx.open()
    cfg = unprotect(repo, name)
    ctx.emit(
        {"repo": repo.url, "protected": list(cfg.protected)},
        lambda: out.print(f"Unprotected {name}; protected branches: {', '.join(cfg.protected) or '(none)'}"),
    )


cli.add_command(branch_group, "branch")
