"""Lifecycle hooks (pluggy): validate a branch move before its compare-and-swap, notify after it (DESIGN §8b).

Four hooks, all called with keyword arguments (an implementation takes any subset of them):

- `dacflow_validate_commit(repo, branch, old, new, commit, changes)` — before a direct commit (snapshot, table
  write, path change) moves `branch` from `old` to `new`; return the reasons to refuse (a str or a list of str;
  None or [] means no objection);
- `dacflow_validate_merge(repo, branch, old, new, commit, changes, source)` — the same before a merge, a
  fast-forward, or a transfer into a guarded branch;
- `dacflow_after_commit(...)` and `dacflow_after_merge(...)` — after the ref moved (notifications). What they
  raise is logged with the plugin's name and never undoes or fails the move.

`changes` is a `RefChange`: lazy, cached views of what changed (paths, table diffs, schemas), so a validator pays
only for what it reads. Plugins come from the `dacflow.plugins` entry-point group, from `register()`, and from
the names in the repository's gate config (`dacflow.gates`), next to the built-in gates. Every hook
implementation is called even when another refuses or fails, so a veto lists every reason, and a plugin that
raises is named in it ("errors point at the culprit plugin").
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import DacflowError
from .objects import Commit, TableObject, TreeEntry
from .trees import TreeDiff, diff_trees, lookup

if TYPE_CHECKING:
    from .repository import Repository

log = logging.getLogger(__name__)

PROJECT = "dacflow"
ENTRY_POINT_GROUP = "dacflow.plugins"
VALIDATE_COMMIT, VALIDATE_MERGE = "dacflow_validate_commit", "dacflow_validate_merge"
AFTER_COMMIT, AFTER_MERGE = "dacflow_after_commit", "dacflow_after_merge"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class DacflowHookSpecs:
    """The hook specifications; a plugin implements any of them with `@dacflow.hooks.hookimpl`."""

    @hookspec
    def dacflow_validate_commit(
        self, repo: Repository, branch: str, old: str | None, new: str, commit: Commit, changes: RefChange
    ) -> str | list[str] | None:
        """Reasons to refuse a direct commit moving `branch` from `old` to `new` (None or []: no objection)."""

    @hookspec
    def dacflow_validate_merge(
        self,
        repo: Repository,
        branch: str,
        old: str | None,
        new: str,
        commit: Commit,
        changes: RefChange,
        source: str,
    ) -> str | list[str] | None:
        """Reasons to refuse a merge (or fast-forward, or transfer) of `source` moving `branch` to `new`."""

    @hookspec
    def dacflow_after_commit(
        self, repo: Repository, branch: str, old: str | None, new: str, commit: Commit, changes: RefChange
    ) -> None:
        """`branch` moved to the new commit `new` (notifications; failures are logged, never raised)."""

    @hookspec
    def dacflow_after_merge(
        self,
        repo: Repository,
        branch: str,
        old: str | None,
        new: str,
        commit: Commit,
        changes: RefChange,
        source: str,
    ) -> None:
        """`branch` moved to `new` by a merge of `source` (notifications; failures are logged, never raised)."""


class RefChange:
    """A branch about to move (or that just moved) from `old` to `new`, with lazy, cached views of the change.

    Nothing is read until asked for; the tree diff costs what changed (shared subtrees are skipped), a table diff
    reads only the changesets or fragments the two versions do not share."""

    def __init__(self, repo: Repository, branch: str, old: str | None, new: str, action: str, source: str = "") -> None:
        self.repo, self.branch, self.old, self.new = repo, branch, old, new
        self.action, self.source = action, source
        self._tables: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"RefChange({self.branch!r}, {(self.old or '-')[:12]} -> {self.new[:12]}, {self.action})"

    @cached_property
    def commit(self) -> Commit:
        return self.repo.odb.get_commit(self.new)

    @cached_property
    def old_tree(self) -> str | None:
        return self.repo.odb.get_commit(self.old).tree if self.old else None

    @cached_property
    def paths(self) -> TreeDiff:
        """Paths added, removed and modified (sizes from the tree entries; file contents are not read)."""
        return diff_trees(self.repo.odb, self.old_tree, self.commit.tree, content=False)

    def entry(self, path: str, *, before: bool = False) -> TreeEntry | None:
        """The tree entry at `path` after the move (before it with `before`), or None."""
        tree = self.old_tree if before else self.commit.tree
        return lookup(self.repo.odb, tree, path) if tree else None

    def touches(self, path: str) -> bool:
        """True if the entry at `path` differs between old and new (a cheap test: two lookups)."""
        a, b = self.entry(path, before=True), self.entry(path)
        return (a.ref, a.kind) != (b.ref, b.kind) if a is not None and b is not None else a is not b

    def table(self, name: str, *, before: bool = False) -> TableObject | None:
        """The table object `name` after (or before) the move, or None if there is no table there."""
        entry = self.entry(name, before=before)
        return self.repo.odb.get_table(entry.ref) if entry is not None and entry.kind == "table" else None

    def table_diff(self, name: str) -> Any:
        """Rows inserted, updated and deleted in table `name` (a `TableDiff`, cached)."""
        if name not in self._tables:
            from .tables.diff import table_diff

            old, new = self.table(name, before=True), self.table(name)
            if old is None and new is None:
                raise ValueError(f"no table {name!r} before or after the move")
            self._tables[name] = table_diff(self.repo._table_io(), old, new)
        return self._tables[name]

    def comparable(self, name: str) -> bool:
        """True if the two versions of table `name` can be diffed row by row (same key, compatible types)."""
        old, new = self.table(name, before=True), self.table(name)
        if old is None or new is None:
            return True
        if tuple(old.key) != tuple(new.key):
            return False
        try:
            self.table_diff(name)
        except (ValueError, TypeError, DacflowError):  # e.g. a column's type changed: rows cannot be matched
            return False
        return True

    def changed_rows(self, name: str) -> Any:
        """The new values of the rows inserted or updated in table `name` (an Arrow table); every row of the new
        version when the old one cannot be compared with it (another key, an incompatible type)."""
        if self.comparable(name):
            return self.table_diff(name).changed_rows()
        return self.repo._table_io().rows(self.table(name))

    def deleted_rows(self, name: str) -> int:
        """How many rows of table `name` the move deletes; all of them when the table goes or is replaced by a
        version that cannot be compared with it."""
        old, new = self.table(name, before=True), self.table(name)
        if old is None:
            return 0
        if new is None or not self.comparable(name):
            return old.rows
        return len(self.table_diff(name).deleted)

    def schema(self, name: str) -> tuple[Any, list[str]] | None:
        """The Arrow schema and key of table `name` after the move, or None if there is no such table."""
        from .tables.engine import schema_from_text

        table = self.table(name)
        return (schema_from_text(table.schema), list(table.key)) if table is not None else None


# -- plugin discovery -------------------------------------------------------------------------------------------
_lock = threading.RLock()  # a plugin module may call register() while it is being loaded
_registered: dict[str, object] = {}
_entry_points: list[tuple[str, object | None, str]] | None = None  # (name, plugin or None, load error)


def register(plugin: object, name: str | None = None) -> str:
    """Add a plugin to every repository's hooks in this process (e.g. from a test or an application); return
    its name. Entry points of group `dacflow.plugins` are found without this."""
    key = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    with _lock:
        _registered[key] = plugin
    return key


def unregister(name: str) -> None:
    """Remove a plugin added with `register`."""
    with _lock:
        _registered.pop(name, None)


def refresh() -> None:
    """Forget the entry points found so far (they are scanned once per process): call after installing a plugin."""
    global _entry_points
    with _lock:
        _entry_points = None


def _instantiate(obj: object) -> object:
    return obj() if isinstance(obj, type) else obj  # a class: its instance holds the hook implementations


def entry_point_plugins() -> list[tuple[str, object | None, str]]:
    """The plugins of the `dacflow.plugins` entry-point group: (name, plugin or None, why it did not load)."""
    global _entry_points
    with _lock:
        if _entry_points is None:
            from importlib.metadata import entry_points

            found: list[tuple[str, object | None, str]] = []
            seen: set[str] = set()
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                if ep.name in seen:  # the same distribution on sys.path twice
                    continue
                seen.add(ep.name)
                try:
                    found.append((ep.name, _instantiate(ep.load()), ""))
                except Exception as exc:  # noqa: BLE001 - reported as the plugin's fault wherever a hook runs
                    found.append((ep.name, None, f"{type(exc).__name__}: {exc}"))
            _entry_points = found
        return list(_entry_points)


def load_named(name: str) -> object:
    """Import a plugin named `module` or `module:attribute` (how the gate config names plugins)."""
    module, _, attr = name.partition(":")
    obj: object = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return _instantiate(obj)


class Hooks:
    """The plugin manager of one operation: built-ins, entry points, registered and configured plugins.

    Built-ins are called first, then the others; `broken` holds plugins that could not load or register, which
    makes every validation refuse (a data contract does not fail open)."""

    def __init__(self, builtins: Iterable[tuple[str, object]] = (), configured: Iterable[str] = ()) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(DacflowHookSpecs)
        self.broken: list[str] = []
        plugins: list[tuple[str, object | None, str]] = []
        for name in configured:
            try:
                plugins.append((name, load_named(name), ""))
            except Exception as exc:  # noqa: BLE001 - named below
                plugins.append((name, None, f"{type(exc).__name__}: {exc}"))
        plugins += entry_point_plugins()
        with _lock:
            plugins += [(n, p, "") for n, p in _registered.items()]
        plugins += [(n, p, "") for n, p in builtins]  # registered last, so called first
        for name, plugin, error in plugins:
            if plugin is None:
                self.broken.append(f"plugin {name!r} could not be loaded: {error}")
                continue
            if self.pm.is_registered(plugin) or self.pm.has_plugin(name):
                continue
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001 - pluggy.PluginValidationError and friends
                self.broken.append(f"plugin {name!r} is not a valid dacflow plugin: {exc}")

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.pm.list_name_plugin()]

    def _impls(self, hook: str) -> list[Any]:
        caller = getattr(self.pm.hook, hook)
        out = []
        for impl in reversed(caller.get_hookimpls()):  # pluggy's call order: last registered (and tryfirst) first
            if impl.hookwrapper or impl.wrapper:
                log.warning("plugin %s: hook wrappers are not supported; %s ignored", impl.plugin_name, hook)
                continue
            out.append(impl)
        return out

    def validate(self, hook: str, **kwargs: Any) -> list[str]:
        """Call every implementation of a validation hook; return all reasons (a plugin that raised is one)."""
        reasons = list(self.broken)
        for impl in self._impls(hook):
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception as exc:  # noqa: BLE001 - a failing validator vetoes, naming itself
                log.warning("plugin %s failed in %s", impl.plugin_name, hook, exc_info=True)
                reasons.append(f"plugin {impl.plugin_name!r} failed: {type(exc).__name__}: {exc}")
                continue
            reasons.extend(_as_reasons(impl.plugin_name, result))
        return reasons

    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call every implementation of an after-hook; failures are logged with the plugin's name, not raised."""
        for impl in self._impls(hook):
            try:
                impl.function(*[kwargs[a] for a in impl.argnames])
            except Exception:  # noqa: BLE001 - a notification never fails the move that already happened
                log.warning("plugin %s failed in %s (the move stands)", impl.plugin_name, hook, exc_info=True)


def _as_reasons(plugin: str, result: Any) -> list[str]:
    if result is None or result is True or result == []:
        return []
    if result is False:
        return [f"plugin {plugin!r} refused without saying why"]
    if isinstance(result, str):
        return [" ".join(result.split())] if result.strip() else []
    if isinstance(result, Iterable):
        return [" ".join(str(r).split()) for r in result if r is not None and str(r).strip()]
    return [f"plugin {plugin!r} returned {result!r} instead of a list of reasons"]


__all__ = [
    "ENTRY_POINT_GROUP",
    "DacflowHookSpecs",
    "Hooks",
    "RefChange",
    "entry_point_plugins",
    "hookimpl",
    "hookspec",
    "refresh",
    "register",
    "unregister",
]
