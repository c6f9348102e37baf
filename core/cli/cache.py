"""CLI verbs for the step cache: `dacflow cache list` and `dacflow cache clear` (see docs/stepcache.md)."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ..stepcache import clear as clear_entries
from ..stepcache import list_entries
from .main import Ctx, cli, out, pass_ctx


@cli.group()
def cache() -> None:
    """The step cache: which pipeline steps are remembered, and forgetting them."""


def _inputs_text(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{name}={(value or '?')[:12]}" for name, value in inputs.items()) or "-"


@cache.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (same as the global --json).")
@pass_ctx
def cache_list(ctx: Ctx, as_json: bool) -> None:
    """List cached steps: key, step name, output commit, when it was cached and the inputs it read."""
    ctx.json = ctx.json or as_json
    entries = [e.to_json() for e in list_entries(ctx.open())]

    def human() -> None:
        if not entries:
            out.print("No cached steps.")
            return
        table = Table(box=None, header_style="bold")
        for column in ("KEY", "STEP", "OUTPUT", "CREATED", "INPUTS"):
            table.add_column(column)
        for e in entries:
            step = e["step"] or f"? ({e['problem'] or 'no record'})"
            created = (e["created"] or "-")[:19].replace("T", " ")
            table.add_row(e["key"][:12], step, e["output"][:12], created, _inputs_text(e["inputs"]))
        out.print(table)
        out.print(f"{len(entries)} cached step(s)")

    ctx.emit({"entries": entries, "count": len(entries)}, human)


@cache.command(name="clear")
@click.argument("keys", nargs=-1, metavar="[KEY...]")
@click.option("--step", "step_name", default=None, metavar="NAME", help="Clear every entry of this step.")
@pass_ctx
def cache_clear(ctx: Ctx, keys: tuple[str, ...], step_name: str | None) -> None:
    """Forget cached steps: the KEYs given (4+ hex digits each), those of --step NAME, or all of them.

    The outputs stay in history; only the cache entries go (gc may then collect outputs no branch holds)."""
    cleared = clear_entries(ctx.open(), keys, step=step_name)
    ctx.emit(
        {"cleared": cleared, "count": len(cleared)},
        lambda: out.print(f"Cleared {len(cleared)} cache entr{'y' if len(cleared) == 1 else 'ies'}"),
    )
