"""Packaging: dacflow imports with no cloud SDK, Airflow or flytekit; wheel and editable installs both work."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from conftest import ROOT

HEAVY = ["boto3", "botocore", "google", "azure", "airflow", "flytekit", "pyarrow", "pandas", "polars", "moto"]

BLOCKER = textwrap.dedent(
    f"""
    import importlib.abc, sys
    BLOCKED = {HEAVY!r}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in BLOCKED:
                raise ImportError('blocked for this test: ' + name)
            return None
    sys.meta_path.insert(0, Block())
    """
)


def test_import_needs_no_cloud_sdk_airflow_or_flytekit() -> None:
    code = BLOCKER + textwrap.dedent(
        """
        import dacflow, dacflow.cli.main, dacflow.providers.airflow, dacflow.providers.flyte
        from dacflow import Repository
        import tempfile, os
        d = tempfile.mkdtemp()
        repo = Repository.init(os.path.join(d, 'r'))
        os.makedirs(os.path.join(d, 'src'))
        open(os.path.join(d, 'src', 'f'), 'wb').write(b'x')
        assert repo.snapshot(os.path.join(d, 'src'), 'main').created
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
        assert not loaded, loaded
        print('ok')
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_store_entry_point_is_registered() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="dacflow.stores")}
    assert names.get("file") == "dacflow.stores.local:LocalStore"


def _uv() -> list[str]:
    exe = shutil.which("uv")
    return [exe] if exe else [sys.executable, "-m", "uv"]


SMOKE = (
    "import dacflow, dacflow.providers.airflow, dacflow.providers.flyte, importlib.util, os, tempfile;"
    "assert importlib.util.find_spec('dacflow.testing.store_suite');"
    "d = tempfile.mkdtemp(); r = dacflow.Repository.init(os.path.join(d, 'r'));"
    "print(dacflow.__file__)"
)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["wheel", "editable"])
def test_install_modes(tmp_path: Path, mode: str) -> None:
    venv = tmp_path / "venv"
    subprocess.run([*_uv(), "venv", "-q", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    if mode == "wheel":
        dist = tmp_path / "dist"
        subprocess.run([*_uv(), "build", "-q", "--wheel", "--out-dir", str(dist), str(ROOT)], check=True, timeout=600)
        wheels = list(dist.glob("dacflow-*.whl"))
        assert len(wheels) == 1
        target = [str(wheels[0])]
    else:
        target = ["-e", str(ROOT)]
    subprocess.run([*_uv(), "pip", "install", "-q", "--python", str(py), *target], check=True, timeout=600)
    proc = subprocess.run([str(py), "-c", SMOKE], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    location = proc.stdout.strip()
    if mode == "wheel":
        assert "site-packages" in location and location.endswith("dacflow/__init__.py")
    else:
        assert location == str(ROOT / "core" / "__init__.py")
    cli = subprocess.run([str(venv / "bin" / "dacflow"), "--version"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0 and "dacflow" in cli.stdout
