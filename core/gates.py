"""Quality gates and protected branches: write-audit-publish without a server (DESIGN §8b).

The gate config is one versioned JSON document per repository, at store key `gates`:
`{"type": "gates", "v": 1, "revision": N, "protected": [branch…], "plugins": ["module:attr"…], "gates": [gate…]}`.
Readers refuse other versions; every edit is a compare-and-swap that bumps `revision`. A gate is
`{"id", "kind", "branch", …}`; `branch` is a name or an fnmatch pattern (`release/*`). Kinds:

- `schema` — table contract: `table`, `columns` {name: Arrow type}, optional `key`, `exact` (no other columns);
- `rows` — row rules on the inserted and updated rows of `table`, with pyarrow.compute: `not_null` [col…],
  `ranges` {col: [min, max]} (either may be null), `allowed` {col: [value…]};
- `guard` — change guard: `table` + `max_delete_pct` (rows deleted / rows before), or `path` (glob) +
  `max_shrink_pct` (a removed file counts as shrunk to nothing);
- `paths` — path rules on added and modified paths under `path` (glob, default all): `allow` [glob…],
  `max_size` (bytes, files);
- `webhook` (`url` or `url_env`, `timeout`, `retries`) and `log` — notifiers run after a commit or merge.

Before a branch moves to a new commit, `Gatekeeper` runs the built-in gates and the plugins' validators
(`dacflow.hooks`); any reason refuses the move with `GateRejectedError` listing them all, and the ref stays.
A protected branch takes no direct commit: only merges (fast-forwards and transfers included) that pass its gates.
With no gate config and no plugin, a move costs one small read of the `gates` key and nothing else.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptObjectError,
    GateRejectedError,
    KeyNotFoundError,
    PreconditionFailedError,
    RefConflictError,
    RefNotFoundError,
    UsageError,
)
from .names import check_ref_name, split_path
from .objects import FILE, hash_bytes
from .records import decode_record
from .stores.base import CREATE, PutMode

if TYPE_CHECKING:
    from .hooks import Hooks, RefChange
    from .repository import Repository

log = logging.getLogger(__name__)

GATES_KEY = "gates"
FORMAT_VERSION = 1
VALIDATORS = ("schema", "rows", "guard", "paths")
NOTIFIERS = ("webhook", "log")
KINDS = VALIDATORS + NOTIFIERS
MAX_LISTED = 5  # offending paths or values named in one reason


@dataclass(frozen=True)
class GateConfig:
    """A repository's gates, protected branches and plugins (empty when the repository has none)."""

    revision: int = 0
    protected: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()
    gates: tuple[dict[str, Any], ...] = ()
    token: str | None = field(default=None, compare=False)  # the stored version this was read at

    @property
    def empty(self) -> bool:
        return not (self.protected or self.plugins or self.gates)

    def is_protected(self, branch: str) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in self.protected)

    def for_branch(self, branch: str, kinds: Iterable[str] = KINDS) -> list[dict[str, Any]]:
        """The gates whose branch pattern matches `branch`, of the given kinds."""
        wanted = set(kinds)
        return [g for g in self.gates if g["kind"] in wanted and fnmatch.fnmatchcase(branch, g["branch"])]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "gates",
            "v": FORMAT_VERSION,
            "revision": self.revision,
            "protected": list(self.protected),
            "plugins": list(self.plugins),
            "gates": [dict(g) for g in self.gates],
        }

    def encode(self) -> bytes:
        return (json.dumps(self.to_json(), indent=1, sort_keys=True) + "\n").encode()

    @classmethod
    def decode(cls, data: bytes, where: str, token: str | None = None) -> GateConfig:
        doc = decode_record(data, "gates", FORMAT_VERSION, f"the gate config of {where}", key=GATES_KEY)
        try:
            gates = tuple(dict(g) for g in doc.get("gates", []))
            if any(g.get("kind") not in KINDS or not isinstance(g.get("branch"), str) for g in gates):
                raise ValueError("a gate has an unknown kind or no branch")
            return cls(
                int(doc.get("revision", 0)),
                tuple(str(p) for p in doc.get("protected", [])),
                tuple(str(p) for p in doc.get("plugins", [])),
                gates,
                token,
            )
        except (TypeError, ValueError) as exc:
            raise CorruptObjectError(f"the gate config of {where} has a bad field: {exc}", key=GATES_KEY) from None


# -- reading and editing the config -------------------------------------------------------------------------------
def gate_config(repo: Repository) -> GateConfig:
    """The repository's gate config (one read; an empty config if it has none)."""
    try:
        data, token = repo.store.get_with_token(GATES_KEY)
    except KeyNotFoundError:
        return GateConfig()
    return GateConfig.decode(data, repo.url, token)


def edit_config(repo: Repository, change: Callable[[GateConfig], GateConfig]) -> GateConfig:
    """Apply `change` to the gate config by compare-and-swap (re-read and re-applied when another edit won)."""
    for _attempt in range(50):
        current = gate_config(repo)
        new = change(current)
        if new == current:
            return current
        new = replace(new, revision=current.revision + 1)
        mode = CREATE if current.token is None else PutMode.if_match(current.token)
        try:
            token = repo.store.put(GATES_KEY, new.encode(), mode)
        except PreconditionFailedError:
            continue
        log.info("gate config of %s -> revision %d", repo.url, new.revision)
        return replace(new, token=token)
    raise RefConflictError(f"the gate config of {repo.url} kept changing; gave up", ref=GATES_KEY)


def _table_name(name: Any) -> str:
    if not isinstance(name, str) or not split_path(name):
        raise UsageError(f"a gate needs a table name, got {name!r}")
    return "/".join(split_path(name))


def _pct(gate: dict[str, Any], name: str) -> None:
    value = gate.get(name)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 100:
        raise UsageError(f"{name} must be a percentage from 0 to 100, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        gate[name] = int(value)  # 10.0 from the command line is the same gate as 10 from Python


def _globs(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{what} takes glob patterns, got {value!r}")
    return list(value)


def make_gate(kind: str, branch: str, **spec: Any) -> dict[str, Any]:
    """Validate a gate spec and give it its id (a hash of the spec: adding the same gate twice is one gate)."""
    if kind not in KINDS:
        raise UsageError(f"unknown gate kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not isinstance(branch, str) or not branch:
        raise UsageError("a gate needs a branch (a name or a pattern such as 'release/*')")
    if not any(c in branch for c in "*?["):
        check_ref_name(branch)
    gate: dict[str, Any] = {"kind": kind, "branch": branch}
    gate.update({k: v for k, v in spec.items() if v is not None and v != [] and v != {}})
    if kind in ("schema", "rows") or (kind == "guard" and "path" not in gate):
        gate["table"] = _table_name(gate.get("table"))
    if kind == "schema":
        _check_schema_spec(gate)
    elif kind == "rows":
        _check_rows_spec(gate)
    elif kind == "guard":
        if "table" in gate and "path" in gate:
            raise UsageError("a change guard takes a table or a path, not both")
        if "table" in gate:
            _pct(gate, "max_delete_pct")
            gate.pop("max_shrink_pct", None)
        else:
            gate["path"] = _globs(gate["path"], "path")[0]
            _pct(gate, "max_shrink_pct")
            gate.pop("max_delete_pct", None)
    elif kind == "paths":
        gate["path"] = _globs(gate.get("path", "*"), "path")[0]
        if "allow" in gate:
            gate["allow"] = _globs(gate["allow"], "allow")
        size = gate.get("max_size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise UsageError(f"max_size takes a number of bytes, got {size!r}")
        if "allow" not in gate and size is None:
            raise UsageError("a path rule needs allowed globs, a maximum file size, or both")
    elif kind == "webhook":
        from .notify import check_webhook

        check_webhook(gate)
    unknown = set(gate) - _FIELDS[kind]
    if unknown:
        raise UsageError(f"a {kind} gate has no field(s) {', '.join(sorted(unknown))}")
    body = json.dumps(gate, sort_keys=True, separators=(",", ":"))
    return {"id": hash_bytes(body.encode())[:10], **gate}


_COMMON = {"kind", "branch"}
_FIELDS = {
    "schema": _COMMON | {"table", "columns", "key", "exact"},
    "rows": _COMMON | {"table", "not_null", "ranges", "allowed"},
    "guard": _COMMON | {"table", "path", "max_delete_pct", "max_shrink_pct"},
    "paths": _COMMON | {"path", "allow", "max_size"},
    "webhook": _COMMON | {"url", "url_env", "timeout", "retries"},
    "log": _COMMON | {"level"},
}


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    try:
        return pa.type_for_alias(name)
    except (ValueError, KeyError):
        return None  # compared by its text (e.g. "timestamp[us, tz=UTC]")


def _same_type(actual: Any, expected: str) -> bool:
    wanted = _arrow_type(expected)
    return actual == wanted if wanted is not None else str(actual).lower() == expected.lower()


def _check_schema_spec(gate: dict[str, Any]) -> None:
    columns = gate.get("columns")
    if not isinstance(columns, Mapping) or not columns:
        raise UsageError("a schema contract needs columns {name: type}, e.g. ts=int64")
    if not all(isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items()):
        raise UsageError("schema contract columns map names to Arrow type names (int64, double, string, …)")
    gate["columns"] = dict(columns)
    if "key" in gate:
        key = gate["key"]
        if isinstance(key, str):
            key = [k.strip() for k in key.split(",") if k.strip()]
        if not isinstance(key, (list, tuple)) or not all(isinstance(k, str) for k in key):
            raise UsageError(f"a contract key is a list of column names, got {key!r}")
        gate["key"] = list(key)
    if "exact" in gate:
        gate["exact"] = bool(gate["exact"])
        if not gate["exact"]:
            del gate["exact"]


def _check_rows_spec(gate: dict[str, Any]) -> None:
    not_null, ranges, allowed = gate.get("not_null", []), gate.get("ranges", {}), gate.get("allowed", {})
    if isinstance(not_null, str):
        not_null = [not_null]
    if not isinstance(not_null, (list, tuple)) or not all(isinstance(c, str) for c in not_null):
        raise UsageError(f"not_null takes column names, got {not_null!r}")
    if not isinstance(ranges, Mapping) or not isinstance(allowed, Mapping):
        raise UsageError("ranges take {column: [min, max]} and allowed takes {column: [value, ...]}")
    for col, bounds in ranges.items():
        if (
            not isinstance(bounds, (list, tuple))
            or len(bounds) != 2
            or all(b is None for b in bounds)
            or not all(b is None or (isinstance(b, (int, float, str)) and not isinstance(b, bool)) for b in bounds)
        ):
            raise UsageError(f"range of {col!r} takes [min, max] (one may be null), got {bounds!r}")
    for col, values in allowed.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise UsageError(f"allowed values of {col!r} take a non-empty list, got {values!r}")
    if not (not_null or ranges or allowed):
        raise UsageError("a row rule needs not_null columns, ranges or allowed values")
    gate.update(not_null=list(not_null), ranges={k: list(v) for k, v in ranges.items()})
    gate["allowed"] = {k: list(v) for k, v in allowed.items()}


def add_gate(repo: Repository, kind: str, branch: str, **spec: Any) -> dict[str, Any]:
    """Add a gate on `branch` (see the module docstring for the kinds); return it with its id. Idempotent."""
    gate = make_gate(kind, branch, **spec)

    def change(cfg: GateConfig) -> GateConfig:
        if any(g["id"] == gate["id"] for g in cfg.gates):
            return cfg
        return replace(cfg, gates=(*cfg.gates, gate))

    edit_config(repo, change)
    return gate


def remove_gate(repo: Repository, gate_id: str) -> dict[str, Any]:
    """Remove the gate whose id is or starts with `gate_id` (4+ characters); return it."""
    cfg = gate_config(repo)
    hits = [g for g in cfg.gates if len(gate_id) >= 4 and g["id"].startswith(gate_id)]
    if not hits:
        raise RefNotFoundError(f"no gate {gate_id!r} in {repo.url} (see `dacflow gate list`)", ref=gate_id)
    if len(hits) > 1:
        raise UsageError(f"{gate_id!r} names {len(hits)} gates; give more of the id", ref=gate_id)
    gone = hits[0]
    edit_config(repo, lambda c: replace(c, gates=tuple(g for g in c.gates if g["id"] != gone["id"])))
    return gone


def protect(repo: Repository, branch: str) -> GateConfig:
    """Protect `branch` (a name or pattern): direct commits are refused; merges must pass its gates."""
    if not any(c in branch for c in "*?["):
        check_ref_name(branch)
    return edit_config(repo, lambda c: c if branch in c.protected else replace(c, protected=(*c.protected, branch)))


def unprotect(repo: Repository, branch: str) -> GateConfig:
    """Take the protection off `branch` (its gates stay)."""
    if branch not in gate_config(repo).protected:
        raise RefNotFoundError(f"branch {branch!r} is not protected in {repo.url}", ref=branch)
    return edit_config(repo, lambda c: replace(c, protected=tuple(p for p in c.protected if p != branch)))


def add_plugin(repo: Repository, name: str) -> GateConfig:
    """Name a plugin (`module` or `module:attribute`, importable where dacflow runs) in the repository's config."""
    from .hooks import load_named

    try:
        load_named(name)
    except Exception as exc:  # noqa: BLE001 - said in one line
        raise UsageError(f"cannot load plugin {name!r}: {type(exc).__name__}: {exc}", plugin=name) from None
    return edit_config(repo, lambda c: c if name in c.plugins else replace(c, plugins=(*c.plugins, name)))


def remove_plugin(repo: Repository, name: str) -> GateConfig:
    if name not in gate_config(repo).plugins:
        raise RefNotFoundError(f"no plugin {name!r} in the gate config of {repo.url}", ref=name)
    return edit_config(repo, lambda c: replace(c, plugins=tuple(p for p in c.plugins if p != name)))


def schema_contract(repo: Repository, ref: str, table: str) -> dict[str, Any]:
    """The columns and key of table `table` in `ref`, as a schema contract's fields (to adopt what exists)."""
    schema, key = repo.table_schema(ref, table)
    return {"columns": {f.name: str(f.type) for f in schema}, "key": key}


# -- the built-in validators ---------------------------------------------------------------------------------------
def _where(gate: Mapping[str, Any]) -> str:
    return str(gate.get("table") or gate.get("path") or "*")


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _check_schema(gate: Mapping[str, Any], ch: RefChange) -> list[str]:
    table = gate["table"]
    if not ch.touches(table):
        return []
    got = ch.schema(table)
    if got is None:
        return [f"{table}: the table is removed, but a schema contract guards it"]
    schema, key = got
    out = []
    for col, expected in gate["columns"].items():
        if col not in schema.names:
            out.append(f"{table}: column {col!r} is missing (the contract says {expected})")
        elif not _same_type(schema.field(col).type, expected):
            out.append(f"{table}: column {col!r} is {schema.field(col).type}, the contract says {expected}")
    if gate.get("exact"):
        extra = [n for n in schema.names if n not in gate["columns"]]
        if extra:
            out.append(f"{table}: column(s) {_listed(extra)} are not in the contract")
    if "key" in gate and list(gate["key"]) != list(key):
        out.append(f"{table}: the key is {key}, the contract says {list(gate['key'])}")
    return out


def _check_rows(gate: Mapping[str, Any], ch: RefChange) -> list[str]:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = gate["table"]
    if not ch.touches(table) or ch.table(table) is None:
        return []
    rows = ch.changed_rows(table)
    key = list(ch.table(table).key)  # type: ignore[union-attr]
    if len(rows) == 0:
        return []
    out: list[str] = []

    def count(mask: Any, col: str, what: str) -> None:
        mask = pc.fill_null(mask, False)
        n = pc.sum(mask).as_py() or 0
        if n:
            first = rows.filter(mask).slice(0, 1).to_pylist()[0]
            where = ", ".join(repr(first[k]) for k in key)
            out.append(f"{table}: {n} changed row(s) {what}, e.g. key ({where}) {col}={first[col]!r}")

    def column(col: str) -> Any:
        if col not in rows.column_names:
            out.append(f"{table}: column {col!r} named by a row rule does not exist")
            return None
        return rows.column(col)

    for col in gate.get("not_null", []):
        if (values := column(col)) is not None:
            count(pc.is_null(values), col, f"with a null {col}")
    for col, (lo, hi) in gate.get("ranges", {}).items():
        if (values := column(col)) is None:
            continue
        try:
            tests = [pc.is_nan(values)] if pa.types.is_floating(values.type) else []
            if lo is not None:
                tests.append(pc.less(values, pa.scalar(lo)))
            if hi is not None:
                tests.append(pc.greater(values, pa.scalar(hi)))
            bad = functools.reduce(pc.or_, tests)  # null compares to null: counted by not_null rules, not here
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            out.append(f"{table}: cannot compare column {col!r} ({values.type}) with [{lo}, {hi}]: {exc}")
            continue
        count(bad, col, f"with {col} outside [{lo}, {hi}]")
    for col, allowed in gate.get("allowed", {}).items():
        if (values := column(col)) is None:
            continue
        try:
            value_set = pa.array(allowed).cast(values.type)
            bad = pc.and_(pc.invert(pc.is_in(values, value_set=value_set)), pc.is_valid(values))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            out.append(f"{table}: cannot match column {col!r} ({values.type}) against {allowed}: {exc}")
            continue
        count(bad, col, f"with {col} not in {_listed([repr(a) for a in allowed])}")
    return out


def _check_guard(gate: Mapping[str, Any], ch: RefChange) -> list[str]:
    if "table" in gate:
        table = gate["table"]
        if not ch.touches(table):
            return []
        old = ch.table(table, before=True)
        if old is None or old.rows == 0:
            return []
        deleted = ch.deleted_rows(table)
        pct = 100.0 * deleted / old.rows
        if pct > gate["max_delete_pct"]:
            allowed = gate["max_delete_pct"]
            return [f"{table}: {deleted} of {old.rows} rows deleted ({pct:.1f}%), the guard allows {allowed}%"]
        return []
    limit, shrunk = gate["max_shrink_pct"], []
    for c in ch.paths.modified + ch.paths.removed:
        if c.kind == FILE and c.old_size > 0 and fnmatch.fnmatchcase(c.path, gate["path"]):
            pct = 100.0 * (c.old_size - c.new_size) / c.old_size
            if pct > limit:
                shrunk.append(f"{c.path} ({c.old_size} -> {c.new_size} B, -{pct:.1f}%)")
    return [f"{len(shrunk)} file(s) shrink by more than {limit}%: {_listed(shrunk)}"] if shrunk else []


def _check_paths(gate: Mapping[str, Any], ch: RefChange) -> list[str]:
    scope, allow, limit = gate["path"], gate.get("allow"), gate.get("max_size")
    refused, big = [], []
    for c in ch.paths.added + ch.paths.modified:
        if not fnmatch.fnmatchcase(c.path, scope):
            continue
        if allow and not any(fnmatch.fnmatchcase(c.path, g) for g in allow):
            refused.append(c.path)
        if limit is not None and c.kind == FILE and c.new_size > limit:
            big.append(f"{c.path} ({c.new_size} B)")
    out = []
    if refused:
        globs = ", ".join(allow or [])
        out.append(f"{len(refused)} path(s) not allowed (allowed: {globs}): {_listed(sorted(refused))}")
    if big:
        out.append(f"{len(big)} file(s) larger than {limit} B: {_listed(sorted(big))}")
    return out


_CHECKS: dict[str, Callable[[Mapping[str, Any], RefChange], list[str]]] = {
    "schema": _check_schema,
    "rows": _check_rows,
    "guard": _check_guard,
    "paths": _check_paths,
}


def run_gates(gates: Iterable[Mapping[str, Any]], ch: RefChange) -> list[str]:
    """Every reason the validator gates give against a change (each reason names its gate)."""
    reasons = []
    for gate in gates:
        check = _CHECKS.get(gate["kind"])
        if check is not None:
            reasons += [f"{r} (gate {gate['id']} {gate['kind']} {_where(gate)})" for r in check(gate, ch)]
    return reasons


class BuiltinGates:
    """The built-in plugin: protected branches, the validator gates and the notifiers of the gate config."""

    def __init__(self, config: GateConfig) -> None:
        self.config = config

    def _validate(self, branch: str, changes: RefChange) -> list[str]:
        return run_gates(self.config.for_branch(branch, VALIDATORS), changes)

    def dacflow_validate_commit(self, branch: str, changes: RefChange) -> list[str]:
        reasons = []
        if self.config.is_protected(branch):
            reasons.append(f"branch {branch!r} is protected: commit to another branch and merge it in")
        return reasons + self._validate(branch, changes)

    def dacflow_validate_merge(self, branch: str, changes: RefChange) -> list[str]:
        return self._validate(branch, changes)

    def _notify(self, branch: str, changes: RefChange) -> None:
        notifiers = self.config.for_branch(branch, NOTIFIERS)
        if notifiers:
            from .notify import send, summary

            doc = summary(changes)
            for gate in notifiers:
                send(gate, doc)

    def dacflow_after_commit(self, branch: str, changes: RefChange) -> None:
        self._notify(branch, changes)

    def dacflow_after_merge(self, branch: str, changes: RefChange) -> None:
        self._notify(branch, changes)


_BUILTIN: type | None = None


def _builtin_plugin(config: GateConfig) -> object:
    """A `BuiltinGates` whose methods carry pluggy's hookimpl marks (pluggy is imported only when needed)."""
    global _BUILTIN
    if _BUILTIN is None:
        from .hooks import hookimpl

        class Builtin(BuiltinGates):
            @hookimpl
            def dacflow_validate_commit(self, branch: str, changes: RefChange) -> list[str]:
                return BuiltinGates.dacflow_validate_commit(self, branch, changes)

            @hookimpl
            def dacflow_validate_merge(self, branch: str, changes: RefChange) -> list[str]:
                return BuiltinGates.dacflow_validate_merge(self, branch, changes)

            @hookimpl
            def dacflow_after_commit(self, branch: str, changes: RefChange) -> None:
                BuiltinGates.dacflow_after_commit(self, branch, changes)

            @hookimpl
            def dacflow_after_merge(self, branch: str, changes: RefChange) -> None:
                BuiltinGates.dacflow_after_merge(self, branch, changes)

        _BUILTIN = Builtin
    return _BUILTIN(config)


# -- the gatekeeper: where moves are checked -----------------------------------------------------------------------
_VERBS = {"commit": "the commit to", "merge": "the merge into", "transfer": "the transfer into", "delete": "deleting"}


class Gatekeeper:
    """The gates and plugins guarding one repository's branches, read once per operation."""

    def __init__(self, repo: Repository, config: GateConfig, hooks: Hooks | None) -> None:
        self.repo, self.config, self.hooks = repo, config, hooks

    @classmethod
    def load(cls, repo: Repository) -> Gatekeeper:
        """Read the gate config (one request) and build the plugin manager only if anything can veto or notify."""
        config = gate_config(repo)
        from . import hooks

        if config.empty and not hooks.entry_point_plugins() and not hooks._registered:
            return cls(repo, config, None)
        return cls(repo, config, hooks.Hooks([("dacflow.gates", _builtin_plugin(config))], config.plugins))

    @property
    def active(self) -> bool:
        return self.hooks is not None

    def _refuse(self, action: str, branch: str, old: str | None, new: str | None, reasons: list[str]) -> None:
        verb = _VERBS.get(action, action)
        raise GateRejectedError(
            f"gates refused {verb} {branch} for {len(reasons)} reason(s): {'; '.join(reasons)}",
            reasons=reasons,
            branch=branch,
            action=action,
            head=old,
            refused=new,
        )

    def check(self, action: str, branch: str, old: str | None, new: str, source: str = "") -> RefChange | None:
        """Validate moving `branch` from `old` to `new` (action commit, merge or transfer); raise
        `GateRejectedError` listing every reason, else return the change (for `after`)."""
        if self.hooks is None:
            return None
        from .hooks import VALIDATE_COMMIT, VALIDATE_MERGE, RefChange

        ch = RefChange(self.repo, branch, old, new, action, source)
        kwargs: dict[str, Any] = dict(repo=self.repo, branch=branch, old=old, new=new, commit=ch.commit, changes=ch)
        if action == "commit":
            reasons = self.hooks.validate(VALIDATE_COMMIT, **kwargs)
        else:
            reasons = self.hooks.validate(VALIDATE_MERGE, **kwargs, source=source or new)
        if reasons:
            self._refuse(action, branch, old, new, reasons)
        return ch

    def check_forced(self, branch: str, old: str | None, new: str) -> None:
        """Refuse a transfer that would drop commits from a protected branch (a forced, non-fast-forward move)."""
        if old is not None and self.config.is_protected(branch):
            self._refuse("transfer", branch, old, new, [
                f"branch {branch!r} is protected: a forced update that drops its commits is refused"
            ])  # fmt: skip

    def check_quarantine(self, branch: str) -> None:
        """Refuse a merge whose conflicts would be committed onto a protected quarantine branch."""
        if self.config.is_protected(branch):
            self._refuse("commit", branch, None, None, [
                f"branch {branch!r} is protected and cannot take a merge's quarantined conflicts"
            ])  # fmt: skip

    def check_delete(self, branch: str) -> None:
        if self.config.is_protected(branch):
            self._refuse("delete", branch, None, None, [f"branch {branch!r} is protected (unprotect it first)"])

    def after(self, ch: RefChange | None) -> None:
        """Run the after-commit or after-merge hooks for a move that happened (failures are only logged)."""
        if self.hooks is None or ch is None:
            return
        from .hooks import AFTER_COMMIT, AFTER_MERGE

        kwargs: dict[str, Any] = dict(
            repo=self.repo, branch=ch.branch, old=ch.old, new=ch.new, commit=ch.commit, changes=ch
        )
        if ch.action == "commit":
            self.hooks.notify(AFTER_COMMIT, **kwargs)
        else:
            self.hooks.notify(AFTER_MERGE, **kwargs, source=ch.source or ch.new)


def audit(repo: Repository, ref: str, branch: str) -> list[str]:
    """The reasons the gates of `branch` would refuse moving it to `ref` by a merge (a dry run; nothing moves).

    Exact for a fast-forward (e.g. a staging branch made from `branch`); for diverged branches it checks `ref`'s
    content against `branch`'s head, not the merge commit."""
    from .hooks import VALIDATE_MERGE, RefChange

    keeper = Gatekeeper.load(repo)
    if keeper.hooks is None:
        return []
    old, new = repo.head(branch), repo.resolve(ref)
    ch = RefChange(repo, branch, old, new, "merge", ref)
    return keeper.hooks.validate(
        VALIDATE_MERGE, repo=repo, branch=branch, old=old, new=new, commit=ch.commit, changes=ch, source=ref
    )


__all__ = [
    "GATES_KEY",
    "KINDS",
    "BuiltinGates",
    "GateConfig",
    "Gatekeeper",
    "add_gate",
    "add_plugin",
    "audit",
    "edit_config",
    "gate_config",
    "make_gate",
    "protect",
    "remove_gate",
    "remove_plugin",
    "run_gates",
    "schema_contract",
    "unprotect",
]
