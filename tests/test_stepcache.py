"""The step cache: keys (code, content, parameters), the decorator and context manager, restores, races and gc.

The heart of it is the issue's three-step pipeline (ingest -> clean -> features), written to a module file so a
test can edit one step's source; counter files prove which bodies ran."""

from __future__ import annotations

import functools
import importlib.util
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from dacflow import RefNotFoundError, Repository, UsageError
from dacflow.errors import UnsupportedFormatError
from dacflow.providers.flyte.values import Snapshot
from dacflow.stepcache import (
    CACHE,
    cached_step,
    clear,
    code_fingerprint,
    current_step,
    list_entries,
    lookup,
    read_record,
    record_key,
    step,
    step_key,
)

PIPELINE = '''
"""The issue's pipeline: a landing CSV -> table raw -> table clean -> table features, one branch each."""
from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from dacflow.stepcache import step

REPO = os.environ["PIPE_REPO"]
COUNTERS = os.environ["PIPE_COUNTERS"]


def bump(name: str) -> None:
    path = os.path.join(COUNTERS, name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    with open(path, "w") as f:
        f.write(str(n + 1))


@step(REPO, output_branch="raw", inputs=["landing"])
def ingest(landing: str, meta: dict | None = None):
    bump("ingest")
    repo = ingest.repo()
    rows = pcsv.read_csv(pa.BufferReader(repo.read_file(landing, "vitals.csv")))
    return repo.write_table("raw", "vitals", rows, key=["id"], mode="overwrite", meta=meta)


@step(REPO, output_branch="clean", inputs=["raw"])
def clean(raw: str, min_hr: int = 30, meta: dict | None = None):
    bump("clean")
    repo = clean.repo()
    rows = repo.read_table(raw, "vitals")
    kept = rows.filter(pc.greater_equal(rows["hr"], min_hr))
    return repo.write_table("clean", "vitals", kept, key=["id"], mode="overwrite", meta=meta)


@step(REPO, output_branch="features", inputs=["clean"])
def features(clean: str, meta: dict | None = None):
    bump("features")
    repo = features.repo()
    rows = repo.read_table(clean, "vitals")
    out = pa.table({"id": rows["id"], "hr_x": pc.multiply(rows["hr"], 2)})
    return repo.write_table("features", "features", out, key=["id"], mode="overwrite", meta=meta)


def run(min_hr: int = 30):
    a = ingest("landing")
    b = clean(a, min_hr=min_hr)
    return a, b, features(b)
'''

CSV = "id,hr\n1,61\n2,75\n3,88\n4,52\n"


class Pipeline:
    """The pipeline module in a temporary folder: load it, edit it, count what ran."""

    def __init__(self, root: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.repo = root, repo
        self.counters = root / "counters"
        self.counters.mkdir(parents=True)
        self.landing = root / "landing"
        self.landing.mkdir()
        (self.landing / "vitals.csv").write_text(CSV)
        self.file = root / "pipeline_steps.py"
        self.file.write_text(PIPELINE)
        monkeypatch.setenv("PIPE_REPO", repo.url)
        monkeypatch.setenv("PIPE_COUNTERS", str(self.counters))
        monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit of equal size must not load a stale .pyc
        self.loads = 0
        self.mod = self.load()
        self.snapshot()

    def load(self) -> ModuleType:
        self.loads += 1
        spec = importlib.util.spec_from_file_location(f"pipeline_steps_{self.loads}", self.file)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    def snapshot(self) -> str:
        return self.repo.snapshot(str(self.landing), "landing", "landing batch").commit

    def edit(self, old: str, new: str) -> None:
        text = self.file.read_text()
        assert old in text
        self.file.write_text(text.replace(old, new))
        self.mod = self.load()

    def ran(self) -> dict[str, int]:
        return {n: int((self.counters / n).read_text()) if (self.counters / n).exists() else 0 for n in STEPS}


STEPS = ("ingest", "clean", "features")


@pytest.fixture
def pipe(tmp_path: Path, repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    return Pipeline(tmp_path / "pipe", repo, monkeypatch)


def hr_x(repo: Repository, ref: str) -> dict[int, int]:
    rows = repo.read_table(ref, "features").to_pylist()
    return {r["id"]: r["hr_x"] for r in rows}


def test_three_step_pipeline(pipe: Pipeline, repo: Repository) -> None:
    a, b, c = pipe.mod.run()
    assert pipe.ran() == {"ingest": 1, "clean": 1, "features": 1} and not (a.hit or b.hit or c.hit)
    assert hr_x(repo, "features") == {1: 122, 2: 150, 3: 176, 4: 104}
    assert [repo.head(x) for x in ("raw", "clean", "features")] == [a.commit, b.commit, c.commit]

    # Lineage on the commits each step made: the contract's fields, with the key and the input commit.
    lineage = repo.get_commit(c.commit).meta["dacflow.lineage"]
    assert lineage == {
        "engine": "python",
        "task": pipe.mod.features.name,
        "code": code_fingerprint(pipe.mod.features),
        "inputs": [b.commit],
        "step": c.key,
    }
    assert repo.get_commit(a.commit).meta["dacflow.lineage"]["inputs"] == [repo.head("landing")]

    # Rerun: every step is skipped, nothing moves.
    a2, b2, c2 = pipe.mod.run()
    assert pipe.ran() == {"ingest": 1, "clean": 1, "features": 1}
    assert (a2.hit, b2.hit, c2.hit) == (True, True, True)
    assert (a2.commit, b2.commit, c2.commit) == (a.commit, b.commit, c.commit)
    assert a2.value["rows"] == 4  # the body's JSON result comes back from the record on a hit

    # A lost output branch is restored from the cache, its body not run.
    repo.delete_branch("features")
    assert pipe.mod.run()[2].hit and repo.head("features") == c.commit and pipe.ran()["features"] == 1

    # Only the last step's code changes: the first two are skipped, the third re-runs with the new code.
    pipe.edit('pc.multiply(rows["hr"], 2)', 'pc.multiply(rows["hr"], 3)')
    a3, b3, c3 = pipe.mod.run()
    assert pipe.ran() == {"ingest": 1, "clean": 1, "features": 2}
    assert (a3.hit, b3.hit, c3.hit) == (True, True, False) and c3.key != c.key
    assert hr_x(repo, "features") == {1: 183, 2: 225, 3: 264, 4: 156}
    assert repo.get_commit(c3.commit).meta["dacflow.lineage"]["inputs"] == [b.commit]

    # Comments, docstrings and blank lines are not code: still all skipped.
    pipe.edit('    bump("features")\n', '    """Double the heart rate."""\n    bump("features")  # count\n\n')
    assert [r.hit for r in pipe.mod.run()] == [True, True, True] and pipe.ran()["features"] == 2

    # One input row changes: everything downstream of it re-runs.
    (pipe.landing / "vitals.csv").write_text(CSV.replace("3,88", "3,90"))
    pipe.snapshot()
    a4, b4, c4 = pipe.mod.run()
    assert pipe.ran() == {"ingest": 2, "clean": 2, "features": 3}
    assert not (a4.hit or b4.hit or c4.hit)
    assert hr_x(repo, "features") == {1: 183, 2: 225, 3: 270, 4: 156}

    # A parameter that changes clean's output re-runs clean and features, not ingest.
    a5, b5, c5 = pipe.mod.run(min_hr=60)
    assert pipe.ran() == {"ingest": 2, "clean": 3, "features": 4} and a5.hit and not b5.hit and not c5.hit
    assert set(hr_x(repo, "features")) == {1, 2, 3}
    # A parameter change that leaves clean's output equal re-runs clean only: features keys on content.
    a6, b6, c6 = pipe.mod.run(min_hr=55)
    assert pipe.ran() == {"ingest": 2, "clean": 4, "features": 4}
    assert (a6.hit, b6.hit, c6.hit) == (True, False, True) and c6.commit == c5.commit

    # Going back to the first data and parameters hits again (the entries are all still there).
    (pipe.landing / "vitals.csv").write_text(CSV)
    pipe.snapshot()
    assert [r.hit for r in pipe.mod.run()] == [True, True, True]
    assert hr_x(repo, "features") == {1: 183, 2: 225, 3: 264, 4: 156}
    assert repo.check().ok


def test_identical_data_recommitted_elsewhere_hits(pipe: Pipeline, repo: Repository) -> None:
    first = pipe.mod.ingest("landing")
    copy = repo.snapshot(str(pipe.landing), "landing-copy", "same files again")
    assert copy.commit != repo.head("landing")
    again = pipe.mod.ingest("landing-copy")
    assert again.hit and again.key == first.key and pipe.ran()["ingest"] == 1


def test_selected_table_keys_only_that_table(repo: Repository) -> None:
    repo.write_table("raw", "vitals", pa.table({"id": [1, 2], "hr": [60, 70]}), key=["id"])
    runs: list[str] = []

    @step(repo, output_branch="out", inputs=["src"], name="mean")
    def mean(src: str, meta: dict | None = None) -> Any:
        runs.append(src)
        rows = repo.read_table(src, "vitals")
        return repo.commit_changes(
            "out", {"mean.txt": str(sum(rows["hr"].to_pylist()) / rows.num_rows).encode()}, meta=meta
        )

    r1 = mean("raw:vitals")
    assert runs == [repo.head("raw")]  # the body gets the resolved commit id, not the ref
    repo.write_table("raw", "other", pa.table({"id": [1], "x": [1]}), key=["id"])  # another table changes
    assert mean("raw:vitals").hit
    snap = Snapshot.of(repo, "raw", table="vitals")  # a Flyte value names the same content
    assert mean(snap).key == r1.key and len(runs) == 1
    repo.write_table("raw", "vitals", pa.table({"id": [3], "hr": [80]}), key=["id"])
    assert not mean("raw:vitals").hit and len(runs) == 2
    assert repo.read_file("out", "mean.txt") == b"70.0"


def test_local_path_input(tmp_path: Path, repo: Repository) -> None:
    src = tmp_path / "in"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_bytes(b"one")
    runs: list[Path] = []

    @step(repo, output_branch="copied", inputs=["folder"])
    def load(folder: Path) -> str:
        runs.append(folder)
        return repo.commit_changes("copied", {"a.txt": (folder / "d" / "a.txt").read_bytes()}).commit

    assert not load(src).hit and load(src).hit and runs == [src]
    (src / "d" / "a.txt").write_bytes(b"two")
    assert not load(src).hit and repo.read_file("copied", "a.txt") == b"two"


def load_source(folder: Path, name: str, source: str) -> ModuleType:
    """Import `source` as a module file (so inspect finds its source)."""
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_code_fingerprint_normalises_layout_not_logic(tmp_path: Path) -> None:
    plain = load_source(tmp_path, "fp_a", "def g(x):\n    return x + 1\n")
    decorated = load_source(
        tmp_path,
        "fp_b",
        "import functools\n\n\nclass K:\n    @functools.lru_cache(maxsize=None)\n    def g(x):\n"
        '        """Add one."""\n        # a comment\n\n        return (x + 1)\n',
    )
    changed = load_source(tmp_path, "fp_c", "def g(x):\n    return x + 2\n")
    renamed = load_source(tmp_path, "fp_d", "def h(x):\n    return x + 1\n")
    fp = code_fingerprint(plain.g)
    assert len(fp) == 64
    assert code_fingerprint(decorated.K.g) == fp  # indentation, decorator, docstring, comment, parentheses
    assert code_fingerprint(changed.g) != fp and code_fingerprint(renamed.h) != fp
    wrapped = functools.wraps(plain.g)(lambda x: plain.g(x))
    assert code_fingerprint(wrapped) == fp  # a wrapper is seen through
    assert code_fingerprint(plain.g, deps=["model-v1"]) != code_fingerprint(plain.g, deps=["model-v2"])
    assert code_fingerprint(plain.g, deps=[changed.g]) != code_fingerprint(plain.g, deps=[plain.g])
    # Without source: bytecode, constants and names.
    ns_a: dict[str, Any] = {}
    ns_b: dict[str, Any] = {}
    exec(compile("def g(x):\n    return x + 1\n", "<a>", "exec"), ns_a)
    exec(compile("def g(x):\n    return x + 2\n", "<b>", "exec"), ns_b)
    assert code_fingerprint(ns_a["g"]) != code_fingerprint(ns_b["g"])
    assert code_fingerprint(lambda x: x + 1) != code_fingerprint(lambda x: x + 2)
    assert code_fingerprint(functools.partial(plain.g, 1)) != code_fingerprint(functools.partial(plain.g, 2))
    with pytest.raises(UsageError, match="dependency"):
        code_fingerprint(plain.g, deps=[object()])


def test_step_key_is_canonical_and_strict() -> None:
    base = step_key("s", "c0de", {"a": "1" * 64}, {"x": 1, "y": [1, 2]})
    assert base == step_key("s", "c0de", {"a": "1" * 64}, {"y": [1, 2], "x": 1})  # key order does not matter
    assert len(base) == 64 and all(c in "0123456789abcdef" for c in base)
    others = [
        step_key("t", "c0de", {"a": "1" * 64}, {"x": 1, "y": [1, 2]}),
        step_key("s", "c0df", {"a": "1" * 64}, {"x": 1, "y": [1, 2]}),
        step_key("s", "c0de", {"a": "2" * 64}, {"x": 1, "y": [1, 2]}),
        step_key("s", "c0de", {"a": "1" * 64}, {"x": 2, "y": [1, 2]}),
        step_key("s", "c0de", {"b": "1" * 64}, {"x": 1, "y": [1, 2]}),
    ]
    assert len({base, *others}) == 6
    with pytest.raises(UsageError, match="plain JSON"):
        step_key("s", None, {}, {"when": object()})
    with pytest.raises(UsageError, match="step name"):
        step_key("", None, {})


def test_context_manager(repo: Repository) -> None:
    repo.write_table("raw", "t", pa.table({"id": [1], "v": [1]}), key=["id"])
    ran = 0

    def body(s: Any) -> None:
        nonlocal ran
        ran += 1
        assert current_step() is s
        repo.write_table("out", "t", repo.read_table("raw", "t"), key=["id"], mode="overwrite", meta=s.meta)

    with cached_step(repo, "copy", inputs={"raw": "raw"}, code="v1", output_branch="out") as s:
        assert not s.hit
        body(s)  # no done(): the output branch's head at exit is the output
    assert s.recorded and s.output == repo.head("out") and lookup(repo, s.key).output == s.output  # type: ignore[union-attr]
    assert current_step() is None
    with cached_step(repo, "copy", inputs={"raw": "raw"}, code="v1", output_branch="out") as again:
        if not again.hit:
            body(again)
        with pytest.raises(UsageError, match="cache hit"):
            again.done(s.output)
    assert again.hit and again.output == s.output and ran == 1

    # A failing body records nothing, and the next run computes.
    with pytest.raises(RuntimeError), cached_step(repo, "copy", inputs={"raw": "raw"}, code="v2") as failed:
        raise RuntimeError("boom")
    assert lookup(repo, failed.key) is None and repo.refs.get(CACHE, failed.key) is None

    # done() takes a CommitResult; no output at all is an error naming the cure.
    with cached_step(repo, "copy", inputs={"raw": "raw"}, code="v3") as s3:
        s3.done(repo.commit_changes("elsewhere", {"x": b"1"}))
    assert s3.output == repo.head("elsewhere")
    with pytest.raises(UsageError, match="done"), cached_step(repo, "nothing", code="v1"):
        pass


def test_restore_never_drops_commits(repo: Repository) -> None:
    with cached_step(repo, "make", code="v1", output_branch="out") as s:
        s.done(repo.commit_changes("out", {"a.txt": b"cached"}))
    later = repo.commit_changes("out", {"b.txt": b"someone else"}).commit
    with cached_step(repo, "make", code="v1", output_branch="out") as hit:
        pass
    head = repo.head("out")
    assert hit.hit and hit.restored == head and head not in (later, s.output)
    restored = repo.get_commit(head)
    assert restored.parents == (later,)  # the cached output is an ancestor: one parent, history kept
    assert restored.tree == repo.get_commit(s.output).tree  # type: ignore[arg-type]
    assert restored.meta["dacflow.lineage"]["step"] == hit.key
    # A branch elsewhere gets a restore commit with both parents; a branch at the same content is left alone.
    repo.commit_changes("other", {"c.txt": b"x"})
    with cached_step(repo, "make", code="v1", output_branch="other") as hit2:
        pass
    other = repo.get_commit("other")
    assert hit2.restored == repo.head("other") and other.parents == (repo.resolve("other~1"), s.output)
    assert other.tree == repo.get_commit(s.output).tree  # type: ignore[arg-type]
    with cached_step(repo, "make", code="v1", output_branch="out"):
        pass
    assert repo.head("out") == head


def test_concurrent_identical_steps_record_one_output(repo: Repository) -> None:
    repo.write_table("raw", "t", pa.table({"id": list(range(50)), "v": list(range(50))}), key=["id"])
    barrier = threading.Barrier(4)
    runs: list[Any] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            with cached_step(repo, "same", inputs={"raw": "raw"}, code="v1") as s:
                barrier.wait(timeout=30)  # all four miss before any records
                rows = repo.read_table("raw", "t")
                s.done(repo.write_table(f"out-{i}", "t", rows, key=["id"], mode="overwrite", meta=s.meta))
            runs.append(s)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(runs) == 4 and not any(s.hit for s in runs)
    winners = [s for s in runs if s.recorded]
    assert len(winners) == 1 and all(s.output and repo.head(f"out-{i}") for i, s in enumerate(runs))
    entry = lookup(repo, runs[0].key)
    assert entry is not None and entry.output == winners[0].output == entry.record["output"]  # type: ignore[index]
    assert repo.read_table(entry.output, "t").num_rows == 50
    with cached_step(repo, "same", inputs={"raw": "raw"}, code="v1") as later:
        pass
    assert later.hit and later.output == winners[0].output and len(list_entries(repo)) == 1
    assert repo.check().ok


def test_gc_keeps_cached_outputs(repo: Repository) -> None:
    rows = pa.table({"id": list(range(2000)), "v": [f"value {i}" for i in range(2000)]})
    with cached_step(repo, "build", code="v1", output_branch="tmp") as s:
        s.done(repo.write_table("tmp", "t", rows, key=["id"]))
    repo.delete_branch("tmp")  # only the cache ref holds the output now
    report = repo.gc(grace_hours=0)
    assert report.objects_deleted == 0
    assert repo.read_table(s.output, "t").num_rows == 2000  # type: ignore[arg-type]
    assert repo.check().ok
    assert clear(repo) == [s.key]
    report = repo.gc(grace_hours=0)
    assert report.objects_deleted >= 3  # commit, tree, table and its fragments are unreachable now
    with pytest.raises(RefNotFoundError, match=f"no commit {s.output}"):
        repo.read_table(s.output, "t")  # type: ignore[arg-type]


def test_force_replaces_and_records_are_versioned(repo: Repository) -> None:
    with cached_step(repo, "s", code="v1") as a:
        a.done(repo.commit_changes("x", {"f": b"1"}))
    with cached_step(repo, "s", code="v1", force=True) as b:
        assert not b.hit
        b.done(repo.commit_changes("x", {"f": b"2"}))
    assert b.recorded and lookup(repo, a.key).output == b.output != a.output  # type: ignore[union-attr]
    record = read_record(repo, a.key)
    assert record is not None and record["v"] == 1 and record["step"] == "s" and record["output"] == b.output
    record["v"] = 99
    import json

    repo.store.put(record_key(a.key), json.dumps(record).encode())
    with pytest.raises(UnsupportedFormatError, match="version 99"):
        read_record(repo, a.key)
    [entry] = list_entries(repo)
    assert entry.record is None and "version 99" in (entry.problem or "")
    with cached_step(repo, "s", code="v1") as c:  # the ref is the authority: still a hit
        pass
    assert c.hit and c.output == b.output and c.result is None


def test_clear_by_step_and_prefix(repo: Repository) -> None:
    keys = {}
    for name in ("a", "b"):
        for version in ("1", "2"):
            with cached_step(repo, name, code=version) as s:
                s.done(repo.commit_changes(f"{name}{version}", {"f": version.encode()}))
            keys[name + version] = s.key
    assert clear(repo, step="a") == sorted([keys["a1"], keys["a2"]])
    assert clear(repo, [keys["b1"][:10]]) == [keys["b1"]]
    with pytest.raises(RefNotFoundError, match="no step cache entry"):
        clear(repo, ["0000"])
    assert [e.key for e in list_entries(repo)] == [keys["b2"]]
    assert repo.store.head(record_key(keys["b1"])) is None


def test_decorator_rejects_unknown_inputs(repo: Repository) -> None:
    with pytest.raises(UsageError, match="not parameters"):

        @step(repo, inputs=["nope"])
        def f(x: str) -> str:
            return x

    with pytest.raises(UsageError, match="list of parameter names"):
        step(repo, inputs="x")(lambda x: x)  # type: ignore[arg-type]
