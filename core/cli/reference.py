"""The CLI reference (docs/cli.md), rendered from every command's `--help` so the page cannot drift from the code.

Regenerate with `python -m dacflow.cli.reference > docs/cli.md`; tests/test_docs.py fails when the page is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import click

from .main import cli

WIDTH = 80  # help is wrapped at a fixed width, whatever the terminal, so the page is reproducible

#: Sections of the page, in reading order; a command missing here lands under "Other commands", never dropped.
SECTIONS: list[tuple[str, list[str]]] = [
    ("Repositories and snapshots", ["init", "snapshot", "log", "show", "cat", "status", "checkout", "diff"]),
    ("Branches and tags", ["branch", "tag"]),
    ("Tables and merges", ["table", "merge"]),
    ("Moving data between stores", ["push", "pull", "clone"]),
    ("Subscriptions", ["publish", "published", "subscribe", "subscriptions", "unsubscribe", "sync", "watch"]),
    ("Registries", ["registry"]),
    ("Step cache and lineage", ["cache", "lineage"]),
    ("Signing", ["keygen", "sign", "verify"]),
    ("Quality gates", ["gate"]),
    ("Maintenance", ["check", "gc"]),
    ("The demo", ["demo"]),
]

HEADER = """# CLI reference

Generated from `dacflow COMMAND --help` by `python -m dacflow.cli.reference > docs/cli.md` (tests/test_docs.py
checks it is current). Global options go before the command: `dacflow --repo PATH --json snapshot ...`. Every
command prints one JSON object with `--json`; errors are one line (`dacflow: error: ...`) and a non-zero exit code
(docs/design.md, "Error vocabulary").
"""


def _walk(ctx: click.Context, path: list[str]) -> Iterator[tuple[list[str], str]]:
    """Yield (command path, help text) for the command of `ctx` and, for a group, each subcommand in turn."""
    command = ctx.command
    yield path, command.get_help(ctx).rstrip()
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            with sub.make_context(name, [], parent=ctx, resilient_parsing=True) as child:
                yield from _walk(child, [*path, name])


def commands() -> dict[str, list[tuple[list[str], str]]]:
    """Every top-level command with the help of it and its subcommands, keyed by the command's name."""
    root = cli.make_context("dacflow", [], resilient_parsing=True, terminal_width=WIDTH, max_content_width=WIDTH)
    found: dict[str, list[tuple[list[str], str]]] = {"": [([], cli.get_help(root).rstrip())]}
    with root:
        for name in cli.list_commands(root):
            sub = cli.get_command(root, name)
            if sub is None or sub.hidden:
                continue
            with sub.make_context(name, [], parent=root, resilient_parsing=True) as child:
                found[name] = list(_walk(child, [name]))
    return found


def render() -> str:
    """The whole page as Markdown: the top-level help, then each section's commands and subcommands."""
    found = commands()
    placed = {name for _, names in SECTIONS for name in names}
    sections = [(title, [n for n in names if n in found]) for title, names in SECTIONS]
    others = sorted(n for n in found if n and n not in placed)
    if others:
        sections.append(("Other commands", others))
    parts = [HEADER, "## dacflow\n", "```\n" + found[""][0][1] + "\n```\n"]
    for title, names in sections:
        if not names:
            continue
        parts.append(f"## {title}\n")
        for name in names:
            for path, text in found[name]:
                parts.append(f"### dacflow {' '.join(path)}\n")
                parts.append("```\n" + text + "\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    sys.stdout.write(render())
