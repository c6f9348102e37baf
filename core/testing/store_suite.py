"""The store conformance suite (DESIGN §4): one set of tests every `Store` must pass.

Use it by subclassing `StoreConformance` in a pytest module and providing a `store` fixture that yields an
empty store; pytest collects the inherited tests. Needs pytest (a test-only dependency).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from ..errors import KeyNotFoundError, PreconditionFailedError
from ..stores.base import CREATE, OVERWRITE, PutMode, Store

SIZES = [0, 1, 1000, 5 * 1024 * 1024 + 7]


class StoreConformance:
    """Inherit and define a `store` fixture."""

    @pytest.mark.parametrize("size", SIZES)
    def test_round_trip(self, store: Store, size: int) -> None:
        data = os.urandom(size)
        store.put(f"objects/blob-{size}", data)
        assert store.get(f"objects/blob-{size}") == data
        info = store.head(f"objects/blob-{size}")
        assert info is not None and info.size == size

    def test_put_file(self, store: Store, tmp_path: Any) -> None:
        data = os.urandom(300_000)
        staging = store.staging_dir()
        path = os.path.join(staging, "upload.tmp")
        with open(path, "wb") as f:
            f.write(data)
        store.put_file("packs/p1", path, CREATE)
        assert store.get("packs/p1") == data
        with pytest.raises(PreconditionFailedError):
            other = tmp_path / "other"
            other.write_bytes(b"x")
            store.put_file("packs/p1", str(other), CREATE)
        assert store.get("packs/p1") == data

    def test_byte_ranges(self, store: Store) -> None:
        data = bytes(range(256)) * 100
        store.put("objects/ranged", data)
        assert store.get("objects/ranged", (0, 1)) == data[:1]
        assert store.get("objects/ranged", (10, 300)) == data[10:300]
        assert store.get("objects/ranged", (len(data) - 5, len(data))) == data[-5:]
        assert store.get("objects/ranged", (100, 100)) == b""

    def test_missing_key(self, store: Store) -> None:
        with pytest.raises(KeyNotFoundError):
            store.get("objects/nope")
        with pytest.raises(KeyNotFoundError):
            store.get_with_token("objects/nope")
        assert store.head("objects/nope") is None
        store.delete("objects/nope")  # deleting a missing key is fine

    def test_list_and_delete(self, store: Store) -> None:
        keys = {"index/a", "index/b", "index/sub/c", "packs/x/y", "refs/branches/main"}
        for key in keys:
            store.put(key, key.encode())
        assert {i.key for i in store.list("index/")} == {"index/a", "index/b", "index/sub/c"}
        assert {i.key for i in store.list("")} >= keys
        sizes = {i.key: i.size for i in store.list("packs/")}
        assert sizes == {"packs/x/y": len(b"packs/x/y")}
        store.delete("index/a")
        assert {i.key for i in store.list("index/")} == {"index/b", "index/sub/c"}
        assert list(store.list("nothing-here/")) == []

    def test_create_only(self, store: Store) -> None:
        store.put("config", b"one", CREATE)
        with pytest.raises(PreconditionFailedError):
            store.put("config", b"two", CREATE)
        assert store.get("config") == b"one"
        store.put("config", b"three", OVERWRITE)
        assert store.get("config") == b"three"

    def test_compare_and_swap(self, store: Store) -> None:
        store.put("refs/branches/main", b"a", CREATE)
        data, token = store.get_with_token("refs/branches/main")
        assert data == b"a"
        new_token = store.put("refs/branches/main", b"b", PutMode.if_match(token))
        with pytest.raises(PreconditionFailedError):
            store.put("refs/branches/main", b"c", PutMode.if_match(token))  # stale token loses
        assert store.get("refs/branches/main") == b"b"
        data, token2 = store.get_with_token("refs/branches/main")
        assert token2 == new_token
        store.put("refs/branches/main", b"d", PutMode.if_match(token2))
        assert store.get("refs/branches/main") == b"d"

    def test_if_match_on_missing_key(self, store: Store) -> None:
        with pytest.raises((PreconditionFailedError, KeyNotFoundError)):
            store.put("refs/branches/ghost", b"x", PutMode.if_match("whatever"))
        assert store.head("refs/branches/ghost") is None

    @pytest.mark.parametrize("name", ["snow\u2603man", "caf\u00e9", "\u4e2d\u6587", "emoji-\U0001f600", "sp ace"])
    def test_unicode_keys(self, store: Store, name: str) -> None:
        key = f"refs/branches/{name}"
        store.put(key, name.encode())
        assert store.get(key) == name.encode()
        assert key in {i.key for i in store.list("refs/branches/")}

    def test_concurrent_cas_loses_nothing(self, store: Store) -> None:
        """Threads increment one counter by CAS; every increment must land exactly once."""
        store.put("refs/counter", b"0", CREATE)
        workers, per_worker = 4, 15

        def bump() -> None:
            for _ in range(per_worker):
                while True:
                    data, token = store.get_with_token("refs/counter")
                    try:
                        store.put("refs/counter", str(int(data) + 1).encode(), PutMode.if_match(token))
                        break
                    except PreconditionFailedError:
                        continue

        threads = [threading.Thread(target=bump) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert int(store.get("refs/counter")) == workers * per_worker
