"""The Azure Blob Storage store: `az://container/prefix` (azure-storage-blob, imported lazily).

The account is not part of the URL (as with adlfs and obstore): it comes from the `connection_string` or
`account_url` option, else `AZURE_STORAGE_CONNECTION_STRING`, else `AZURE_STORAGE_ACCOUNT_URL` or
`AZURE_STORAGE_ACCOUNT` with a key (`AZURE_STORAGE_KEY`), a SAS (`AZURE_STORAGE_SAS_TOKEN`) or, when neither
is set, `DefaultAzureCredential` (needs azure-identity). The version token is the blob's ETag: create is an
upload with `overwrite=False` (409 if the blob exists), compare-and-swap an upload with `If-Match: <ETag>`
(412); both raise `PreconditionFailedError`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from ..errors import ContainerNotFoundError, KeyNotFoundError, PreconditionFailedError, StoreError, UsageError
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
# The SDK logs every request's headers at INFO; unless the application chose a level, keep that out of task logs.
_HTTP_LOG = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
if _HTTP_LOG.level == logging.NOTSET:
    _HTTP_LOG.setLevel(logging.WARNING)

_OPTIONS = {"connection_string", "account_url", "account_name", "credential", "max_attempts", "client"}
_MAX_SINGLE_PUT = 256 << 20  # packs go up in one Put Blob: no uncommitted blocks are left by a failure
_LOST = {"BlobAlreadyExists", "ConditionNotMet", "TargetConditionNotMet"}


class AzureStore:
    """A prefix in an Azure blob container; keys are blob names relative to the prefix."""

    def __init__(self, container: str, prefix: str = "", *, create: bool = False, **options: Any) -> None:
        unknown_options("Azure", options, _OPTIONS)
        self._keys = CloudKeys("az", container, prefix)
        self.container, self.prefix, self.url = container, self._keys.prefix, self._keys.url
        credential = options.get("credential")
        self._secrets = [
            options.get("connection_string"),
            os.environ.get("AZURE_STORAGE_CONNECTION_STRING"),
            os.environ.get("AZURE_STORAGE_KEY"),
            os.environ.get("AZURE_STORAGE_SAS_TOKEN"),
            credential if isinstance(credential, str) else None,
        ]
        require("azure.storage.blob", "az", "azure")
        self._service = options.get("client") or self._make_client(options)
        self._container = self._service.get_container_client(container)
        if create:
            self._ensure_container()

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **options: Any) -> AzureStore:
        """Open `az://container/prefix`; options: connection_string, account_url, account_name, credential,
        max_attempts (default 5), client (a BlobServiceClient)."""
        container, prefix = split_url(url, "az")
        return cls(container, prefix, create=create, **options)

    def __repr__(self) -> str:
        return f"AzureStore({self.url!r})"

    def _make_client(self, options: dict[str, Any]) -> Any:
        from azure.storage.blob import BlobServiceClient, ExponentialRetry

        # The SDK's default first back-off is 15 s; a ref update should not stall that long on one blip.
        retries = int(options.get("max_attempts", 5))
        retry = ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=retries, random_jitter_range=1)
        kwargs: dict[str, Any] = {
            "retry_policy": retry,
            "connection_timeout": 10,
            "read_timeout": 120,
            "max_single_put_size": _MAX_SINGLE_PUT,
        }
        env = os.environ
        credential = options.get("credential")
        try:
            conn = options.get("connection_string")
            if conn is None and not options.get("account_url") and not options.get("account_name"):
                conn = env.get("AZURE_STORAGE_CONNECTION_STRING")
            if conn:
                return BlobServiceClient.from_connection_string(conn, credential=credential, **kwargs)
            account = options.get("account_name") or env.get("AZURE_STORAGE_ACCOUNT")
            account_url = (
                options.get("account_url")
                or env.get("AZURE_STORAGE_ACCOUNT_URL")
                or (f"https://{account}.blob.core.windows.net" if account else None)
            )
            if not account_url:
                raise UsageError(
                    f"no Azure storage account for {self.url}: set AZURE_STORAGE_CONNECTION_STRING or "
                    "AZURE_STORAGE_ACCOUNT, or pass the connection_string or account_url option",
                    url=self.url,
                )
            if credential is None:
                credential = env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_SAS_TOKEN")
            if credential is None and "sig=" not in account_url:
                try:
                    from azure.identity import DefaultAzureCredential
                except ImportError:
                    raise UsageError(
                        "no Azure credential given and azure-identity is not installed "
                        "(pip install azure-identity, or set AZURE_STORAGE_KEY)"
                    ) from None
                credential = DefaultAzureCredential()
            return BlobServiceClient(account_url, credential=credential, **kwargs)
        except (StoreError, UsageError):
            raise
        except Exception as exc:
            raise StoreError(f"cannot set up Azure for {self.url}: {self._say(exc)}", url=self.url) from None

    def _ensure_container(self) -> None:
        """Create the container if missing (init on Azurite or a fresh account); an existing one is fine."""
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        try:
            self._container.create_container()
            log.info("created container az://%s", self.container)
        except ResourceExistsError:
            return
        except HttpResponseError as exc:
            if exc.status_code != 403:  # we may not be allowed to create containers: the first write tells
                raise self._error(exc, "create-container", "") from None
        except Exception as exc:
            raise self._error(exc, "create-container", "") from None

    # -- errors ----------------------------------------------------------------------------------------------
    def _say(self, exc: BaseException) -> str:
        text, code = one_line(str(exc)) or type(exc).__name__, getattr(exc, "error_code", None)
        return redact(f"{code}: {text}" if code else text, self._secrets)

    def _error(self, exc: BaseException, op: str, key: str) -> StoreError:
        """Turn an SDK error into dacflow's vocabulary, with a one-line message free of secrets."""
        if isinstance(exc, StoreError):
            return exc
        where = f"{key!r} in {self.url}" if key else self.url
        status = getattr(exc, "status_code", None)
        code = str(getattr(exc, "error_code", "") or "")
        if op == "put" and (code in _LOST or status in (409, 412)):
            return PreconditionFailedError(f"conditional write of {where} lost ({code or status})", key=key)
        if code == "ContainerNotFound":
            return ContainerNotFoundError(
                f"container {self.container!r} does not exist (Azure {op} of {where})", key=key
            )
        if status == 404:
            return KeyNotFoundError(f"no key {where}", key=key)
        from azure.core.exceptions import ServiceRequestError, ServiceResponseError

        cls = error_class(status, isinstance(exc, (ServiceRequestError, ServiceResponseError)))
        return cls(f"Azure {op} of {where} failed: {self._say(exc)}", key=key, code=code, status=status)

    # -- protocol --------------------------------------------------------------------------------------------
    def staging_dir(self) -> str:
        return default_staging_dir()

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Read a key, or the half-open `byte_range` of it (an empty range costs no request)."""
        return self._download(key, byte_range)[0]

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """Read a key and its ETag (later chunks of a large blob are read If-Match that ETag)."""
        return self._download(key, None)

    def _download(self, key: str, byte_range: tuple[int, int] | None) -> tuple[bytes, str]:
        blob = self._container.get_blob_client(self._keys.name(key))
        kwargs: dict[str, Any] = {}
        if byte_range is not None:
            start, end = byte_range
            if end <= start:
                return b"", ""
            kwargs.update(offset=start, length=end - start)
        try:
            stream = blob.download_blob(**kwargs)
            return stream.readall(), str(stream.properties.etag)
        except Exception as exc:
            err = self._error(exc, "get", key)
            if err.data.get("status") == 416:
                return b"", ""  # the range starts past the end, as a short read on a local file
            raise err from None

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        """Upload a key in one Put Blob; create is overwrite=False, if_match an If-Match on the ETag."""
        return self._put(key, bytes(data) if isinstance(data, memoryview) else data, len(data), mode, same_bytes(data))

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        """Upload a local file, streamed, in one Put Blob (up to 256 MiB)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the request
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", key=key, path=path) from None
        with f:
            return self._put(key, f, os.fstat(f.fileno()).st_size, mode, same_bytes(path))

    def _put(self, key: str, body: Any, length: int, mode: PutMode, expected: Any) -> str:
        from azure.core import MatchConditions

        blob = self._container.get_blob_client(self._keys.name(key))
        watch = RetryWatch()
        kwargs: dict[str, Any] = {"overwrite": mode.kind != "create", "length": length, "retry_hook": watch}
        if mode.kind == "if_match":
            kwargs.update(etag=mode.token, match_condition=MatchConditions.IfNotModified)
        try:
            return str(blob.upload_blob(body, **kwargs)["etag"])
        except Exception as exc:
            err = self._error(exc, "put", key)
            if isinstance(err, KeyNotFoundError) and mode.kind == "if_match":
                err = PreconditionFailedError(f"key {key!r} does not exist in {self.url}", key=key)
            if not isinstance(err, PreconditionFailedError) or mode.kind == "overwrite":
                raise err from None
        return check_retried_write(err, watch, lambda: self.get_with_token(key), expected)

    def head(self, key: str) -> ObjectInfo | None:
        """Return size, ETag and modification time of a key, or None."""
        try:
            props = self._container.get_blob_client(self._keys.name(key)).get_blob_properties()
        except Exception as exc:
            err = self._error(exc, "head", key)
            if isinstance(err, KeyNotFoundError):
                return None
            raise err from None
        return ObjectInfo(key, int(props.size), str(props.etag), props.last_modified.timestamp())

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every key under `prefix` (paginated blob listing)."""
        try:
            for props in self._container.list_blobs(name_starts_with=self._keys.base + prefix):
                key = self._keys.key(props.name)
                if key is not None:
                    yield ObjectInfo(key, int(props.size), str(props.etag), props.last_modified.timestamp())
        except Exception as exc:
            raise self._error(exc, "list", prefix or "/") from None

    def delete(self, key: str) -> None:
        """Delete a key if present."""
        try:
            self._container.get_blob_client(self._keys.name(key)).delete_blob()
        except Exception as exc:
            err = self._error(exc, "delete", key)
            if not isinstance(err, KeyNotFoundError):
                raise err from None
