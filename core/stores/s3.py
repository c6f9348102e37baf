"""The S3 store: `s3://bucket/prefix` on AWS S3 or any S3-compatible service (boto3, imported lazily).

Conditional writes use S3's own preconditions, so no lock is needed: create is `PutObject If-None-Match: *`,
compare-and-swap is `PutObject If-Match: <ETag>`, and the version token is the ETag. A 412 (or the 409
`ConditionalRequestConflict` S3 answers to two racing conditional writes) raises `PreconditionFailedError`.
Every put is one `PutObject` (packs stay far below S3's 5 GiB limit), so a failed upload leaves nothing
visible and no abandoned multipart upload. Endpoint, region and credentials come from boto3's standard chain
(`AWS_ENDPOINT_URL`, `AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, instance roles …) or from explicit options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from ..errors import ContainerNotFoundError, KeyNotFoundError, PreconditionFailedError, StoreError
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

_OPTIONS = {
    "endpoint_url",
    "region",
    "profile",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "max_attempts",
    "addressing_style",
    "client",
}
_LOST = {"PreconditionFailed", "ConditionalRequestConflict"}
_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
_BUSY = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
}


class S3Store:
    """A prefix in an S3 bucket; keys are object names relative to the prefix."""

    def __init__(self, bucket: str, prefix: str = "", *, create: bool = False, **options: Any) -> None:
        unknown_options("S3", options, _OPTIONS)
        self._keys = CloudKeys("s3", bucket, prefix)
        self.bucket, self.prefix, self.url = bucket, self._keys.prefix, self._keys.url
        self._secrets = [
            options.get("aws_secret_access_key"),
            options.get("aws_session_token"),
            os.environ.get("AWS_SECRET_ACCESS_KEY"),
            os.environ.get("AWS_SESSION_TOKEN"),
        ]
        require("boto3", "s3", "s3")
        self._client = options.get("client") or self._make_client(options)
        if create:
            self._ensure_bucket(options.get("region"))

    @classmethod
    def from_url(cls, url: str, *, create: bool = False, **options: Any) -> S3Store:
        """Open `s3://bucket/prefix`; options: endpoint_url, region, profile, aws_access_key_id,
        aws_secret_access_key, aws_session_token, max_attempts (default 5), addressing_style, client."""
        bucket, prefix = split_url(url, "s3")
        return cls(bucket, prefix, create=create, **options)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _make_client(self, options: dict[str, Any]) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"max_attempts": int(options.get("max_attempts", 5)), "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=32,
            s3={"addressing_style": options.get("addressing_style", "auto")},
        )
        try:
            session = boto3.session.Session(
                profile_name=options.get("profile"),
                region_name=options.get("region"),
                aws_access_key_id=options.get("aws_access_key_id"),
                aws_secret_access_key=options.get("aws_secret_access_key"),
                aws_session_token=options.get("aws_session_token"),
            )
            return session.client("s3", endpoint_url=options.get("endpoint_url"), config=config)
        except Exception as exc:
            raise StoreError(f"cannot set up S3 for {self.url}: {self._say(exc)}", url=self.url) from None

    def _ensure_bucket(self, region: str | None) -> None:
        """Create the bucket if missing (init on an emulator or a fresh account); an existing one is fine."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                return  # no permission to look is not a reason to fail: the first write will tell
        except Exception as exc:
            raise self._error(exc, "head-bucket", "") from None
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        region = region or self._client.meta.region_name
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self._client.create_bucket(**kwargs)
            log.info("created bucket s3://%s", self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _EXISTS:
                raise self._error(exc, "create-bucket", "") from None

    # -- errors ----------------------------------------------------------------------------------------------
    def _say(self, exc: BaseException) -> str:
        return redact(one_line(str(exc)) or type(exc).__name__, self._secrets)

    def _error(self, exc: BaseException, op: str, key: str) -> StoreError:
        """Turn an SDK error into dacflow's vocabulary, with a one-line message free of secrets."""
        from botocore import exceptions as bex

        if isinstance(exc, StoreError):
            return exc
        where = f"{key!r} in {self.url}" if key else self.url
        if not isinstance(exc, bex.ClientError):
            dropped = (
                bex.HTTPClientError,
                bex.ConnectionError,
                bex.IncompleteReadError,
                getattr(bex, "ResponseStreamingError", bex.HTTPClientError),
            )
            cls = error_class(None, isinstance(exc, dropped))
            return cls(f"S3 {op} of {where} failed: {self._say(exc)}", key=key)
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _LOST or (status in (409, 412) and op == "put"):
            return PreconditionFailedError(f"conditional write of {where} lost ({code or status})", key=key)
        if code == "NoSuchBucket":
            return ContainerNotFoundError(f"bucket {self.bucket!r} does not exist (S3 {op} of {where})", key=key)
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return KeyNotFoundError(f"no key {where}", key=key)
        text = redact(one_line(f"{code}: {err.get('Message', '')}"), self._secrets)
        cls = error_class(status, code in _BUSY)
        return cls(f"S3 {op} of {where} failed: {text}", key=key, code=code, status=status)

    # -- protocol --------------------------------------------------------------------------------------------
    def staging_dir(self) -> str:
        return default_staging_dir()

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        """Read a key, or the half-open `byte_range` of it (an empty range costs no request)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._keys.name(key)}
        if byte_range is not None:
            start, end = byte_range
            if end <= start:
                return b""
            kwargs["Range"] = f"bytes={start}-{end - 1}"
        try:
            body = self._client.get_object(**kwargs)["Body"]
            with body:
                return body.read()
        except Exception as exc:
            err = self._error(exc, "get", key)
            if err.data.get("code") == "InvalidRange":
                return b""  # the range starts past the end, as a short read on a local file
            raise err from None

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        """Read a key and its ETag in one request."""
        try:
            resp = self._client.get_object(Bucket=self.bucket, Key=self._keys.name(key))
            with resp["Body"] as body:
                return bytes(body.read()), str(resp["ETag"])
        except Exception as exc:
            raise self._error(exc, "get", key) from None

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        """Write a key in one PutObject; create and if_match are S3 preconditions (412 → lost)."""
        return self._put(key, bytes(data) if isinstance(data, memoryview) else data, mode, same_bytes(data))

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        """Upload a local file in one streamed PutObject (never multipart, so a failure leaves nothing)."""
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed below, after the request
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}", key=key, path=path) from None
        with f:
            return self._put(key, f, mode, same_bytes(path))

    def _put(self, key: str, body: Any, mode: PutMode, expected: Any) -> str:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._keys.name(key), "Body": body}
        if mode.kind == "create":
            kwargs["IfNoneMatch"] = "*"
        elif mode.kind == "if_match":
            kwargs["IfMatch"] = mode.token
        watch = RetryWatch()
        try:
            return str(self._client.put_object(**kwargs)["ETag"])
        except Exception as exc:
            err = self._error(exc, "put", key)
            meta = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {})
            watch.retried = bool(meta.get("RetryAttempts"))
            if isinstance(err, KeyNotFoundError) and mode.kind == "if_match":
                err = PreconditionFailedError(f"key {key!r} does not exist in {self.url}", key=key)
            if not isinstance(err, PreconditionFailedError) or mode.kind == "overwrite":
                raise err from None
        return check_retried_write(err, watch, lambda: self.get_with_token(key), expected)

    def head(self, key: str) -> ObjectInfo | None:
        """Return size, ETag and modification time of a key, or None."""
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=self._keys.name(key))
        except Exception as exc:
            err = self._error(exc, "head", key)
            if isinstance(err, KeyNotFoundError):
                return None
            raise err from None
        return _info(key, resp["ContentLength"], resp["ETag"], resp["LastModified"])

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every key under `prefix` (ListObjectsV2, paginated)."""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._keys.base + prefix
        )
        try:
            for page in pages:
                for obj in page.get("Contents", ()):
                    key = self._keys.key(obj["Key"])
                    if key is not None:
                        yield _info(key, obj["Size"], obj["ETag"], obj["LastModified"])
        except Exception as exc:
            raise self._error(exc, "list", prefix or "/") from None

    def delete(self, key: str) -> None:
        """Delete a key; S3 answers a missing key with success, so this is idempotent."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._keys.name(key))
        except Exception as exc:
            err = self._error(exc, "delete", key)
            if not isinstance(err, KeyNotFoundError):
                raise err from None


def _info(key: str, size: Any, etag: Any, modified: Any) -> ObjectInfo:
    return ObjectInfo(key, int(size), str(etag), modified.timestamp())
