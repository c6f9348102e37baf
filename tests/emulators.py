"""Cloud emulators for the store tests: moto (S3), fake-gcs-server (GCS) and Azurite (Azure Blob).

Each runs as a child process on 127.0.0.1 and a free port for the whole test session and is stopped at its
end. An emulator that cannot be started FAILS the tests that need it (never skips them): CI must not pass
with a cloud silently untested. Azurite comes from npm; `./dev` installs it into `.tools/azurite`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dacflow.testing.emulators import (  # noqa: F401  (re-exported for the tests)
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Emulator,
    EmulatorError,
    azurite_connection_string,
    start_azurite,
    start_fake_gcs,
    start_moto,
    unique_name,
)


def _session_emulator(start: Callable[[], Emulator]) -> Iterator[Emulator]:
    try:
        emulator = start()
    except EmulatorError as exc:  # an emulator that cannot start FAILS the tests that need it, never skips them
        pytest.fail(str(exc), pytrace=False)
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
