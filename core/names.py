"""Validation of untrusted names in one place: path elements from manifests and ref names (DESIGN §5.5).

A tree read from a store may have been written by anyone; nothing in it is trusted until it passes here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from .errors import InvalidRefNameError, UnsafePathError

#: The folder dacflow keeps in working directories; never part of a snapshot and never written by a tree.
META_DIR = ".dacflow"
MAX_NAME_BYTES = 255
MAX_TREE_DEPTH = 256
MAX_REF_BYTES = 200

_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._\-/]*$")


def check_name(name: object, *, where: str = "") -> str:
    """Return `name` if it is one safe path element, else raise `UnsafePathError` naming it."""
    ctx = f" in {where}" if where else ""
    if not isinstance(name, str):
        raise UnsafePathError(f"entry name {name!r}{ctx} is not a string", name=repr(name))
    problem = None
    if name == "":
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is a relative step"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif "\x00" in name:
        problem = "contains a NUL byte"
    elif name == META_DIR:
        problem = f"is dacflow's own metadata folder {META_DIR!r}"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        problem = f"is longer than {MAX_NAME_BYTES} bytes"
    elif any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in name):
        problem = "contains a control character"
    elif not _is_utf8(name):
        problem = "is not valid UTF-8"
    if problem:
        raise UnsafePathError(f"unsafe entry name {name!r}{ctx}: it {problem}", name=name)
    return name


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_names(names: Iterable[str], *, where: str = "") -> None:
    """Check every name and that no two are equal after Unicode normalisation (NFC/NFD twins)."""
    seen: dict[str, str] = {}
    for name in names:
        check_name(name, where=where)
        folded = unicodedata.normalize("NFC", name)
        if folded in seen:
            other = seen[folded]
            what = "appears twice" if other == name else f"and {other!r} are the same name in another Unicode form"
            raise UnsafePathError(f"unsafe tree{' ' + where if where else ''}: {name!r} {what}", name=name)
        seen[folded] = name


def split_path(path: str) -> list[str]:
    """Split a repository-relative path ('a/b/c') into checked elements; '' or '/' is the root."""
    parts = [p for p in path.strip("/").split("/") if p]
    for part in parts:
        check_name(part, where=repr(path))
    # MAX_TREE_DEPTH directories below the root, plus the name inside the deepest one (as snapshot stores).
    if len(parts) > MAX_TREE_DEPTH + 1:
        raise UnsafePathError(f"path {path!r} is deeper than {MAX_TREE_DEPTH} levels", name=path)
    return parts


def check_ref_name(name: str, kind: str = "branch") -> str:
    """Return a valid branch or tag name, or raise `InvalidRefNameError` saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise InvalidRefNameError(f"{kind} name must not be empty", name=name)
    if len(name.encode()) > MAX_REF_BYTES:
        raise InvalidRefNameError(f"{kind} name {name!r} is longer than {MAX_REF_BYTES} bytes", name=name)
    if (
        not _REF_RE.fullmatch(name)  # not match: "$" would let a trailing newline through
        or ".." in name
        or "//" in name
        or name.endswith(("/", ".", ".lock"))
        or any(part.startswith(".") for part in name.split("/"))
    ):
        raise InvalidRefNameError(
            f"invalid {kind} name {name!r}: use letters, digits, '_', '-', '.', '/' "
            "(not '..', not starting a part with '.', not ending in '/', '.' or '.lock')",
            name=name,
        )
    return name
