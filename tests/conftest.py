"""Shared fixtures: every test gets its own repository, stat-cache directory and HOME."""

from __future__ import annotations

import logging
import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_support import airflow_dags  # noqa: F401  (the session's Airflow DAG folder and database)
from dacflow import Repository
from emulators import (  # noqa: F401  (session-scoped cloud emulators and per-test cloud environments)
    azure_env,
    azurite_server,
    fake_gcs_server,
    gcs_env,
    moto_server,
    s3_env,
)

ROOT = Path(__file__).resolve().parent.parent

# One Airflow home, DAG folder and SQLite metadata database for the whole run (migrated on first use, see
# tests/airflow_support.py). Set before anything imports Airflow, which reads its configuration at import.
AIRFLOW_HOME = tempfile.mkdtemp(prefix="dacflow-airflow-")
os.environ["AIRFLOW_HOME"] = AIRFLOW_HOME
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(AIRFLOW_HOME, "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME}/airflow.db"


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _open_log_streams() -> None:
    """A log handler that Airflow bound to a test's captured (now closed) stdout writes to stderr instead."""
    for handler in logging.getLogger().handlers:
        stream = getattr(handler, "stream", None)
        if type(handler) is logging.StreamHandler and getattr(stream, "closed", False):
            handler.setStream(sys.__stderr__)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep caches and author names out of the developer's home."""
    monkeypatch.setenv("DACFLOW_CACHE_DIR", str(tmp_path / "_cache"))
    monkeypatch.setenv("DACFLOW_AUTHOR", "tester")
    monkeypatch.delenv("DACFLOW_REPO", raising=False)


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_path: Path) -> Repository:
    return Repository.init(str(repo_path))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> Iterator[random.Random]:
    """A seeded RNG; the seed is printed so a failure can be replayed with DACFLOW_TEST_SEED."""
    seed = int(os.environ.get("DACFLOW_TEST_SEED", random.randrange(1 << 30)))
    print(f"{request.node.nodeid}: seed {seed} (replay with DACFLOW_TEST_SEED={seed})", file=sys.stderr)
    yield random.Random(seed)


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Create files (path -> content) below root."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def read_tree(root: Path) -> dict[str, bytes]:
    """All regular files below root (path -> content), ignoring dacflow's metadata folder."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.split("/")[0] == ".dacflow" or p.is_symlink() or not p.is_file():
            continue
        out[rel] = p.read_bytes()
    return out


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    from dacflow.cli.main import main

    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line(err: str) -> str:
    """The CLI's one-line error (the last line; Airflow's logging set up by other tests may add noise above it)."""
    return err.strip().splitlines()[-1]
