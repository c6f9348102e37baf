"""The Google Cloud Storage store: `gs://bucket/prefix` (google-cloud-storage, imported lazily).

The version token is the object's generation. Create is an upload with `ifGenerationMatch=0`, compare-and-swap
an upload with `ifGenerationMatch=<generation>`; GCS answers a lost race with 412, raised as
`PreconditionFailedError`. Credentials come from Application Default Credentials unless given as options;
`STORAGE_EMULATOR_HOST` (or the `endpoint` option) points the client at an emulator, with anonymous
credentials unless others are given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from ..errors import KeyNotFoundError, PreconditionFailedError, StoreError
from ._cloud import (
    CloudKeys,
    RetryWatch,
    check_retried_write,
    error_class,
    one_line,
    redact,
    require,
    same_bytes,
    split_url,
    unknown_options,
)
from .base import OVERWRITE, ObjectInfo, PutMode, default_staging_dir

log = logging.getLogger(__name__)

_OPTIONS = {"project", "credentials", "token", "endpoint", "anonymous", "client", "timeout"}
_TIMEOUT = (10.0, 120.0)  # connect, read (seconds)


class GCSStore:
    """A prefix in a GCS bucket; keys are object names relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, create: bool = False, **options: Any) -> None:
        unknown_options("GCS", options, _OPTIONS)
        self._keys = CloudKeys("gs", bucket, prefix)
        self.bucket, self.prefix, self.url = bucket, self._keys.prefix, self._keys.url
        self._secrets = [options.get("token")]
        self._timeout = options.get("timeout", _TIMEOUT)
        require("google.cloud.storage", "gs", "gcs")
        self._client = options.get("client") or self._make_client(options)
        self._bucket = self._client.bucket(bucket)
        if create:
            self._ensure_bucket()

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **options: Any) -> GCSStore:
        """Open `gs://bucket/prefix`; options: project, credentials (object or service-account JSON path),
        token (an OAuth2 access token), endpoint, anonymous, timeout, client."""
        bucket, prefix = split_url(url, "gs")
        return cls(bucket, prefix, create=create, **options)

    def __repr__(self) -> str:
        return f"GCSStore({self.url!r})"

    def _make_client(self, options: dict[str, Any]) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        try:
            creds = options.get("credentials")
            if isinstance(creds, str):
                from google.oauth2 import service_account

                creds = service_account.Credentials.from_service_account_file(creds)
            elif options.get("token"):
                from google.oauth2.credentials import Credentials

                creds = Credentials(token=options["token"])
            endpoint = options.get("endpoint")
            emulated = bool(endpoint or os.environ.get("STORAGE_EMULATOR_HOST"))
            if creds is None and (emulated or options.get("anonymous")):
                creds = AnonymousCredentials()
            anonymous = isinstance(creds, AnonymousCredentials)
            project = options.get("project") or ("dacflow" if anonymous else None)
            client_options = {"api_endpoint": endpoint} if endpoint else None
            return storage.Client(project=project, credentials=creds, client_options=client_options)
        except Exception as exc:
            raise StoreError(f"cannot set up GCS for {self.url}: {self._say(exc)}", url=self.url) from None

    def _ensure_bucket(self) -> None:
        """Create the bucket if missing (init on an emulator or a fresh project); an existing one is fine."""
        from google.api_core import exceptions as gexc

        try:
            if self._client.lookup_bucket(self.bucket, timeout=self._timeout) is not None:
                return
            self._client.create_bucket(self.bucket, timeout=self._timeout)
            log.info("created bucket gs://%s", self.bucket)
        except (gexc.Conflict, gexc.Forbidden):
            return  # it exists, or we may not look: the first write will tell
        except Exception as exc:
            raise self._error(exc, "create-bucket", "") from None

    # -- errors ----------------------------------------------------------------------------------------------
    def _say(self, exc: BaseException) -> str:
        text = getattr(exc, "message", None) or str(exc)
        code = getattr(exc, "code", None)
        text = f"{code} {text}" if isinstance(code, int) else text
        return redact(one_line(text) or type(exc).__name__, self._secrets)

    def _error(self, exc: BaseException, op: str, key: str) -> StoreError:
        """Turn an SDK error into dacflow's vocabulary, with a one-line message free of secrets."""
        if isinstance(exc, StoreError):
            return exc
        exc = getattr(exc, "cause", None) or exc  # a RetryError (retries ran out) wraps the last failure
        where = f"{key!r} in {self.url}" if key else self.url
        code = getattr(exc, "code", None)
        status = code if isinstance(code, int) else None
        if status == 412:
            return PreconditionFailedError(f"conditional write of {where} lost (412)", key=key)
        if status == 404 and op in ("get", "head", "delete"):
            return KeyNotFoundError(f"no key {where}", key=key)
        cls = error_class(status, status is None and _dropped(exc))
        return cls(f"GCS {op} of {where} failed: {self._say(exc)}", key=key, status=status)

    def _retry(self, watch: RetryWatch | None = None) -> Any:
        from google.api_core.retry import Retry
        from google.cloud.storage.retry import DEFAULT_RETRY

        # The SDK's predicate (429, 5xx, dropped connections); the watch tells whether a write was retried.
        return Retry(
            predicate=DEFAULT_RETRY._predicate, initial=0.5, maximum=16.0, multiplier=2.0, timeout=120.0, on_error=watch
        )

    # -- protocol --------------------------------------------------------------------------------------------
    def staging_dir(self) -> str:
        return default_staging_dir()

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Read a key, or the half-open `byte_range` of it (an empty range costs no request)."""
        return self._download(key, byte_range)[0]

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """Read a key and the generation the bytes belong to, in one request."""
        return self._download(key, None)

    def _download(self, key: str, byte_range: tuple[int, int] | None) -> tuple[bytes, str]:
        blob = self._bucket.blob(self._keys.name(key))
        kwargs: dict[str, Any] = {"raw_download": True, "timeout": self._timeout, "retry": self._retry()}
        if byte_range is not None:
            start, end = byte_range
            if end <= start:
                return b"", ""
            kwargs.update(start=start, end=end - 1, checksum=None)
        try:
            data = blob.download_as_bytes(**kwargs)
        except Exception as exc:
            err = self._error(exc, "get", key)
            if err.data.get("status") == 416:
                return b"", ""  # the range starts past the end, as a short read on a local file
            raise err from None
        return data, str(blob.generation)

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        """Upload a key; create and if_match are generation preconditions (412 → lost)."""
        payload = bytes(data) if isinstance(data, memoryview) else data
        return self._put(
            key, mode, same_bytes(data), "upload_from_string", payload, content_type="application/octet-stream"
        )

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        """Upload a local file, streamed (resumable above 8 MiB; an unfinished upload creates no object)."""
        if not os.path.isfile(path):
            raise StoreError(f"cannot read {path}: no such file", key=key, path=path)
        return self._put(
            key, mode, same_bytes(path), "upload_from_filename", path, content_type="application/octet-stream"
        )

    def _put(self, key: str, mode: PutMode, expected: Any, method: str, source: Any, **kwargs: Any) -> str:
        blob = self._bucket.blob(self._keys.name(key))
        if mode.kind == "create":
            kwargs["if_generation_match"] = 0
        elif mode.kind == "if_match":
            try:
                kwargs["if_generation_match"] = int(mode.token or "")
            except ValueError:
                lost = PreconditionFailedError(f"key {key!r} is not at version {mode.token!r}", key=key)
                raise lost from None
        watch = RetryWatch()
        try:
            getattr(blob, method)(source, retry=self._retry(watch), timeout=self._timeout, **kwargs)
            return str(blob.generation)
        except Exception as exc:
            err = self._error(exc, "put", key)
            if not isinstance(err, PreconditionFailedError) or mode.kind == "overwrite":
                raise err from None
        return check_retried_write(err, watch, lambda: self.get_with_token(key), expected)

    def head(self, key: str) -> ObjectInfo | None:
        """Return size, generation and update time of a key, or None."""
        try:
            blob = self._bucket.get_blob(self._keys.name(key), timeout=self._timeout, retry=self._retry())
        except Exception as exc:
            raise self._error(exc, "head", key) from None
        if blob is None:
            return None
        return ObjectInfo(key, int(blob.size or 0), str(blob.generation), blob.updated.timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every key under `prefix` (paginated object listing)."""
        try:
            blobs = self._client.list_blobs(
                self._bucket, prefix=self._keys.base + prefix, timeout=self._timeout, retry=self._retry()
            )
            for blob in blobs:
                key = self._keys.key(blob.name)
                if key is not None:
                    yield ObjectInfo(key, int(blob.size or 0), str(blob.generation), blob.updated.timestamp())
        except Exception as exc:
            raise self._error(exc, "list", prefix or "/") from None

    def delete(self, key: str) -> None:
        """Delete a key if present (retried: deleting twice is harmless)."""
        try:
            self._bucket.blob(self._keys.name(key)).delete(timeout=self._timeout, retry=self._retry())
        except Exception as exc:
            err = self._error(exc, "delete", key)
            if not isinstance(err, KeyNotFoundError):
                raise err from None


def _dropped(exc: BaseException) -> bool:
    """Whether an error without an HTTP status is a dropped or timed-out connection (worth trying again)."""
    import requests
    from google.auth.exceptions import TransportError

    return isinstance(exc, (ConnectionError, TimeoutError, requests.ConnectionError, requests.Timeout, TransportError))
