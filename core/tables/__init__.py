"""Tables: row-level versions, diffs and three-way merges (imports pyarrow; loaded only when tables are used).

Public surface: `TableDiff` (from `Repository.diff(a, b, table=...)`), `SchemaConflictError`, `TableInputError`,
`UNRESOLVED` (a merge-policy callable's "leave it") and `delta_for_training`.
"""

from __future__ import annotations

from .diff import TableDiff
from .engine import SchemaConflictError
from .merge import UNRESOLVED
from .rows import TableInputError

__all__ = ["UNRESOLVED", "SchemaConflictError", "TableDiff", "TableInputError"]
