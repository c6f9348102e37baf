"""CLI verbs for tables and merges: `dacflow table write|read|schema|list` and `dacflow merge`."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from ..errors import UsageError
from .main import Ctx, cli, human_bytes, out, parse_meta, pass_ctx, sign_new, sign_option


def parse_policy(text: str) -> Any:
    """`fail`, `ours`, `theirs`, `latest:COL`, or per-column `col=rule,col2=rule,*=rule`."""
    if "=" not in text:
        return text
    rules = {}
    for part in text.split(","):
        col, sep, rule = part.partition("=")
        if not sep or not col or not rule:
            raise UsageError(f"per-column policy takes COLUMN=RULE[,COLUMN=RULE...], got {part!r}")
        rules[col.strip()] = rule.strip()
    return rules


@cli.group()
def table() -> None:
    """Versioned tables: write rows, read them, show the schema."""


@table.command(name="write")
@click.argument("name")
@click.argument("files", nargs=-1, required=True)
@click.option("-b", "--branch", default=None, help="Branch to write to (default: the default branch).")
@click.option("-k", "--key", "key", help="Primary key columns, comma separated (needed for a new table).")
@click.option(
    "--mode", type=click.Choice(["upsert", "append", "overwrite", "delete"]), default="upsert", show_default=True
)
@click.option("--dedupe", type=click.Choice(["last"]), default=None, help="Keep the last row of a repeated key.")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Metadata to record on the commit.")
@sign_option
@pass_ctx
def table_write(
    ctx: Ctx,
    name: str,
    files: tuple[str, ...],
    branch: str | None,
    key: str | None,
    mode: str,
    dedupe: str | None,
    message: str,
    meta: tuple[str, ...],
    sign_key: str | None,
) -> None:
    """Write rows from Parquet/CSV FILES to table NAME and commit."""
    repo = ctx.open()
    keys = [k.strip() for k in key.split(",") if k.strip()] if key else None
    result = repo.write_table(
        branch or repo.default_branch,
        name,
        list(files),
        keys,
        mode,
        dedupe=dedupe,
        message=message,
        meta=parse_meta(meta),
    )
    signed = sign_new(repo, result.commit if result.created else None, sign_key)
    s = result.stats

    def human() -> None:
        verb = "Committed" if result.created else "No change; branch stays at"
        out.print(
            f"{verb} {result.commit[:12]} on {result.branch}: {name} +{s['inserted']} ~{s['updated']} "
            f"-{s['deleted']} rows; {s['fragments_new']} new fragments ({human_bytes(s['bytes_new'])}), "
            f"{s['fragments_reused']} reused" + (f"; signed by key {signed['signed_by']}" if signed else "")
        )

    ctx.emit(result.to_json() | {"table": name} | signed, human)


@table.command(name="read")
@click.argument("ref")
@click.argument("name")
@click.option("-o", "--output", help="Write all rows to this .parquet or .csv file.")
@click.option("-n", "--limit", type=int, default=20, show_default=True, help="Rows to show.")
@pass_ctx
def table_read(ctx: Ctx, ref: str, name: str, output: str | None, limit: int) -> None:
    """Show (or export with -o) the rows of table NAME in snapshot REF."""
    repo = ctx.open()
    rows = repo.read_table(ref, name)
    if output:
        _write_rows(rows, output)
    head = rows.slice(0, max(0, limit))
    doc = {
        "table": name,
        "rows": rows.num_rows,
        "columns": rows.column_names,
        "output": output,
        "head": json.loads(json.dumps(head.to_pylist(), default=str)),
    }

    def human() -> None:
        if output:
            out.print(f"Wrote {rows.num_rows} rows of {name} to {output}")
            return
        view = Table(title=f"{name} @ {ref}: {rows.num_rows} rows")
        for col in rows.column_names:
            view.add_column(col)
        for row in head.to_pylist():
            view.add_row(*("" if v is None else str(v) for v in row.values()))
        out.print(view)

    ctx.emit(doc, human)


def _write_rows(rows: Any, path: str) -> None:
    if path.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        pacsv.write_csv(rows, path)
    elif path.lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        pq.write_table(rows, path)
    else:
        raise UsageError(f"cannot tell the format of {path}: use a .parquet or .csv name")


@table.command(name="schema")
@click.argument("ref")
@click.argument("name")
@pass_ctx
def table_schema(ctx: Ctx, ref: str, name: str) -> None:
    """Show the columns, types and key of table NAME in snapshot REF."""
    repo = ctx.open()
    schema, key = repo.table_schema(ref, name)
    rows = repo.require_table(ref, name).rows
    doc = {
        "table": name,
        "key": key,
        "rows": rows,
        "columns": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in schema],
    }

    def human() -> None:
        out.print(f"{name}: {rows} rows, key ({', '.join(key)})")
        for c in doc["columns"]:
            out.print(f"  {c['name']}: {c['type']}{' (key)' if c['name'] in key else ''}")

    ctx.emit(doc, human)


@table.command(name="list")
@click.argument("ref", required=False)
@pass_ctx
def table_list(ctx: Ctx, ref: str | None) -> None:
    """List the tables in snapshot REF (default: the default branch)."""
    from ..trees import walk

    repo = ctx.open()
    ref = ref or repo.default_branch
    found = {p: e for p, e in walk(repo.odb, repo.get_commit(ref).tree) if e.kind == "table"}
    tables = {p: repo.odb.get_table(e.ref).rows for p, e in found.items()}

    def human() -> None:
        for path, count in sorted(tables.items()):
            out.print(f"{path}  {count} rows")

    ctx.emit({"ref": ref, "tables": tables}, human)


@cli.command()
@click.argument("source")
@click.option("--into", help="Branch to merge into (default: the default branch).")
@click.option(
    "--policy", default="fail", show_default=True, help="fail | ours | theirs | latest:COLUMN | COLUMN=RULE,...,*=RULE"
)
@click.option("--quarantine", metavar="BRANCH", help="Merge the clean part; put unresolved conflicts on BRANCH.")
@click.option("-m", "--message", default="", help="Merge commit message.")
@sign_option
@pass_ctx
def merge(
    ctx: Ctx, source: str, into: str | None, policy: str, quarantine: str | None, message: str, sign_key: str | None
) -> None:
    """Three-way merge of SOURCE into a branch: files by path, tables row by row and cell by cell."""
    from ..lineage import lineage_meta

    repo = ctx.open()
    meta = lineage_meta("cli", inputs=[repo.resolve(source)])
    rule = parse_policy(policy)
    result = repo.merge(source, into=into, policy=rule, quarantine=quarantine, message=message, meta=meta)
    signed = sign_new(repo, result.commit, sign_key)
    doc = result.to_json() | {"conflict_list": result.conflict_list} | signed

    def human() -> None:
        if result.commit is None:
            out.print(f"Nothing to merge: {source} is already in {into or repo.default_branch}")
            return
        how = "Fast-forwarded" if result.fast_forward else "Merged"
        out.print(f"{how} {source} into {into or repo.default_branch}: {result.commit[:12]}")
        if signed:
            out.print(f"  signed by key {signed['signed_by']}")
        for name, n in sorted(result.tables.items()):
            out.print(f"  table {name}: {n} rows changed")
        for c in result.conflict_list[:50]:
            state = f"resolved ({c['resolution']})" if c["resolved"] else "UNRESOLVED"
            where = f"{c['table']} {c['key']}" if c["table"] else json.loads(c["key"])
            out.print(
                f"  conflict {where} column {c['column']}: base {c['base']} ours {c['ours']} "
                f"theirs {c['theirs']} -> {state}"
            )
        if result.quarantine:
            out.print(
                f"  {len(result.unresolved)} unresolved conflict(s) quarantined on {quarantine} "
                f"({result.quarantine[:12]})"
            )

    ctx.emit(doc, human)
