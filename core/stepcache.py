"""The step cache: skip a pipeline step whose name, code, input data and parameters were seen before (DESIGN §8).

A step's **key** is the BLAKE3 hash of canonical JSON holding its name, a fingerprint of its code, the *content*
of each input (the root tree id of the input commit, or the id of the table / path object it selects) and its
parameters. Keying inputs on content rather than on commit ids means that re-committing identical data (a
re-snapshot, a transfer, a restored branch) still hits, while any change to the data misses. The key maps to the
step's output commit through a ref `refs/cache/<key>` (created by compare-and-swap, so racing runs of one step
record exactly one output), plus a small versioned JSON record `cache/<key>.json` saying what the entry is.
Cache refs are gc roots: a cached output stays readable after its branch is gone.

Three ways in: `cached_step(...)` (a context manager), `@step(...)` (a decorator for plain functions) and the
engine shells built on them (Airflow `dac_step` and `cache=True` operators). See docs/stepcache.md.
"""

from __future__ import annotations

import ast
import contextvars
import functools
import inspect
import json
import logging
import os
import sys
import textwrap
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import blake3

from .errors import (
    CorruptObjectError,
    DacflowError,
    KeyNotFoundError,
    ObjectNotFoundError,
    RefConflictError,
    RefNotFoundError,
    UsageError,
)
from .locks import RepoLock
from .names import META_DIR, split_path
from .objects import LINK, Commit, Tree, canonical_json, hash_bytes, is_object_id, utc_now
from .records import decode_record
from .refs import BRANCHES
from .repository import Repository, default_author
from .stores.base import OVERWRITE

log = logging.getLogger(__name__)

#: The ref kind of cache entries: `refs/cache/<key>` -> output commit.
CACHE = "cache"
#: Where the record of an entry lives: `cache/<key>.json`.
RECORD_PREFIX = "cache/"
KEY_VERSION = 1
RECORD_VERSION = 1
FINGERPRINT_VERSION = 1
LINEAGE = "dacflow.lineage"
MAX_RESULT_BYTES = 64 * 1024  # a body's return value is kept in the record only up to this size (as JSON)
_ANCESTRY_LIMIT = 10_000  # commits walked to decide whether a restore can fast-forward


# -- code fingerprints --------------------------------------------------------------------------------------------
def code_fingerprint(fn: Any, deps: Sequence[Any] = ()) -> str:
    """BLAKE3 (hex) of a function's normalised source plus declared dependencies (functions, modules, strings).

    Comments, blank lines, indentation, decorators and the docstring do not count; any other edit does. Code the
    function calls is not followed: name it in `deps` (e.g. `deps=[helper, "model-v3"]`). Without source (a lambda,
    a REPL function) the bytecode and constants are hashed instead."""
    kind, text = _code_text(fn)
    doc = {"v": FINGERPRINT_VERSION, "kind": kind, "code": text, "deps": [_dep(d) for d in deps]}
    return hash_bytes(canonical_json(doc))


def _target(fn: Any) -> Any:
    """The plain function behind decorators, bound methods, Airflow task objects and callable instances."""
    fn = inspect.unwrap(fn) if callable(fn) else fn
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    inner = getattr(fn, "function", None)  # an Airflow @task object keeps the user's function here
    if callable(inner) and not isinstance(fn, types.FunctionType):
        return _target(inner)
    if not isinstance(fn, (types.FunctionType, functools.partial, type)) and callable(fn):
        return type(fn).__call__
    return fn


def _code_text(fn: Any) -> tuple[str, str]:
    fn = _target(fn)
    if isinstance(fn, functools.partial):
        kind, text = _code_text(fn.func)
        return kind, f"{text}\npartial{fn.args!r}{sorted(fn.keywords.items())!r}"
    if not callable(fn):
        raise UsageError(f"cannot fingerprint {type(fn).__name__} {fn!r}: pass a function or a fingerprint string")
    if getattr(fn, "__name__", "") != "<lambda>":
        try:
            source = textwrap.dedent(inspect.getsource(fn))
            tree = ast.parse(source)
        except (OSError, TypeError, SyntaxError):
            pass
        else:
            node = next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
            if node is not None:
                node.decorator_list = []
                body = node.body
                first = body[0].value if body and isinstance(body[0], ast.Expr) else None
                if isinstance(first, ast.Constant) and isinstance(first.value, str) and len(body) > 1:
                    node.body = body[1:]  # the docstring does not change what the code does
                return "source", ast.unparse(node)
            if tree.body and isinstance(tree.body[0], ast.ClassDef):
                return "source", ast.unparse(tree.body[0])
    code = getattr(fn, "__code__", None)
    if code is None:
        raise UsageError(f"cannot fingerprint {fn!r}: it has neither source nor bytecode; pass a fingerprint string")
    return "bytecode", _bytecode_text(code)


def _bytecode_text(code: types.CodeType) -> str:
    consts = [_bytecode_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    parts = [f"py{sys.version_info[0]}.{sys.version_info[1]}", code.co_code.hex(), *consts, *code.co_names]
    return "\n".join([*parts, *code.co_varnames])


def _dep(dep: Any) -> str:
    if isinstance(dep, str):
        return dep
    if isinstance(dep, types.ModuleType):
        try:
            return hash_bytes(inspect.getsource(dep).encode())
        except (OSError, TypeError):
            return f"module {dep.__name__} {getattr(dep, '__version__', '')}"
    if callable(dep):
        return code_fingerprint(dep)
    raise UsageError(f"a step dependency must be a function, a module or a version string, not {type(dep).__name__}")


# -- inputs -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ResolvedInput:
    """One input of a step as it enters the key: its `content` id, plus where it came from (for lineage).

    `kind` is "commit" (a commit of this repository, `content` = its root tree or the selected `path`), "local"
    (a local file or directory, `content` = digest of its bytes) or "external" (a digest the caller computed)."""

    ref: str
    content: str
    kind: str = "commit"
    commit: str | None = None
    path: str | None = None
    exclude: str | None = None

    def key_part(self) -> dict[str, Any]:
        part = {"content": self.content, "kind": self.kind, "path": self.path, "exclude": self.exclude}
        return {k: v for k, v in part.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in {**self.key_part(), "ref": self.ref, "commit": self.commit}.items() if v is not None}


def content_id(repo: Repository, commit: str, path: str | None = None) -> str:
    """The id of what `commit` holds at `path`: the root tree, or the table / file / directory object there."""
    root = repo.odb.get_commit(commit).tree
    if not path:
        return root
    entry = repo.entry(commit, path)
    if entry.kind == LINK:  # a link's ref is its target text, not an object id
        return hash_bytes(f"link:{entry.ref}".encode())
    return entry.ref


def content_without(repo: Repository, commit: str, path: str) -> str:
    """A digest of `commit`'s root tree with `path` left out: the part of a branch a table overwrite keeps."""

    def strip(tree_id: str, parts: list[str]) -> str:
        tree = repo.odb.get_tree(tree_id)
        entry = tree.get(parts[0])
        if entry is None:
            return tree_id
        rest = [e for e in tree if e.name != parts[0]]
        if len(parts) > 1 and entry.is_dir:
            rest.append(replace(entry, ref=strip(entry.ref, parts[1:])))
        elif len(parts) > 1:
            return tree_id
        return hash_bytes(Tree.of(rest).encode())

    return strip(repo.odb.get_commit(commit).tree, split_path(path) or [""])


def path_digest(path: str | os.PathLike[str]) -> str:
    """BLAKE3 of a local file's bytes, or of a directory's sorted (name, digest) listing (links by target)."""
    root = os.fspath(path)
    if os.path.isfile(root):
        return _file_digest(root)
    if not os.path.isdir(root):
        raise UsageError(f"step input {root!r} is neither a file nor a directory", path=root)
    listing = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != META_DIR)
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            digest = f"link:{os.readlink(full)}" if os.path.islink(full) else _file_digest(full)
            listing.append([rel, digest])
    listing.sort()
    return hash_bytes(canonical_json({"v": 1, "files": listing}))


def _file_digest(path: str) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def resolve_input(repo: Repository, value: Any) -> ResolvedInput:
    """Turn a step input into its content: a ref (`"branch"`, `"tag"`, a commit id, `"ref:table-or-path"`), a
    `CommitResult`/`StepResult`/`MergeResult` (anything with `.commit`), a Flyte `Snapshot` (its content id), a
    local `pathlib.Path`, or a `ResolvedInput` as is."""
    if isinstance(value, ResolvedInput):
        return value
    if isinstance(value, os.PathLike):
        return ResolvedInput(os.fspath(value), path_digest(value), "local")
    content = getattr(value, "content", None)
    commit = getattr(value, "commit", None)
    if isinstance(commit, str) and is_object_id(content):
        selected = getattr(value, "table", None) or getattr(value, "path", None)
        return ResolvedInput(str(getattr(value, "url", "") or commit), str(content), "commit", commit, selected)
    if isinstance(commit, str):
        value = commit
    if not isinstance(value, str):
        raise UsageError(f"a step input must be a ref, a commit result or a pathlib.Path, not {type(value).__name__}")
    ref, _, path = value.partition(":")
    cid = repo.resolve(ref)
    norm = "/".join(split_path(path)) if path else None
    return ResolvedInput(value, content_id(repo, cid, norm), "commit", cid, norm or None)


def resolve_inputs(repo: Repository, inputs: Mapping[str, Any] | None) -> dict[str, ResolvedInput]:
    """Resolve every input; a list or tuple value becomes inputs `name[0]`, `name[1]`, ..."""
    out: dict[str, ResolvedInput] = {}
    for name, value in (inputs or {}).items():
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                out[f"{name}[{i}]"] = resolve_input(repo, item)
        else:
            out[str(name)] = resolve_input(repo, value)
    return out


# -- keys ---------------------------------------------------------------------------------------------------------
def step_key(name: str, code: str | None, inputs: Mapping[str, Any], params: Any = None) -> str:
    """The cache key (64 hex): BLAKE3 of canonical JSON of the step name, code fingerprint, inputs and parameters.

    `inputs` maps input names to ids (or `ResolvedInput`s: their content counts, not where it came from);
    `params` must be JSON (str, number, bool, None, lists, dicts with string keys)."""
    if not isinstance(name, str) or not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise UsageError(f"a step name must be 1-200 printable characters, got {name!r}")
    parts = {k: (v.key_part() if isinstance(v, ResolvedInput) else v) for k, v in inputs.items()}
    doc = {"type": "dacflow.step", "v": KEY_VERSION, "name": name, "code": code, "inputs": parts, "params": params}
    try:
        data = canonical_json(doc)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"step {name!r}: parameters and inputs must be plain JSON values ({exc})", step=name) from None
    return hash_bytes(data)


# -- entries ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CacheEntry:
    """A cached step: its key, the output commit its ref points at, and its record (None if unreadable)."""

    key: str
    output: str
    record: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def step(self) -> str | None:
        return self.record.get("step") if self.record else None

    @property
    def result(self) -> Any:
        """What the step's body returned (JSON), if the record kept it and belongs to this output."""
        if self.record and self.record.get("output") == self.output:
            return self.record.get("result")
        return None

    def to_json(self) -> dict[str, Any]:
        rec = self.record or {}
        inputs = {k: (v.get("commit") or v.get("ref")) for k, v in (rec.get("inputs") or {}).items()}
        return {
            "key": self.key,
            "step": rec.get("step"),
            "output": self.output,
            "created": rec.get("created"),
            "inputs": inputs,
            "params": rec.get("params"),
            "code": rec.get("code"),
            "engine": rec.get("engine"),
            "output_branch": rec.get("output_branch"),
            "problem": self.problem,
        }


def record_key(key: str) -> str:
    return f"{RECORD_PREFIX}{key}.json"


def _check_key(key: str) -> str:
    if not is_object_id(key):
        raise UsageError(f"{key!r} is not a step cache key (64 hex digits)", key=key)
    return key


def read_record(repo: Repository, key: str) -> dict[str, Any] | None:
    """The record of entry `key`, or None if there is none; an unknown version raises `UnsupportedFormatError`."""
    try:
        data = repo.store.get(record_key(_check_key(key)))
    except KeyNotFoundError:
        return None
    return decode_record(data, "dacflow.cache", RECORD_VERSION, f"step cache record {key[:16]}", key=key)


def lookup(repo: Repository, key: str) -> CacheEntry | None:
    """The entry for `key`, or None if the step never ran (or its output commit is gone)."""
    output = repo.refs.get(CACHE, _check_key(key))
    if output is None:
        return None
    try:
        repo.odb.get_commit(output)
    except (ObjectNotFoundError, CorruptObjectError) as exc:
        log.warning("step cache entry %s points at an unreadable commit (%s); treating it as a miss", key[:16], exc)
        return None
    return _with_record(repo, key, output)


def _with_record(repo: Repository, key: str, output: str) -> CacheEntry:
    try:
        return CacheEntry(key, output, read_record(repo, key))
    except DacflowError as exc:
        return CacheEntry(key, output, None, exc.message)


def list_entries(repo: Repository) -> list[CacheEntry]:
    """Every cache entry with its record, oldest first (entries without a record last)."""
    entries = [_with_record(repo, k, c) for k, c in repo.refs.list(CACHE).items() if is_object_id(k)]
    return sorted(entries, key=lambda e: ((e.record or {}).get("created") or "~", e.key))


def clear(repo: Repository, keys: Sequence[str] = (), *, step: str | None = None) -> list[str]:
    """Delete cache entries: those whose key starts with one of `keys`, those of `step`, or (neither) all.

    Returns the keys deleted. A key prefix matching nothing or several entries raises."""
    entries = list_entries(repo)
    chosen: dict[str, CacheEntry] = {}
    for prefix in keys:
        hits = [e for e in entries if e.key.startswith(prefix.lower())]
        if len(prefix) < 4 or not hits:
            raise RefNotFoundError(f"no step cache entry matches {prefix!r} (give 4+ hex digits of a key)", ref=prefix)
        if len(hits) > 1:
            raise UsageError(f"{prefix!r} matches {len(hits)} cache entries; give more digits", ref=prefix)
        chosen[hits[0].key] = hits[0]
    if step is not None:
        chosen.update({e.key: e for e in entries if e.step == step})
    if not keys and step is None:
        chosen = {e.key: e for e in entries}
    for key in sorted(chosen):
        repo.refs.delete(CACHE, key)  # the ref first: the entry vanishes in one step
        repo.store.delete(record_key(key))
    log.info("cleared %d step cache entr%s", len(chosen), "y" if len(chosen) == 1 else "ies")
    return sorted(chosen)


# -- restoring an output ------------------------------------------------------------------------------------------
def _reaches(repo: Repository, start: str, target: str) -> bool:
    """True if `target` is `start` or one of its ancestors (walking at most `_ANCESTRY_LIMIT` commits)."""
    seen: set[str] = set()
    stack = [start]
    while stack and len(seen) < _ANCESTRY_LIMIT:
        cid = stack.pop()
        if cid == target:
            return True
        if cid not in seen:
            seen.add(cid)
            stack.extend(repo.odb.get_commit(cid).parents)
    return False


def restore(
    repo: Repository, branch: str, output: str, *, step: str = "", meta: Mapping[str, Any] | None = None
) -> str:
    """Make `branch` hold the cached `output` and return its new head. Never drops a commit from the branch.

    Missing branch: created at `output`. Same content already: left alone. Behind `output`: fast-forwarded.
    Otherwise a restore commit (tree of `output`, parents the head and `output`) is added on top, by CAS."""
    out_tree = repo.odb.get_commit(output).tree
    for _attempt in range(50):
        head, token = repo.refs.read(BRANCHES, branch)
        try:
            if head is None:
                repo.refs.swap(BRANCHES, branch, output, None)
                return output
            if head == output or repo.odb.get_commit(head).tree == out_tree:
                return head
            if _reaches(repo, output, head):
                repo.refs.swap(BRANCHES, branch, output, token)
                return output
            parents = (head,) if _reaches(repo, head, output) else (head, output)
            message = f"restore cached output of step {step}" if step else "restore cached step output"
            commit = Commit(out_tree, parents, message, default_author(), utc_now(), dict(meta or {}))
            with RepoLock(repo.store, exclusive=False, purpose="restore"), repo.odb.writer() as writer:
                cid = writer.add_object(commit)
                writer.flush()
                repo.refs.swap(BRANCHES, branch, cid, token)
            return cid
        except RefConflictError:
            continue
    raise RefConflictError(f"branch {branch!r} kept moving while restoring a cached output", ref=branch)


# -- the context manager ------------------------------------------------------------------------------------------
_CURRENT: contextvars.ContextVar[StepRun | None] = contextvars.ContextVar("dacflow_step", default=None)


def current_step() -> StepRun | None:
    """The step whose body is running now (in this thread or task), e.g. to read `.meta`; None outside one."""
    return _CURRENT.get()


def _output_of(repo: Repository, value: Any) -> str | None:
    """The commit a body's return value names: a commit id or ref, `.commit`, or a mapping's "commit"; else None."""
    commit = value.get("commit") if isinstance(value, Mapping) else getattr(value, "commit", value)
    return repo.resolve(commit) if isinstance(commit, str) else None


def jsonable(value: Any) -> Any:
    """`value` as plain JSON if it is small and JSON-able (`to_json()` is used when present), else None."""
    if hasattr(value, "to_json"):
        value = value.to_json()
    try:
        data = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return json.loads(data) if len(data) <= MAX_RESULT_BYTES else None


class StepRun:
    """One run of a cached step, as a context manager: `with cached_step(repo, "clean", inputs={"raw": "raw"}, code=fn,
    output_branch="clean") as s:` then `if not s.hit:` compute, write with `meta=s.meta`, and `s.done(result)`.

    On a hit `s.output` is the cached commit and `output_branch` is restored to it. On a miss the output is what
    `done()` was given, else the head of `output_branch` at exit; an exception records nothing. `code` is a
    function (fingerprinted with `deps`) or a fingerprint string; `force` recomputes and replaces the entry."""

    def __init__(
        self,
        repo: Repository,
        name: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        params: Any = None,
        code: Any = None,
        deps: Sequence[Any] = (),
        output_branch: str | None = None,
        engine: str = "python",
        lineage: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> None:
        self.repo, self.name, self.params = repo, name, params
        self.output_branch, self.engine, self.force = output_branch, engine, force
        self.lineage = {k: v for k, v in (lineage or {}).items() if k in ("pipeline", "run", "task")}
        self.code = code if code is None or isinstance(code, str) else code_fingerprint(code, deps)
        self.inputs = resolve_inputs(repo, inputs)
        self.key = step_key(name, self.code, self.inputs, params)
        self.hit = False
        self.output: str | None = None
        self.result: Any = None
        self.restored: str | None = None
        self.recorded = False
        self.seconds = 0.0
        self._done: Any = None
        self._discard = False
        self._t0 = 0.0
        self._token: contextvars.Token[StepRun | None] | None = None

    def __repr__(self) -> str:
        return f"StepRun({self.name!r}, key={self.key[:12]}, hit={self.hit})"

    @property
    def input_commits(self) -> list[str]:
        """The commits this step reads (lineage `inputs`), in input order, without repeats."""
        return list(dict.fromkeys(i.commit for i in self.inputs.values() if i.commit))

    @property
    def meta(self) -> dict[str, Any]:
        """Commit metadata for what the body writes: `dacflow.lineage` with engine, code, inputs and the key."""
        from .lineage import lineage_meta  # lineage imports this module for code_fingerprint

        return lineage_meta(
            self.engine,
            pipeline=self.lineage.get("pipeline"),
            run=self.lineage.get("run"),
            task=self.lineage.get("task", self.name),
            code=self.code,
            inputs=self.input_commits,
            step=self.key,
        )

    def done(self, output: Any, result: Any = None) -> None:
        """Declare the step's output: a commit id or ref, a `CommitResult`-like object or a mapping with "commit".
        `result` (default: `output`), as JSON, is kept in the record and handed back on later hits."""
        if self.hit:
            raise UsageError(f"step {self.name!r} was a cache hit; its body should not run (check `step.hit`)")
        self._done = (output, output if result is None else result)

    def discard(self) -> None:
        """Record nothing for this run (e.g. its output turned out to depend on more than its keyed inputs)."""
        self._discard = True

    def __enter__(self) -> StepRun:
        self._t0 = time.perf_counter()
        entry = None if self.force else lookup(self.repo, self.key)
        if entry is not None:
            self.hit, self.output, self.result = True, entry.output, entry.result
            if self.output_branch:
                self.restored = restore(self.repo, self.output_branch, entry.output, step=self.name, meta=self.meta)
            log.info(
                "step %s skipped: cache hit %s -> %s%s", self.name, self.key[:12], entry.output[:12],
                f" (restored on {self.output_branch})" if self.output_branch else "",
            )  # fmt: skip
        else:
            log.info("step %s: cache miss %s, running it", self.name, self.key[:12])
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        self.seconds = time.perf_counter() - self._t0
        if exc_type is not None:
            log.info("step %s failed (%s); nothing cached", self.name, exc_type.__name__)
            return
        if self.hit or self._discard:
            return
        output, result = self._done if self._done is not None else (None, None)
        commit = _output_of(self.repo, output)
        if commit is None and self.output_branch:
            commit = self.repo.head(self.output_branch)
        if commit is None:
            raise UsageError(
                f"step {self.name!r} finished without an output: call step.done(commit) or give output_branch",
                step=self.name,
            )
        self.output, self.result = commit, jsonable(result)
        self.recorded = self._record(commit)

    def _record(self, commit: str) -> bool:
        token = None
        current, current_token = self.repo.refs.read(CACHE, self.key)
        if current is not None:
            if not self.force and lookup(self.repo, self.key) is not None:
                log.info("step %s: another run cached %s first; keeping it", self.name, current[:12])
                return False
            token = current_token  # a broken entry (or force): replace it, still by CAS
        try:
            self.repo.refs.swap(CACHE, self.key, commit, token)
        except RefConflictError:
            log.info("step %s: another run cached this key meanwhile; keeping its output", self.name)
            return False
        doc = {
            "type": "dacflow.cache",
            "v": RECORD_VERSION,
            "key": self.key,
            "step": self.name,
            "code": self.code,
            "inputs": {k: v.to_json() for k, v in self.inputs.items()},
            "params": self.params,
            "output": commit,
            "output_branch": self.output_branch,
            "engine": self.engine,
            "lineage": self.lineage,
            "created": utc_now(),
            "seconds": round(self.seconds, 4),
        }
        if self.result is not None:
            doc["result"] = self.result
        self.repo.store.put(record_key(self.key), canonical_json(doc), OVERWRITE)  # only the ref's winner writes it
        log.info("step %s cached: %s -> %s", self.name, self.key[:12], commit[:12])
        return True


#: The context-manager entry point is the class itself: `with cached_step(repo, name, ...) as s:`.
cached_step = StepRun


# -- the decorator ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepResult:
    """What a `@step` function call gives back: the output commit, whether it came from the cache, and the
    body's return value (on a hit: its JSON form from the record, or None). Pass it to the next step as input."""

    name: str
    key: str
    commit: str
    hit: bool
    branch: str | None = None
    value: Any = None
    seconds: float = 0.0
    inputs: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.name,
            "key": self.key,
            "commit": self.commit,
            "hit": self.hit,
            "branch": self.branch,
            "seconds": round(self.seconds, 4),
        }


class StepFunction:
    """A plain function made a cached step by `@step`; calling it returns a `StepResult`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        repo: Repository | str | Callable[[], Repository],
        *,
        output_branch: str | None,
        inputs: Sequence[str] | Callable[[dict[str, Any]], Mapping[str, Any]],
        params: Callable[[dict[str, Any]], Any] | None,
        name: str | None,
        deps: Sequence[Any],
        force: bool,
    ) -> None:
        self.fn, self._repo, self.output_branch = fn, repo, output_branch
        self.signature = inspect.signature(fn)
        self.inputs, self.params, self.deps, self.force = inputs, params, tuple(deps), force
        self.name = name or fn.__qualname__
        if isinstance(inputs, str):
            raise UsageError(f"step {self.name!r}: inputs is a list of parameter names, e.g. inputs=[{inputs!r}]")
        if not callable(inputs):
            missing = [n for n in inputs if n not in self.signature.parameters]
            if missing:
                raise UsageError(f"step {self.name!r}: inputs {missing} are not parameters of {fn.__qualname__}")
        self.takes_meta = "meta" in self.signature.parameters
        functools.update_wrapper(self, fn)

    @functools.cached_property
    def code(self) -> str:
        return code_fingerprint(self.fn, self.deps)

    def repo(self) -> Repository:
        if isinstance(self._repo, str):
            self._repo = Repository.open(self._repo)
        elif not isinstance(self._repo, Repository):
            self._repo = self._repo()
        return self._repo

    def _split(self, arguments: dict[str, Any]) -> tuple[Mapping[str, Any], Any]:
        if callable(self.inputs):
            ins = dict(self.inputs(dict(arguments)))
            params = self.params(dict(arguments)) if self.params else {k: v for k, v in arguments.items()}
        else:
            ins = {n: arguments[n] for n in self.inputs}
            rest = {k: v for k, v in arguments.items() if k not in ins}
            params = self.params(dict(arguments)) if self.params else rest
        return ins, params

    def prepare(self, args: Sequence[Any], kwargs: Mapping[str, Any], **options: Any) -> tuple[StepRun, Any]:
        """The step run for these arguments (not entered yet) and the bound arguments its body will get."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k != "meta"}
        ins, params = self._split(arguments)
        run = cached_step(
            self.repo(), self.name, inputs=ins, params=params, code=self.code, output_branch=self.output_branch,
            force=self.force, **options,
        )  # fmt: skip
        return run, bound

    def run(self, args: Sequence[Any], kwargs: Mapping[str, Any], **options: Any) -> StepResult:
        """Call the step with `options` for `cached_step` (engine, lineage)."""
        run, bound = self.prepare(args, kwargs, **options)
        value = None
        with run:
            if not run.hit:
                for name in bound.arguments:
                    if name in run.inputs or f"{name}[0]" in run.inputs:
                        bound.arguments[name] = _body_value(bound.arguments[name], run, name)
                if self.takes_meta:
                    bound.arguments["meta"] = run.meta
                value = self.fn(*bound.args, **bound.kwargs)
                run.done(value, result=value)
        assert run.output is not None
        inputs = {k: v.commit or v.content for k, v in run.inputs.items()}
        got = run.result if run.hit else value
        return StepResult(self.name, run.key, run.output, run.hit, self.output_branch, got, run.seconds, inputs)

    def __call__(self, *args: Any, **kwargs: Any) -> StepResult:
        return self.run(args, kwargs)

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The cache key a call with these arguments has (resolving refs as they are now), without running it."""
        return self.prepare(args, kwargs)[0].key


def _body_value(value: Any, run: StepRun, name: str) -> Any:
    """What the body gets for an input: the resolved commit id for a ref or commit result (so it reads exactly the
    keyed data even if a branch moves meanwhile); paths and Flyte snapshots as given."""
    if isinstance(value, (list, tuple)):
        return type(value)(_one_value(v, run.inputs[f"{name}[{i}]"]) for i, v in enumerate(value))
    return _one_value(value, run.inputs[name])


def _one_value(value: Any, resolved: ResolvedInput) -> Any:
    if resolved.kind != "commit" or resolved.commit is None or getattr(value, "content", None) is not None:
        return value
    return resolved.commit


def step(
    repo: Repository | str | Callable[[], Repository],
    *,
    output_branch: str | None = None,
    inputs: Sequence[str] | Callable[[dict[str, Any]], Mapping[str, Any]] = (),
    params: Callable[[dict[str, Any]], Any] | None = None,
    name: str | None = None,
    deps: Sequence[Any] = (),
    force: bool = False,
) -> Callable[[Callable[..., Any]], StepFunction]:
    """Make a function a cached step. `inputs` names the parameters that are data (refs, commit results, paths):
    they are keyed on content and the body receives them as resolved commit ids; every other argument is a
    parameter, keyed on its JSON value. A parameter named `meta` receives the lineage metadata to pass to writes.

    The body returns its output commit (an id or a `CommitResult`), or writes to `output_branch`. The call returns
    a `StepResult`; on a hit the body does not run and `output_branch` is restored to the cached output."""

    def decorate(fn: Callable[..., Any]) -> StepFunction:
        return StepFunction(
            fn, repo, output_branch=output_branch, inputs=inputs, params=params, name=name, deps=deps, force=force
        )

    return decorate


__all__ = [
    "CACHE",
    "CacheEntry",
    "ResolvedInput",
    "StepFunction",
    "StepResult",
    "StepRun",
    "cached_step",
    "clear",
    "code_fingerprint",
    "content_id",
    "content_without",
    "current_step",
    "list_entries",
    "lookup",
    "path_digest",
    "resolve_input",
    "resolve_inputs",
    "restore",
    "step",
    "step_key",
]
