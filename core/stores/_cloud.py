"""What the cloud stores share: URL parsing, key mapping, redaction and the retried-write check.

Imports only the standard library; each cloud module imports its own SDK lazily.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from typing import Any

from ..errors import PreconditionFailedError, StoreError, TransientStoreError, UsageError

# Secrets that can hide in an SDK's error text: connection-string keys, SAS signatures, signed-URL query
# parameters and bearer tokens. Known secret values (keys, passwords) are redacted literally as well.
_SECRET_PATTERNS = [
    re.compile(r"(?i)((?:AccountKey|SharedAccessSignature|SharedAccessKey|Password|Secret\w*)=)[^;&\s'\"]+"),
    re.compile(
        r"(?i)([?&](sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
        r"x-goog-signature|x-goog-credential|access_token|token|key)=)[^&\s'\"]+"
    ),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(Credential=)[^,\s]+"),
]


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return `text` with known secret values and anything looking like a key, token or signature masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + "***", text)
    return text


def one_line(text: str, limit: int = 200) -> str:
    """The first non-empty line of an SDK message, shortened: error messages stay one line."""
    for line in str(text).splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def split_url(url: str, scheme: str) -> tuple[str, str]:
    """Split `scheme://bucket/prefix` into (bucket, prefix without surrounding slashes)."""
    head = f"{scheme}://"
    if not url.lower().startswith(head):
        raise UsageError(f"not a {head} URL: {url!r}", url=url)
    rest = url[len(head) :]
    if "?" in rest or "#" in rest:
        clean = head + rest.split("?")[0].split("#")[0]
        raise UsageError(f"{head} URLs take no query or fragment (pass options instead): {clean}", url=clean)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise UsageError(f"no bucket or container in {url!r}; expected {head}BUCKET/PREFIX", url=url)
    return bucket, prefix.strip("/")


def require(module: str, scheme: str, extra: str) -> None:
    """Import an SDK now, so that a missing one is reported as the extra to install, not as a traceback."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise UsageError(
            f"the store for {scheme}:// needs a package that is not installed ({exc.name or module}); "
            f"install the matching extra, e.g. pip install 'dacflow[{extra}]'",
            scheme=scheme,
        ) from None


def error_class(status: Any, transient: bool = False) -> type[StoreError]:
    """`TransientStoreError` for answers worth trying again later (408, 429, 5xx, dropped connections)."""
    if transient or (isinstance(status, int) and (status >= 500 or status in (408, 429))):
        return TransientStoreError
    return StoreError


def unknown_options(kind: str, options: dict[str, Any], known: set[str]) -> None:
    """Reject options a store does not know (a typo must not silently fall back to another credential)."""
    unknown = sorted(set(options) - known)
    if unknown:
        known_list = ", ".join(sorted(known))
        raise UsageError(f"unknown {kind} store options: {', '.join(unknown)} (known: {known_list})", options=unknown)


class CloudKeys:
    """Maps store keys to object names under a prefix, and back."""

    def __init__(self, scheme: str, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.base = f"{prefix}/" if prefix else ""
        self.url = f"{scheme}://{bucket}/{prefix}".rstrip("/")

    def name(self, key: str) -> str:
        """The object name of `key`; rejects keys the local store would reject too."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in key:
            raise StoreError(f"invalid store key {key!r}", key=key)
        return self.base + key

    def key(self, name: str) -> str | None:
        """The store key of an object name, or None if it lies outside the prefix."""
        return name[len(self.base) :] if name.startswith(self.base) and name != self.base else None


class RetryWatch:
    """Records whether an SDK retried a request; a write that was retried may already have landed."""

    def __init__(self) -> None:
        self.retried = False

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        self.retried = True


def check_retried_write(
    lost: PreconditionFailedError,
    watch: RetryWatch,
    read_back: Callable[[], tuple[bytes, str]],
    expected: Callable[[bytes], bool],
) -> str:
    """Decide a conditional write that failed its precondition after the SDK had retried it.

    A 412 after a retry may be the answer to our own first attempt, which landed before its response was lost.
    If the key now holds exactly our bytes, the write succeeded and its token is returned; otherwise `lost` is
    raised. A write that was not retried is never second-guessed: its 412 is the answer.
    """
    if not watch.retried:
        raise lost
    try:
        data, token = read_back()
    except StoreError:
        raise lost from None
    if expected(data):
        return token
    raise lost


def same_bytes(source: bytes | memoryview | str) -> Callable[[bytes], bool]:
    """A predicate telling whether read-back bytes equal `source` (bytes, or the path of a local file)."""
    if not isinstance(source, str):
        return lambda data: data == bytes(source)

    def matches(data: bytes) -> bool:
        with open(source, "rb") as f:
            return f.read() == data

    return matches
