"""`dacflow demo`: the main job — the heart-monitoring story end to end (see `dacflow.demo`), with a summary
table of what each step moved compared with a full copy, what the step cache skipped, and a PNG chart."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from .main import Ctx, cli, err, human_bytes, out, pass_ctx

if TYPE_CHECKING:
    from ..demo import DemoReport

CLOUDS = ("local", "emulators")  # as dacflow.demo.CLOUDS; the demo (pyarrow, scikit-learn) loads when it runs


@cli.command()
@click.option(
    "--dir",
    "directory",
    default="dacflow-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Work here; a second run on the same directory shows the step cache skipping unchanged work.",
)
@click.option(
    "--clouds",
    type=click.Choice(CLOUDS),
    default="local",
    show_default=True,
    help="local: directories only (no cloud, no server); emulators: S3, GCS and Azure emulators.",
)
@click.option("--rows", type=int, default=20_000, show_default=True, help="Readings per region and round.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Ingestion rounds.")
@click.option("--chart/--no-chart", default=True, show_default=True, help="Write demo-summary.png in the directory.")
@pass_ctx
def demo(ctx: Ctx, directory: str, clouds: str, rows: int, rounds: int, chart: bool) -> None:  # fmt: skip
    """Run the heart-monitoring story: edges on three clouds, delta transfer, merge, retraining, subscriber."""
    from ..demo import run_demo

    if ctx.json or not err.is_terminal:
        report = run_demo(directory, clouds=clouds, rows=rows, rounds=rounds)
    else:
        with err.status("[bold]dacflow demo[/bold] starting") as status:

            def say(message: str) -> None:
                status.update(f"[bold]dacflow demo[/bold] {message}")

            report = run_demo(directory, clouds=clouds, rows=rows, rounds=rounds, say=say)
    doc = report.to_json()
    if chart:
        doc["chart"] = write_chart(report, os.path.join(directory, "demo-summary.png"))

    def human() -> None:
        # piped output (CI logs, `| tee`) gets room for every column instead of rich's 80-column default
        console = out if out.is_terminal else Console(width=170, highlight=False, soft_wrap=True)
        console.print(summary_table(report))
        inc, full = report.model.get("incremental", {}), report.model.get("full", {})
        if inc and full:
            out.print(
                f"Model (round {report.model['round']}): retrained on {inc['rows']:,} new rows in "
                f"{inc['fit_seconds']:.2f}s, accuracy {inc['accuracy']:.3f}; a full retrain on {full['rows']:,} rows "
                f"takes {full['fit_seconds']:.2f}s for accuracy {full['accuracy']:.3f}."
            )
        hits = sum(s.cached for s in report.steps)
        out.print(
            f"{len(report.steps)} steps in {report.seconds:.1f}s; the step cache skipped {hits}"
            + ("" if hits else " (run the demo again on the same --dir to see it skip unchanged work)")
        )
        out.print(f"Stores: {', '.join(f'{k} {v}' for k, v in report.urls.items())}")
        if doc.get("chart"):
            out.print(f"Chart: {doc['chart']}")

    ctx.emit(doc, human)


def summary_table(report: DemoReport) -> Table:
    """Per step: rows, bytes moved against a full copy, time, and whether the cache skipped it."""
    table = Table(title=f"dacflow demo — heart monitoring on {report.clouds} stores", title_justify="left")
    for name, justify in [("step", "left"), ("round", "right"), ("rows", "right"), ("moved", "right"),
                          ("full copy", "right"), ("moved/full", "right"), ("time", "right"), ("cache", "left"),
                          ("note", "left")]:  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in report.steps:
        ratio = f"{s.bytes_moved / s.full_copy_bytes:.0%}" if s.full_copy_bytes else ""
        table.add_row(
            s.name, str(s.round), f"{s.rows:,}" if s.rows else "",
            human_bytes(s.bytes_moved) if s.bytes_moved or s.full_copy_bytes else "",
            human_bytes(s.full_copy_bytes) if s.full_copy_bytes else "", ratio, f"{s.seconds:.2f}s",
            "[green]skipped[/green]" if s.cached else "", s.note,
        )  # fmt: skip
    return table


def write_chart(report: DemoReport, path: str) -> str | None:
    """Bytes moved vs a full copy, and time, per step, as a PNG; None (with a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        err.print("dacflow demo: no chart (matplotlib is not installed: pip install 'dacflow[demo]')")
        return None
    labels = [f"r{s.round} {s.name}" for s in report.steps]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 0.35 * len(labels) + 1.5), sharey=True)
    ys: Any = list(range(len(labels)))
    left.barh([y + 0.2 for y in ys], [s.full_copy_bytes / 1024 for s in report.steps], 0.4, label="full copy",
              color="#cccccc")  # fmt: skip
    left.barh([y - 0.2 for y in ys], [s.bytes_moved / 1024 for s in report.steps], 0.4, label="moved",
              color="#2a7ab0")  # fmt: skip
    left.set_xlabel("KiB")
    left.set_title("bytes moved vs a full copy")
    left.legend(loc="upper right")
    right.barh(ys, [s.seconds for s in report.steps], color=["#5cb85c" if s.cached else "#f0ad4e"
                                                             for s in report.steps])  # fmt: skip
    right.set_xlabel("seconds (green: skipped by the step cache)")
    right.set_title("time per step")
    left.set_yticks(ys, labels)
    left.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return os.path.abspath(path)
