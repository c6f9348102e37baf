"""A shared-nothing registry: one plain JSON file listing stores and the branches they publish. No server.

The file is human-readable and versioned:

    {"type": "dacflow-registry", "v": 1,
     "stores": {"<store URL>": {"added": "<time>", "checked": "<time>", "error": null,
                                "published": {"<branch>": {"head": "<commit>", "time": "<time>", "author": "…",
                                                           "message": "…"}}}}}

It lives on a local path (kept in git, on a shared disk) or on any store URL (`s3://bucket/dir/registry.json`);
edits are read-modify-write under a lock (local: `flock`; object stores: a compare-and-swap on the file), so
concurrent edits never lose each other. Only URLs are recorded, never credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import (
    CorruptObjectError,
    DacflowError,
    KeyNotFoundError,
    PreconditionFailedError,
    RefConflictError,
    RefNotFoundError,
    UsageError,
)
from .objects import utc_now
from .records import decode_record
from .repository import Repository
from .subscriptions import Opener, check_url, published

log = logging.getLogger(__name__)

REGISTRY_TYPE = "dacflow-registry"
REGISTRY_VERSION = 1
_ATTEMPTS = 50


@dataclass(frozen=True)
class RegistryEntry:
    """A store in the registry: its URL, published branches (name -> head, time, author, message) and when
    it was last read (`error`: why the last read failed, else None)."""

    url: str
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    added: str = ""
    checked: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "checked": self.checked, "error": self.error, "published": self.published}

    def with_url(self) -> dict[str, Any]:
        return {"url": self.url, **self.to_json()}


def _empty() -> dict[str, Any]:
    return {"type": REGISTRY_TYPE, "v": REGISTRY_VERSION, "stores": {}}


def _parse(data: bytes, where: str) -> dict[str, Any]:
    if not data.strip():
        return _empty()
    doc = decode_record(data, REGISTRY_TYPE, REGISTRY_VERSION, f"registry {where}", path=where)
    if not isinstance(doc.get("stores"), dict):
        raise CorruptObjectError(f"{where} is not a dacflow registry (no stores)", path=where)
    return doc


def _render(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _entry(url: str, info: dict[str, Any]) -> RegistryEntry:
    published = dict(info.get("published") or {})
    return RegistryEntry(url, published, str(info.get("added", "")), str(info.get("checked", "")), info.get("error"))


def _entries(doc: dict[str, Any]) -> list[RegistryEntry]:
    return [_entry(url, info) for url, info in sorted(doc["stores"].items())]


# -- where the file lives ------------------------------------------------------------------------------------


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local(location: str) -> str:
    return os.path.abspath(location.removeprefix("file://"))


def _split_store(location: str) -> tuple[str, str]:
    check_url(location, "registry URL")
    base, _, name = location.rstrip("/").rpartition("/")
    if not name or base.endswith(":/") or base.endswith("://"):
        raise UsageError(f"a registry URL names a file below a bucket, e.g. s3://bucket/registry.json: {location}")
    return base, name


def read_registry(location: str) -> dict[str, Any]:
    """The registry document at `location` (a missing file is an empty registry)."""
    if _is_url(location):
        from .stores import open_store

        base, name = _split_store(location)
        try:
            data = open_store(base).get(name)
        except KeyNotFoundError:
            return _empty()
        return _parse(data, location)
    path = _local(location)
    try:
        with open(path, "rb") as f:
            return _parse(f.read(), path)
    except FileNotFoundError:
        return _empty()


def update_registry(location: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    """Apply `change` to the registry document and write it back atomically, without losing a concurrent edit;
    return what `change` returned."""
    if _is_url(location):
        return _update_store(location, change)
    return _update_local(_local(location), change)


def _update_store(location: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    from .stores import open_store
    from .stores.base import CREATE, PutMode

    base, name = _split_store(location)
    store = open_store(base)
    for _attempt in range(_ATTEMPTS):
        try:
            data, token = store.get_with_token(name)
            mode = PutMode.if_match(token)
        except KeyNotFoundError:
            data, mode = b"", CREATE
        doc = _parse(data, location)
        result = change(doc)
        try:
            store.put(name, _render(doc), mode)
            return result
        except PreconditionFailedError:
            continue  # someone else edited it meanwhile: read again, apply again
    raise RefConflictError(f"registry {location} kept changing; gave up", path=location)


def _update_local(path: str, change: Callable[[dict[str, Any]], Any]) -> Any:
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise UsageError(f"no directory {folder} for the registry file", path=path)
    with _locked(path) as current:
        doc = _parse(current, path)
        result = change(doc)
        fd, tmp = tempfile.mkstemp(prefix=".registry-", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_render(doc))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return result


@contextlib.contextmanager
def _locked(path: str) -> Iterator[bytes]:
    """Hold an exclusive `flock` on the registry file (created empty if missing); yield its content.

    The file is replaced on every write, so a lock taken on a file that was replaced meanwhile is dropped and
    taken again on the current one."""
    for _attempt in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                with open(path, "rb") as f:
                    yield f.read()
                return
        finally:
            os.close(fd)  # closing releases the lock
    raise RefConflictError(f"registry {path} kept changing; gave up", path=path)


# -- the verbs -----------------------------------------------------------------------------------------------


def _read_store(url: str, opener: Opener | None) -> tuple[str, dict[str, dict[str, Any]]]:
    repo = (opener or Repository.open)(check_url(url))
    branches = {name: {"head": p.head, "time": p.time, "author": p.author, "message": p.message}
                for name, p in published(repo).items()}  # fmt: skip
    return repo.url, branches


def registry_add(location: str, url: str, *, opener: Opener | None = None) -> RegistryEntry:
    """Read the published branches of the store at `url` and record them (replacing an earlier record)."""
    canonical, branches = _read_store(url, opener)
    now = utc_now()

    def change(doc: dict[str, Any]) -> RegistryEntry:
        added = str((doc["stores"].get(canonical) or {}).get("added") or now)
        doc["stores"][canonical] = {"added": added, "checked": now, "error": None, "published": branches}
        return RegistryEntry(canonical, branches, added, now, None)

    entry: RegistryEntry = update_registry(location, change)
    log.info("registry %s: %s publishes %s", location, canonical, ", ".join(sorted(branches)) or "nothing")
    return entry


def registry_list(location: str, *, refresh: bool = False, opener: Opener | None = None) -> list[RegistryEntry]:
    """The stores in the registry and what they publish; with `refresh`, read each store again first (a store
    that cannot be read keeps its last known branches and gets an `error`)."""
    if not refresh:
        return _entries(read_registry(location))
    urls = list(read_registry(location)["stores"])
    fresh: dict[str, tuple[dict[str, dict[str, Any]] | None, str | None]] = {}
    for url in urls:
        try:
            fresh[url] = (_read_store(url, opener)[1], None)
        except DacflowError as exc:
            log.warning("registry: cannot read %s: %s", url, exc.message)
            fresh[url] = (None, " ".join(exc.message.split()))
    now = utc_now()

    def change(doc: dict[str, Any]) -> None:
        for url, (branches, error) in fresh.items():
            info = doc["stores"].get(url)
            if info is None:  # removed meanwhile
                continue
            info["checked"], info["error"] = now, error
            if branches is not None:
                info["published"] = branches

    update_registry(location, change)
    return _entries(read_registry(location))


def registry_remove(location: str, url: str) -> RegistryEntry:
    """Drop a store from the registry; raise `RefNotFoundError` if it is not listed."""
    check_url(url)
    candidates = [url, url.rstrip("/")]
    if "://" not in url or url.startswith("file://"):
        candidates.append("file://" + os.path.abspath(url.removeprefix("file://")))

    def change(doc: dict[str, Any]) -> RegistryEntry:
        for c in candidates:
            if c in doc["stores"]:
                return _entry(c, doc["stores"].pop(c))
        raise RefNotFoundError(f"{url} is not in the registry {location}", url=url)

    result: RegistryEntry = update_registry(location, change)
    return result


__all__ = ["RegistryEntry", "read_registry", "registry_add", "registry_list", "registry_remove", "update_registry"]
