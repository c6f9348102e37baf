#!/usr/bin/env python3
"""Charts of the benchmark results, drawn from the figures in docs/benchmarks*.md (the docs are the record).

    python bench/charts.py            # writes docs/img/bench-*.png (needs matplotlib: the `demo` extra)
    python bench/charts.py --check    # only parses the figures and prints them (no matplotlib; the docs test)

Each chart reads a Markdown table of one page by its header, so editing a figure in the page and rerunning this
script redraws the chart; a table whose shape changed fails here with the page and the header it looked for.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMG = DOCS / "img"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


class FigureError(Exception):
    """A table or a figure the charts need is missing from a benchmark page."""


def table(page: str, first_header: str, *, after: str | None = None) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `page` (after heading text `after`) whose first header cell is
    `first_header`, as dicts keyed by header (bold markers stripped)."""
    text = (DOCS / page).read_text(encoding="utf-8")
    if after is not None:
        at = text.find(after)
        if at < 0:
            raise FigureError(f"{page}: no section {after!r}")
        text = text[at:]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = _cells(line)
        if cells and cells[0] == first_header and i + 1 < len(lines) and set(lines[i + 1]) <= set("|-: "):
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(cells, _cells(row), strict=False)))
            return rows
    raise FigureError(f"{page}: no table whose first column is {first_header!r}")


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    return [c.strip().replace("**", "").replace("`", "") for c in line.strip().strip("|").split("|")]


def numbers(cell: str) -> list[float]:
    """Every number in a cell, in order ("4.10 → 3.55 (process 0.40)" → [4.1, 3.55, 0.4])."""
    return [float(n.replace(",", "")) for n in NUMBER.findall(cell)]


def row(rows: list[dict[str, str]], starts: str) -> dict[str, str]:
    """The row whose first cell starts with `starts`."""
    for r in rows:
        if next(iter(r.values())).startswith(starts):
            return r
    raise FigureError(f"no row starting with {starts!r} (rows: {[next(iter(r.values())) for r in rows]})")


# -- the figures ------------------------------------------------------------------------------------------------


def snapshot_figures() -> dict[str, Any]:
    """docs/benchmarks.md: library seconds per snapshot step before and after the pipeline change, and the limit."""
    rows = table("benchmarks.md", "step", after="### After the pipeline change")
    steps = {
        "initial snapshot": "(a)",
        "no-change re-snapshot": "(b)",
        "1% CSV append": "(c)",
        "no-change right after a write": "(f2)",
    }
    out: dict[str, Any] = {"steps": [], "limit_none": numbers(row(rows, "limit")["none lib s (before → after)"])[1]}
    for label, prefix in steps.items():
        r = row(rows, prefix)
        none = numbers(r["none lib s (before → after)"])
        zstd = numbers(r["zstd lib s (before → after)"])
        out["steps"].append({"step": label, "none": none[:2], "zstd": zstd[:2]})
    return out


def transfer_figures() -> dict[str, Any]:
    """docs/benchmarks-transfer.md: push vs boto3 (MB/s, best of 3) and MiB sent per hop, full copy vs 1% delta."""
    rows = table("benchmarks-transfer.md", "step", after="## Results")

    def best(*prefixes: str) -> float:
        found = [numbers(r["MB/s"])[0] for r in rows if next(iter(r.values())).startswith(prefixes)]
        if not found:
            raise FigureError(f"benchmarks-transfer.md: no result row starting with {prefixes}")
        return max(found)

    throughput = {
        "dacflow push": best("push local → S3"),
        "boto3 upload_file\n(multipart)": best("boto3 upload_file packs, default", "boto3 packs, multipart"),
        "boto3 upload_file\n(single PUT)": best("boto3 upload_file packs, single", "boto3 packs, single"),
        "boto3 upload_file\n(raw files)": best("boto3 upload_file of the raw"),
    }
    hops = []
    for hop, full_prefix, delta_prefix in [
        ("local → S3", "push local → S3, attempt 1", "1% delta local → S3"),
        ("S3 → GCS", "clone S3 → GCS", "1% delta S3 → GCS"),
        ("GCS → Azure", "clone GCS → Azure", "1% delta GCS → Azure"),
    ]:
        full, delta = row(rows, full_prefix), row(rows, delta_prefix)
        hops.append({"hop": hop, "full_mib": numbers(full["MiB sent"])[0], "delta_mib": numbers(delta["MiB sent"])[0],
                     "full_s": numbers(full["s"])[0], "delta_s": numbers(delta["s"])[0]})  # fmt: skip
    return {"throughput_mb_s": throughput, "hops": hops}


def table_figures() -> dict[str, Any]:
    """docs/benchmarks-tables.md: diff and merge against DuckDB's full keyed comparison, seconds at 10M rows."""
    rows = table("benchmarks-tables.md", "step", after="## Results (10M rows)")
    return {
        "seconds": {
            "dacflow diff\nv0 → eu": numbers(row(rows, "diff")["wall s"])[0],
            "dacflow merge\nna → main": numbers(row(rows, "merge na")["wall s"])[0],
            "DuckDB full keyed\ncomparison": numbers(row(rows, "DuckDB")["wall s"])[0],
        },
        "upsert_seconds": numbers(row(rows, "upsert 1% on eu")["wall s"])[0],
    }


# -- drawing ------------------------------------------------------------------------------------------------------


def draw(figures: dict[str, dict[str, Any]]) -> list[Path]:
    """Write one PNG per page under docs/img/; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    IMG.mkdir(exist_ok=True)
    written = []
    blue, grey, orange = "#2a7ab0", "#b0b0b0", "#f0ad4e"

    snap = figures["snapshot"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    labels = [s["step"] for s in snap["steps"]]
    ys = list(range(len(labels)))
    h = 0.2
    for k, (key, when, color) in enumerate(
        [("none", 0, grey), ("none", 1, blue), ("zstd", 0, "#e0c090"), ("zstd", 1, orange)]
    ):
        values = [s[key][when] for s in snap["steps"]]
        name = f"{'no compression' if key == 'none' else 'zstd'}, {'before' if when == 0 else 'after'}"
        ax.barh([y + (k - 1.5) * h for y in ys], values, h, label=name, color=color)
    ax.axvline(snap["limit_none"], color="black", linestyle="--", linewidth=1, label="limit: read, chunk, hash")
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds (library call), 2 GiB dataset, 2 cores")
    ax.set_title("Snapshot: before and after the pipeline change")
    ax.legend(fontsize=8, loc="lower right")
    written.append(_save(fig, plt, "bench-snapshot.png"))

    tr = figures["transfer"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    names = list(tr["throughput_mb_s"])
    left.bar(names, [tr["throughput_mb_s"][n] for n in names], color=[blue, grey, grey, grey])
    left.set_ylabel("MB/s (best of 3)")
    left.set_title("2 GiB to the S3 emulator (moto)")
    left.tick_params(axis="x", labelsize=8)
    hops = [h["hop"] for h in tr["hops"]]
    xs = list(range(len(hops)))
    right.bar([x - 0.2 for x in xs], [h["full_mib"] for h in tr["hops"]], 0.4, label="full copy", color=grey)
    right.bar([x + 0.2 for x in xs], [h["delta_mib"] for h in tr["hops"]], 0.4, label="after a 1% append",
              color=blue)  # fmt: skip
    right.set_yscale("log")
    right.set_ylim(1, 20_000)
    for x, h in zip(xs, tr["hops"], strict=True):
        right.text(x - 0.2, h["full_mib"], f"{h['full_mib']:,.0f}\n{h['full_s']:.0f} s", ha="center", va="bottom",
                   fontsize=7)  # fmt: skip
        right.text(x + 0.2, h["delta_mib"], f"{h['delta_mib']:.1f}\n{h['delta_s']:.1f} s", ha="center",
                   va="bottom", fontsize=7)  # fmt: skip
    right.set_xticks(xs, hops)
    right.set_ylabel("MiB sent (log scale)")
    right.set_title("Each hop sends only the delta")
    right.legend(fontsize=8, loc="upper right")
    written.append(_save(fig, plt, "bench-transfer.png"))

    tb = figures["tables"]
    fig, ax = plt.subplots(figsize=(7, 3))
    names = list(tb["seconds"])
    ax.barh(names, [tb["seconds"][n] for n in names], color=[blue, blue, grey])
    for y, n in enumerate(names):
        ax.text(tb["seconds"][n], y, f" {tb['seconds'][n]:.2f} s", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("seconds, 10M-row table, 1% upserts on two branches")
    ax.set_title("Row-level diff and merge vs a full DuckDB comparison")
    ax.set_xlim(0, max(tb["seconds"].values()) * 1.2)
    written.append(_save(fig, plt, "bench-tables.png"))
    return written


def _save(fig: Any, plt: Any, name: str) -> Path:
    fig.tight_layout()
    path = IMG / name
    # no timestamps in the PNG, so redrawing unchanged figures leaves the files byte-identical
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


def figures() -> dict[str, dict[str, Any]]:
    """All figures the charts draw, read from the benchmark pages."""
    return {"snapshot": snapshot_figures(), "transfer": transfer_figures(), "tables": table_figures()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="parse the figures and print them; draw nothing")
    args = parser.parse_args(argv)
    try:
        found = figures()
    except FigureError as exc:
        print(f"charts: {exc}", file=sys.stderr)
        return 1
    if args.check:
        print(json.dumps(found, indent=1, ensure_ascii=False))
        return 0
    for path in draw(found):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
