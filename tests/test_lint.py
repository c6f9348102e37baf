"""Style and types are part of the suite: ruff (lint and format) on everything, mypy on the package."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "core", "providers", "tests", "bench"],
        ["ruff", "format", "--check", "core", "providers", "tests", "bench"],
        ["mypy", "core", "providers"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_clean(command: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
