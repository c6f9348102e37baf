"""Versioned JSON records: the small objects beside the content-addressed store (published branches,
subscriptions, registries, gate configs, step-cache records) all start with a type and a format version."""

from __future__ import annotations

import json
from typing import Any

from .errors import CorruptObjectError, UnsupportedFormatError


def decode_record(data: bytes | str, kind: str, version: int, what: str, **where: Any) -> dict[str, Any]:
    """Parse a record `{"type": kind, "v": version, ...}`; `what` names it in errors, `where` (key=, path=) rides
    along. Not JSON or another type: `CorruptObjectError`. Another version: `UnsupportedFormatError`."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise CorruptObjectError(f"{what} is not valid JSON", **where) from None
    if not isinstance(doc, dict) or doc.get("type") != kind:
        raise CorruptObjectError(f"{what} is not a {kind} record", **where)
    if doc.get("v") != version:
        raise UnsupportedFormatError(
            f"{what} has format version {doc.get('v')!r}; this dacflow reads version {version} (upgrade dacflow)",
            version=doc.get("v"),
            **where,
        )
    return doc
