"""CLI verb `dacflow lineage REF`: what a commit was made from (data, code, runs), or with `--downstream` what
was derived from it, grouped by branch."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from ..errors import UsageError
from ..lineage import downstream, upstream
from .main import Ctx, cli, out, pass_ctx

#: A tree printed to a pipe or file keeps each commit on one line (a terminal wraps at its width).
_PIPE_WIDTH = 10_000
_KIND_STYLE = {"trained_on": "magenta", "input": "cyan", "merged": "green", "parent": "dim"}


def _made_by(lineage: dict[str, Any]) -> str:
    """One line: engine pipeline/run/task and the code fingerprint."""
    if not lineage:
        return ""
    parts = [lineage.get("engine", "?")]
    where = "/".join(str(lineage[k]) for k in ("pipeline", "task") if lineage.get(k))
    if where:
        parts.append(where)
    if lineage.get("run"):
        parts.append(f"run {lineage['run']}")
    if lineage.get("code"):
        parts.append(f"code {str(lineage['code'])[:12]}")
    if lineage.get("step"):
        parts.append(f"step {str(lineage['step'])[:12]}")
    return " ".join(escape(p) for p in parts)


def _label(node: dict[str, Any], kind: str | None = None) -> str:
    edge = f"[{_KIND_STYLE.get(kind or '', 'white')}]{kind}[/] " if kind else ""
    if node.get("missing"):
        return f"{edge}[yellow]{node['commit'][:12]}[/] [red](not in this repository)[/]"
    refs = f" [bold]({escape(', '.join(node['refs']))})[/]" if node.get("refs") else ""
    text = f"{edge}[yellow]{node['commit'][:12]}[/]{refs} {escape(node.get('message', ''))}"
    made = _made_by(node.get("lineage") or {})
    if made:
        text += f"  [dim]\\[{made}][/]"
    trained = node.get("trained_on")
    if trained:
        text += f"  [magenta]trained on {escape(str(trained.get('table')))}: {trained.get('rows')} rows[/]"
    return text


def _show(tree: Tree) -> None:
    (out if out.is_terminal else Console(highlight=False, width=_PIPE_WIDTH)).print(tree)


def _print_upstream(doc: dict[str, Any]) -> None:
    nodes = doc["nodes"]
    by_source: dict[str, list[tuple[str, str]]] = {}
    for e in doc["edges"]:
        by_source.setdefault(e["from"], []).append((e["to"], e["kind"]))
    root = doc["root"]
    tree = Tree(_label(nodes[root]))
    shown = {root}

    def grow(branch: Tree, cid: str) -> None:
        for up, kind in by_source.get(cid, []):
            node = nodes.get(up, {"commit": up, "missing": True})
            if up in shown:
                branch.add(f"{_label(node, kind)} [dim](shown above)[/]")
                continue
            shown.add(up)
            child = branch.add(_label(node, kind))
            if node.get("more"):
                child.add("[dim]… (--depth for more)[/]")
            grow(child, up)

    grow(tree, root)
    _show(tree)


def _print_downstream(doc: dict[str, Any]) -> None:
    commits = doc["commits"]
    where = f" on {doc['branch']}" if doc["branch"] else ""
    out.print(
        f"{len(commits)} commit(s){where} derived from {escape(doc['ref'])} ([yellow]{doc['commit'][:12]}[/]); "
        f"{doc['scanned']} commits scanned"
    )
    for name, ids in doc["branches"].items():
        branch = Tree(f"[bold]{escape(name)}[/]")
        for cid in ids:
            via = commits[cid]["via"]
            node = branch.add(_label(commits[cid]))
            node.add(f"[dim]via[/] [{_KIND_STYLE.get(via['kind'], 'white')}]{via['kind']}[/] {via['from'][:12]}")
        _show(branch)
    for name, cid in doc["tags"].items():
        out.print(f"tag [bold]{escape(name)}[/] -> {_label(commits[cid])}")


@cli.command(name="lineage")
@click.argument("ref")
@click.option("--downstream", "down", is_flag=True, help="Show what was derived from REF instead of its sources.")
@click.option("--depth", type=int, default=3, show_default=True, help="Upstream: how many edges back to follow.")
@click.option("-b", "--branch", help="Downstream: only the commits this branch holds (e.g. models).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (same as the global --json).")
@pass_ctx
def lineage_cmd(ctx: Ctx, ref: str, down: bool, depth: int, branch: str | None, as_json: bool) -> None:
    """Show where REF came from (data commits, code, engine/pipeline/run/task), or with --downstream which
    commits were derived from it, e.g. `dacflow lineage region/eu --downstream --branch models`."""
    repo = ctx.open()
    ctx.json = ctx.json or as_json
    if down:
        doc = downstream(repo, ref, branch)
        ctx.emit(doc, lambda: _print_downstream(doc))
    else:
        if branch:
            raise UsageError("--branch goes with --downstream (which commits of a branch derive from REF)")
        doc = upstream(repo, ref, depth)
        ctx.emit(doc, lambda: _print_upstream(doc))
