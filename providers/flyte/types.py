"""Flyte literals for `Snapshot` and `Delta`, registered with flytekit's type engine on import.

flytekit imports this module through the `flytekit.plugins` entry point at the end of `import flytekit`, so a
task can declare `Snapshot` or `Delta` inputs and outputs with nothing else to do.

The literal is a map of strings. What the data *is* travels in plain entries (content id, table or path, format
version); where it *lives* (store URL, commit id, branch) travels in entries that carry `Literal.hash` set to the
content id. Flyte computes a task's cache key from its input literals after replacing every literal that has a
hash by that hash alone (flytekit `core/local_cache.py` `_recursive_hash_placement`; Flyte's backend catalog does
the same), so the key depends on the content and never on the store or the commit that holds it. The engine
resets the hash of the *top* literal after `to_literal` (`TypeEngine.to_literal` sets `lv.hash` from a
`HashMethod` annotation or None), which is why the hashes sit on the entries.
"""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from flytekit.core.context_manager import FlyteContext
from flytekit.core.type_engine import TypeEngine, TypeTransformer, TypeTransformerFailedError
from flytekit.models.literals import Literal, LiteralMap, Primitive, Scalar
from flytekit.models.types import LiteralType, SimpleType, TypeStructure

from .values import LITERAL_VERSION, Delta, Snapshot

T = TypeVar("T")

log = logging.getLogger(__name__)

SNAPSHOT_TAG = "dacflow.Snapshot"
DELTA_TAG = "dacflow.Delta"


def _text(value: str, hash_: str | None = None) -> Literal:
    return Literal(scalar=Scalar(primitive=Primitive(string_value=value)), hash=hash_)


def _map_type(tag: str) -> LiteralType:
    return LiteralType(map_value_type=LiteralType(simple=SimpleType.STRING), structure=TypeStructure(tag=tag))


def _entries(lv: Literal, what: str, required: tuple[str, ...]) -> dict[str, str]:
    """The string entries of a dacflow literal; refuse anything else with a one-line reason."""
    if lv.map is None:
        raise TypeTransformerFailedError(f"a {what} literal must be a map, got {type(lv.value).__name__}")
    out = {}
    for name, item in lv.map.literals.items():
        prim = item.scalar.primitive if item.scalar is not None else None
        if prim is None or prim.string_value is None:
            raise TypeTransformerFailedError(f"{what} literal entry {name!r} is not a string")
        out[name] = prim.string_value
    missing = [k for k in required if k not in out]
    if missing:
        raise TypeTransformerFailedError(f"{what} literal lacks {', '.join(missing)}")
    if out["v"] != LITERAL_VERSION:
        raise TypeTransformerFailedError(
            f"{what} literal has format version {out['v']}; this dacflow reads version {LITERAL_VERSION}: upgrade it"
        )
    return out


class _MapTransformer(TypeTransformer[T]):
    """What both transformers share: a string-map literal type marked with a structure tag."""

    tag = ""

    def get_literal_type(self, t: type[T]) -> LiteralType:
        return _map_type(self.tag)

    def guess_python_type(self, literal_type: LiteralType) -> type[T]:
        if literal_type.structure is not None and literal_type.structure.tag == self.tag:
            return self.python_type
        raise ValueError(f"{literal_type} is not a {self.name}")

    def _checked(self, value: Any) -> Any:
        if not isinstance(value, self.python_type):
            raise TypeTransformerFailedError(f"expected a {self.name}, got {type(value).__name__}")
        return value.with_content()


class SnapshotTransformer(_MapTransformer[Snapshot]):
    """`Snapshot` ⇄ a small map literal whose cache-relevant part is the content id (see the module docstring)."""

    tag = SNAPSHOT_TAG

    def __init__(self) -> None:
        super().__init__("dacflow Snapshot", Snapshot)

    def to_literal(
        self, ctx: FlyteContext, python_val: Snapshot, python_type: type[Snapshot], expected: LiteralType
    ) -> Literal:
        snap = self._checked(python_val)
        cid = str(snap.content)
        return Literal(
            map=LiteralMap(
                {
                    "v": _text(LITERAL_VERSION),
                    "content": _text(cid),
                    "table": _text(snap.table or ""),
                    "path": _text(snap.path or ""),
                    # where the content lives: carried, but keyed by the content id alone
                    "url": _text(snap.url, cid),
                    "commit": _text(snap.commit, cid),
                    "branch": _text(snap.branch or "", cid),
                }
            )
        )

    def to_python_value(self, ctx: FlyteContext, lv: Literal, expected_python_type: type[Snapshot]) -> Snapshot:
        e = _entries(lv, "dacflow Snapshot", ("v", "content", "url", "commit"))
        return Snapshot(
            url=e["url"],
            commit=e["commit"],
            table=e.get("table") or None,
            path=e.get("path") or None,
            branch=e.get("branch") or None,
            content=e["content"],
        )

    def to_html(self, ctx: FlyteContext, python_val: Snapshot, expected_python_type: type[Snapshot]) -> str:
        return f"<code>{python_val.short}</code>"


class DeltaTransformer(_MapTransformer[Delta]):
    """`Delta` ⇄ a map literal keyed by the table name and the table's content ids at both ends."""

    tag = DELTA_TAG

    def __init__(self) -> None:
        super().__init__("dacflow Delta", Delta)

    def to_literal(
        self, ctx: FlyteContext, python_val: Delta, python_type: type[Delta], expected: LiteralType
    ) -> Literal:
        d = self._checked(python_val)
        key = f"{d.table}:{d.base_content}..{d.target_content}"
        return Literal(
            map=LiteralMap(
                {
                    "v": _text(LITERAL_VERSION),
                    "table": _text(d.table),
                    "base_content": _text(d.base_content or ""),
                    "target_content": _text(d.target_content or ""),
                    "url": _text(d.url, key),
                    "base": _text(d.base, key),
                    "target": _text(d.target, key),
                }
            )
        )

    def to_python_value(self, ctx: FlyteContext, lv: Literal, expected_python_type: type[Delta]) -> Delta:
        e = _entries(lv, "dacflow Delta", ("v", "table", "base_content", "target_content", "url", "base", "target"))
        return Delta(e["url"], e["base"], e["target"], e["table"], e["base_content"], e["target_content"])

    def to_html(self, ctx: FlyteContext, python_val: Delta, expected_python_type: type[Delta]) -> str:
        return f"<code>{python_val.url} {python_val.table}: {python_val.base[:12]}..{python_val.target[:12]}</code>"


def register() -> None:
    """Register both transformers with flytekit's type engine (once; later calls do nothing)."""
    for transformer in (SnapshotTransformer(), DeltaTransformer()):
        try:
            TypeEngine.register(transformer)
        except ValueError:
            log.debug("%s already registered", transformer.name)


register()

__all__ = ["DeltaTransformer", "SnapshotTransformer", "register"]
