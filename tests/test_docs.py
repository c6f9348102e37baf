"""The documentation site: it builds with `mkdocs build --strict`, its links resolve, the CLI reference and the
benchmark charts are current, and every code sample of every page in the nav (and of README.md) runs.

How samples run (docs/index.md says the same to readers): each page runs in a fresh sandbox directory, its
```python and ```bash/```console/```sh blocks in order (tests/docs_runner.py): Python blocks share one module,
bash blocks run their `dacflow ...` lines and the harmless set-up lines around them (`export`, `cd`, `mkdir`,
`printf`, `python -c` ...), keeping the directory and variables for the blocks after them. Lines of other
programs (`pip`, `./dev`, `airflow`, `pyflyte`) are not run and are listed in the test's output. Paths under
`/tmp/` and `/data/` are moved into the sandbox; `s3://NAME`, `gs://NAME` and `az://NAME` become fresh buckets
on the emulators of tests/emulators.py. A block can be marked, on the line before it:

    <!-- docs-test: skip (reason) -->                 not run (Python is still compiled and its dacflow imports
                                                      resolved); listed as a skipped test with its reason
    <!-- docs-test: excerpt example_dags/FILE.py -->  a verbatim excerpt: it must appear in FILE (which the
                                                      example tests run), indentation aside
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNER = Path(__file__).resolve().parent / "docs_runner.py"

FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(skip|excerpt)\s+(.*?)\s*-->\s*$")
SAMPLE_LANGS = {"python", "bash", "console", "sh", "shell"}
#: first words of shell lines that run: dacflow itself and set-up that only touches the sandbox
RUN_COMMANDS = {"dacflow", "export", "cd", "mkdir", "printf", "echo", "cp", "mv", "rm", "cat", "ls", "touch"}
CLOUD_URL = re.compile(r"\b(s3|gs|az)://([a-z0-9][a-z0-9-]{1,40}[a-z0-9])(?=[/\s'\"]|$)")
SANDBOXED = re.compile(r"(?<![\w./~-])/(tmp|data)/")
#: pages whose samples run in a few seconds; the others (a dacflow process per command line, flytekit, emulators)
#: take 8-40 s on an idle 2-core machine and 2-3x that under load (README 40 s idle, 76 s loaded), so they are slow
FAST_PAGES = {"tables.md", "airflow.md", "stepcache.md"}


@dataclass
class Block:
    page: str  # "README.md" or a path under docs/
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: tuple[str, str] | None  # ("skip", "(reason)") or ("excerpt", "example_dags/x.py")

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def nav_pages() -> list[str]:
    """Every page of the site's nav, as paths relative to docs/."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    return pages


def page_path(page: str) -> Path:
    return ROOT / page if page == "README.md" else DOCS / page


def blocks(page: str) -> list[Block]:
    """The fenced code blocks of a page (indented fences in lists included), with the marker line before each."""
    lines = page_path(page).read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, lang = match.groups()
        end = i + 1
        while end < len(lines) and not re.match(rf"^{indent}```\s*$", lines[end]):
            end += 1
        code = textwrap.dedent("\n".join(line[len(indent) :] if line.startswith(indent) else line
                                         for line in lines[i + 1 : end]))  # fmt: skip
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before]) if before >= 0 else None
        found.append(Block(page, i + 1, lang, code, (marker.group(1), marker.group(2)) if marker else None))
        i = end + 1
    return found


def samples(page: str) -> list[Block]:
    return [b for b in blocks(page) if b.lang in SAMPLE_LANGS]


def all_pages() -> list[str]:
    return ["README.md", *nav_pages()]


def shell_lines(block: Block) -> tuple[list[str], list[str]]:
    """(lines to run, lines not run) of a shell block; continuation lines are joined, console output dropped."""
    raw = block.code.splitlines()
    if block.lang == "console":
        raw = [line[2:] for line in raw if line.startswith("$ ")]
    logical: list[str] = []
    for line in raw:
        if logical and logical[-1].endswith("\\"):
            logical[-1] = logical[-1][:-1] + " " + line.strip()
        else:
            logical.append(line)
    run, not_run = [], []
    for line in logical:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        runs = words[0] in RUN_COMMANDS or (words[0] in ("python", "python3") and words[1:2] == ["-c"])
        (run if runs else not_run).append(stripped)
    return run, not_run


# -- (a) the site builds, links resolve ---------------------------------------------------------------------------


def test_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict` fails on a broken link or anchor, a missing image, a nav entry without a page and a
    page left out of the nav."""
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "index.html").is_file() and (tmp_path / "threat-model" / "index.html").is_file()
    assert (tmp_path / "img" / "demo-summary.png").is_file()
    for page in nav_pages():
        assert (DOCS / page).is_file(), f"the nav names {page}, which is not in docs/"


def test_every_doc_page_is_in_the_nav() -> None:
    pages = set(nav_pages())
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name not in pages)
    assert not missing, f"add {missing} to the nav in mkdocs.yml"


def test_readme_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links
    broken = []
    for link in links:
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue
        if not (ROOT / link.split("#")[0]).exists():
            broken.append(link)
    assert not broken, f"README.md links to missing files: {broken}"


def test_cli_reference_is_current() -> None:
    """docs/cli.md is generated from every command's --help; a new or changed command must be regenerated."""
    from dacflow.cli.main import cli
    from dacflow.cli.reference import render

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in cli.commands:
        assert f"### dacflow {name}\n" in text, f"docs/cli.md lacks `dacflow {name}`"
    assert text == render(), "docs/cli.md is stale: run `python -m dacflow.cli.reference > docs/cli.md`"


def test_benchmark_charts_read_their_figures_from_the_docs() -> None:
    """bench/charts.py draws docs/img/bench-*.png from the tables of the benchmark pages; they must still parse."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "charts.py"), "--check"], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["transfer"]["hops"][0]["delta_mib"] < figures["transfer"]["hops"][0]["full_mib"] / 100
    assert figures["tables"]["seconds"]["DuckDB full keyed\ncomparison"] > 0
    for name in ("bench-snapshot.png", "bench-transfer.png", "bench-tables.png", "demo-summary.png"):
        assert (DOCS / "img" / name).stat().st_size > 10_000
        assert f"img/{name}" in "".join(p.read_text() for p in DOCS.glob("*.md")), f"{name} is not shown anywhere"


# -- (b) the code samples -----------------------------------------------------------------------------------------


def _sample_params() -> list[object]:
    out: list[object] = []
    for page in all_pages():
        runnable = [b for b in samples(page) if b.marker is None]
        if not any(b.lang == "python" or shell_lines(b)[0] for b in runnable):
            continue
        marks = [] if page in FAST_PAGES else [pytest.mark.slow]
        out.append(pytest.param(page, marks=marks, id=page))
    return out


def _skipped_params() -> list[object]:
    return [pytest.param(b, id=b.where) for page in all_pages() for b in samples(page) if b.marker
            and b.marker[0] == "skip"]  # fmt: skip


def _excerpt_params() -> list[object]:
    return [pytest.param(b, id=b.where) for page in all_pages() for b in samples(page) if b.marker
            and b.marker[0] == "excerpt"]  # fmt: skip


def _check_imports(block: Block) -> None:
    """Compile a Python block and import every dacflow module and name it imports."""
    tree = ast.parse(block.code, block.where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dacflow":
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):
                    importlib.import_module(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dacflow":
                    importlib.import_module(alias.name)


def _sandbox_code(code: str, sandbox: Path, buckets: dict[str, str]) -> str:
    code = SANDBOXED.sub(lambda m: f"{sandbox}/{m.group(1)}/", code)
    return CLOUD_URL.sub(lambda m: f"{m.group(1)}://{buckets[m.group(1)]}-{m.group(2)}", code)


@pytest.mark.parametrize("page", _sample_params())
def test_page_samples_run(
    page: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> None:
    """Run the page's samples in order in a sandbox, S3/GCS/Azure ones against the emulators."""
    runnable = [b for b in samples(page) if b.marker is None]
    text = "\n".join(b.code for b in runnable)
    buckets = {}
    for scheme, fixture in (("s3", "s3_env"), ("gs", "gcs_env"), ("az", "azure_env")):
        if re.search(rf"\b{scheme}://[a-z0-9]", text):
            buckets[scheme] = request.getfixturevalue(fixture)  # sets the SDK's env vars; a fresh bucket name prefix
    sandbox = tmp_path / "sandbox"
    for sub in ("tmp", "data", "home", "work", "cache", "airflow"):
        (sandbox / sub).mkdir(parents=True)
    steps, not_run = [], []
    for block in runnable:
        if block.lang == "python":
            steps.append({"where": block.where, "lang": "python", "code": _sandbox_code(block.code, sandbox, buckets)})
            continue
        run, skipped = shell_lines(block)
        not_run += [f"{block.where}: {line}" for line in skipped]
        if run:
            script = "\n".join(_sandbox_code(line, sandbox, buckets) for line in run)
            steps.append({"where": block.where, "lang": "bash", "code": script})
    spec = tmp_path / "samples.json"
    spec.write_text(json.dumps(steps))
    env = dict(os.environ)
    env.update(
        HOME=str(sandbox / "home"),
        DACFLOW_REPO=str(sandbox / "repo"),
        DACFLOW_CACHE_DIR=str(sandbox / "cache"),
        AIRFLOW_HOME=str(sandbox / "airflow"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join([str(ROOT / "example_dags"), env.get("PYTHONPATH", "")]),
        COLUMNS="120",
        # every sample starts Python afresh: compiled bytecode, kept for the session, saves ~0.5 s CPU per command
        PYTHONPYCACHEPREFIX=str(tmp_path_factory.getbasetemp() / "docs-pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(RUNNER), str(spec)], cwd=sandbox / "work", env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    seconds = time.perf_counter() - t0
    print(done.stdout[-4000:])
    print(done.stderr[-8000:], file=sys.stderr)
    print(f"{page}: {len(steps)} samples run in {seconds:.1f}s; {len(not_run)} shell lines of other programs not run:")
    for line in not_run:
        print(f"  not run: {line}")
    assert done.returncode == 0, f"a sample of {page} failed:\n{done.stderr[-6000:]}"


@pytest.mark.parametrize("block", _skipped_params())
def test_skipped_samples_compile(block: Block) -> None:
    """A skipped block is still compiled (Python) and its dacflow imports resolved; the skip shows its reason."""
    if block.lang == "python":
        _check_imports(block)
    pytest.skip(f"{block.where} [{block.lang}] {block.marker[1] if block.marker else ''}")


@pytest.mark.parametrize("block", _excerpt_params())
def test_excerpts_match_their_example(block: Block) -> None:
    """A block marked as an excerpt appears verbatim (up to a uniform indentation) in its example file."""
    assert block.marker is not None
    source = (ROOT / block.marker[1]).read_text(encoding="utf-8").splitlines()
    excerpt = [line.rstrip() for line in block.code.strip("\n").splitlines()]
    first = excerpt[0].strip()
    for start, line in enumerate(source):
        if line.strip() != first:
            continue
        shift = len(line) - len(line.lstrip()) - (len(excerpt[0]) - len(excerpt[0].lstrip()))
        window = source[start : start + len(excerpt)]
        pad = " " * max(shift, 0)
        if len(window) == len(excerpt) and all(
            (not e and not s.strip()) or s.rstrip() == pad + e for e, s in zip(excerpt, window, strict=True)
        ):
            if _compiles(block.code):  # a whole statement or definition: its dacflow imports must resolve
                _check_imports(block)
            return
    pytest.fail(f"{block.where}: the excerpt is not in {block.marker[1]} (copy it again from the file)")


def _compiles(code: str) -> bool:
    try:
        ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return False
    return True


def test_marked_blocks_are_few() -> None:
    """Skips are the exception: each needs a reason, and there are only a handful."""
    skipped = [b for page in all_pages() for b in samples(page) if b.marker and b.marker[0] == "skip"]
    for block in skipped:
        assert re.match(r"^\(.{10,}\)$", block.marker[1] if block.marker else ""), f"{block.where}: give a reason"
    assert len(skipped) <= 8, [b.where for b in skipped]
