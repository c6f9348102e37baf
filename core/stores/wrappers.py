"""Wrappers around any store: retries, fault injection, read-only, request counting (DESIGN §4).

Behaviour that is not storage-specific lives here rather than as flags in each store. Wrappers compose:
`RetryStore(FaultStore(LocalStore(...)))` is how the fault tests drive the retry logic.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import blake3

from ..errors import KeyNotFoundError, PreconditionFailedError, StoreError, TransientStoreError
from .base import OVERWRITE, ObjectInfo, PutMode, Store

log = logging.getLogger(__name__)
T = TypeVar("T")


def _file_digest(path: str) -> bytes:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.digest()


class StoreWrapper:
    """Delegates every call to `inner`; subclasses override what they change."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        return self.inner.get(key, byte_range)

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_token(key)

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        return self.inner.put(key, data, mode)

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        return self.inner.put_file(key, path, mode)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def staging_dir(self) -> str:
        return self.inner.staging_dir()


class ReadOnlyStore(StoreWrapper):
    """Refuses every write: for subscribers and audits that must not change a repository."""

    def _refuse(self, key: str) -> StoreError:
        return StoreError(f"{self.url} is opened read-only; refusing to write {key!r}", key=key)

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        raise self._refuse(key)

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        raise self._refuse(key)

    def delete(self, key: str) -> None:
        raise self._refuse(key)


class CountingStore(StoreWrapper):
    """Counts requests per operation (for transfer reports and benchmarks)."""

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, op: str) -> None:
        with self._lock:
            self.counts[op] += 1

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        self._count("get")
        return self.inner.get(key, byte_range)

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        self._count("get")
        return self.inner.get_with_token(key)

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        self._count("put")
        return self.inner.put(key, data, mode)

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        self._count("put")
        return self.inner.put_file(key, path, mode)

    def head(self, key: str) -> ObjectInfo | None:
        self._count("head")
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._count("list")
        return self.inner.list(prefix)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)


class RetryStore(StoreWrapper):
    """Retries transient failures with jittered exponential backoff.

    A conditional write whose outcome is unknown (the connection dropped after the request left) is never
    simply repeated: the key is read back first, and if it already holds exactly our bytes the write counts as
    done; otherwise the same conditional write is tried again, and a lost race surfaces as
    `PreconditionFailedError` exactly as without the wrapper.
    """

    def __init__(
        self,
        inner: Store,
        *,
        attempts: int = 6,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(inner)
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientStoreError as exc:
                if attempt == self.attempts:
                    raise StoreError(f"{what} failed {attempt} times; last error: {exc.message}", **exc.data) from None
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.info("retrying %s in %.2fs after: %s", what, delay, exc.message)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        return self._retry(f"get {key}", lambda: self.inner.get(key, byte_range))

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        return self._retry(f"get {key}", lambda: self.inner.get_with_token(key))

    def head(self, key: str) -> ObjectInfo | None:
        return self._retry(f"head {key}", lambda: self.inner.head(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._retry(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def delete(self, key: str) -> None:
        self._retry(f"delete {key}", lambda: self.inner.delete(key))

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        payload = bytes(data)
        return self._conditional(key, payload, mode, lambda m: self.inner.put(key, payload, m))

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        # A store may consume the file when the write lands (the local store moves it), so remember its hash
        # first: that is how a retry recognises its own earlier write.
        digest = _file_digest(path)

        def write(m: PutMode) -> str:
            try:
                return self.inner.put_file(key, path, m)
            except StoreError as exc:
                if isinstance(exc, (PreconditionFailedError, TransientStoreError)) or os.path.exists(path):
                    raise
                raise PreconditionFailedError(f"key {key!r}: the file was already published", key=key) from None

        return self._conditional(key, digest, mode, write, hashed=True)

    def _conditional(
        self, key: str, expected: bytes, mode: PutMode, write: Callable[[PutMode], str], hashed: bool = False
    ) -> str:
        uncertain = False
        for attempt in range(1, self.attempts + 1):
            try:
                return write(mode)
            except PreconditionFailedError:
                if uncertain:
                    # Our earlier attempt may have landed: then the key holds our bytes.
                    try:
                        data, token = self.get_with_token(key)  # retried, like every read
                    except KeyNotFoundError:
                        raise PreconditionFailedError(f"key {key!r} changed", key=key) from None
                    if (blake3.blake3(data).digest() if hashed else data) == expected:
                        return token
                raise
            except TransientStoreError as exc:
                uncertain = True
                if attempt == self.attempts:
                    raise StoreError(f"put {key} failed {attempt} times; last error: {exc.message}", key=key) from None
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.info("retrying put %s in %.2fs after: %s", key, delay, exc.message)
                self._sleep(delay)
        raise AssertionError("unreachable")


class FaultStore(StoreWrapper):
    """Injects seeded faults, for tests: failures before or after a write lands, dropped reads, flipped bits,
    latency. Every injected fault is a `TransientStoreError` or corrupt bytes; what it did is in `log`."""

    def __init__(
        self,
        inner: Store,
        *,
        seed: int = 0,
        fail_rate: float = 0.0,
        after_write_rate: float = 0.0,
        flip_rate: float = 0.0,
        latency: float = 0.0,
        fail_calls: set[int] | None = None,
    ) -> None:
        super().__init__(inner)
        self.rng = random.Random(seed)
        self.fail_rate = fail_rate
        self.after_write_rate = after_write_rate
        self.flip_rate = flip_rate
        self.latency = latency
        self.fail_calls = fail_calls or set()
        self.calls = 0
        self.log: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()

    def _roll(self, op: str, key: str) -> tuple[bool, bool, bool]:
        with self._lock:
            self.calls += 1
            n = self.calls
            fail = n in self.fail_calls or self.rng.random() < self.fail_rate
            after = self.rng.random() < self.after_write_rate
            flip = self.rng.random() < self.flip_rate
        if self.latency:
            time.sleep(self.latency)
        if fail:
            self.log.append((n, op, key))
        return fail, after, flip

    def _drop(self, op: str, key: str) -> TransientStoreError:
        return TransientStoreError(f"injected fault: connection dropped during {op} {key}", key=key)

    def get(self, key: str, byte_range: tuple[int, int] | None = None) -> bytes:
        fail, _, flip = self._roll("get", key)
        if fail:
            raise self._drop("get", key)
        data = self.inner.get(key, byte_range)
        if flip and data:
            buf = bytearray(data)
            i = self.rng.randrange(len(buf))
            buf[i] ^= 1 << self.rng.randrange(8)
            self.log.append((self.calls, "flip", key))
            return bytes(buf)
        return data

    def get_with_token(self, key: str) -> tuple[bytes, str]:
        fail, _, _ = self._roll("get", key)
        if fail:
            raise self._drop("get", key)
        return self.inner.get_with_token(key)

    def _write(self, op: str, key: str, do: Callable[[], str]) -> str:
        fail, after, _ = self._roll(op, key)
        if fail and after:
            do()  # the write lands, but the caller never hears back
            raise self._drop(op, key)
        if fail:
            raise self._drop(op, key)
        return do()

    def put(self, key: str, data: bytes | memoryview, mode: PutMode = OVERWRITE) -> str:
        return self._write("put", key, lambda: self.inner.put(key, data, mode))

    def put_file(self, key: str, path: str, mode: PutMode = OVERWRITE) -> str:
        return self._write("put", key, lambda: self.inner.put_file(key, path, mode))

    def head(self, key: str) -> ObjectInfo | None:
        fail, _, _ = self._roll("head", key)
        if fail:
            raise self._drop("head", key)
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        fail, _, _ = self._roll("list", prefix)
        if fail:
            raise self._drop("list", prefix)
        return iter(list(self.inner.list(prefix)))

    def delete(self, key: str) -> None:
        def do() -> str:
            self.inner.delete(key)
            return ""

        self._write("delete", key, do)
