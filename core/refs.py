"""Refs: the only mutable keys. A ref moves only by compare-and-swap on its store (DESIGN §5.3)."""

from __future__ import annotations

import logging
from urllib.parse import quote, unquote

from .errors import CorruptObjectError, KeyNotFoundError, PreconditionFailedError, RefConflictError
from .names import check_ref_name
from .objects import is_object_id
from .stores.base import CREATE, PutMode, Store

log = logging.getLogger(__name__)

BRANCHES, TAGS = "branches", "tags"


class Refs:
    """Branches, tags and other named pointers to commits, kept as `refs/<kind>/<quoted name>` keys."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def key(kind: str, name: str) -> str:
        # Quoting '/' keeps the key space flat, so 'a' and 'a/b' can both exist on every store.
        return f"refs/{kind}/{quote(name, safe='')}"

    def read(self, kind: str, name: str) -> tuple[str | None, str | None]:
        """Return (commit id, version token), or (None, None) if the ref does not exist."""
        key = self.key(kind, name)
        try:
            data, token = self.store.get_with_token(key)
        except KeyNotFoundError:
            return None, None
        value = data.decode("ascii", "replace").strip()
        if not is_object_id(value):
            raise CorruptObjectError(f"ref {kind}/{name} holds {value[:80]!r}, not a commit id", key=key)
        return value, token

    def get(self, kind: str, name: str) -> str | None:
        return self.read(kind, name)[0]

    def swap(self, kind: str, name: str, new: str, token: str | None) -> None:
        """Point a ref at `new` if it is still at version `token` (None: only if it does not exist yet).

        Raise `RefConflictError` if it moved; the caller re-reads and decides (rebase or give up).
        """
        if kind in (BRANCHES, TAGS):
            check_ref_name(name, "branch" if kind == BRANCHES else "tag")
        mode = CREATE if token is None else PutMode.if_match(token)
        try:
            self.store.put(self.key(kind, name), f"{new}\n".encode(), mode)
        except PreconditionFailedError:
            raise RefConflictError(
                f"{kind[:-1]} {name!r} moved while this change was being made", ref=name, kind=kind
            ) from None
        log.debug("ref %s/%s -> %s", kind, name, new[:16])

    def delete(self, kind: str, name: str) -> None:
        self.store.delete(self.key(kind, name))

    def list(self, kind: str) -> dict[str, str]:
        """All refs of a kind: name -> commit id."""
        out: dict[str, str] = {}
        for info in self.store.list(f"refs/{kind}/"):
            name = unquote(info.key[len(f"refs/{kind}/") :])
            commit = self.get(kind, name)
            if commit is not None:
                out[name] = commit
        return out

    def all(self) -> dict[str, str]:
        """Every ref of every kind ('kind/name' -> commit id): the roots gc and check start from."""
        out: dict[str, str] = {}
        for info in self.store.list("refs/"):
            parts = info.key.split("/")
            if len(parts) != 3:
                continue
            kind, name = parts[1], unquote(parts[2])
            commit = self.get(kind, name)
            if commit is not None:
                out[f"{kind}/{name}"] = commit
        return out
