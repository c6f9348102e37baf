"""Three-way, cell-level merge of two versions of a table against their merge base.

Each side's net change from the base is computed from changesets (cost follows the change). A key changed on
one side only takes that side's row. A key changed on both merges column by column: a cell changed on one
side takes that change, a cell changed identically on both is fine, a cell changed differently is a conflict;
a row deleted on one side and changed on the other is a row conflict (column "*"). A policy resolves
conflicts: "fail" (none), "ours", "theirs", "latest:<column>" (the side whose row has the greater value there),
a dict of per-column policies ("*" for the rest), or a callable. What a policy leaves unresolved is reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from ..objects import TableObject
from ..odb import PackWriter
from .diff import EXISTS_AFTER, EXISTS_BEFORE, net_changes
from .engine import (
    SchemaConflictError,
    TableIO,
    WriteStats,
    changeset_schema,
    conform,
    schema_from_text,
    schema_to_text,
)
from .rows import BEFORE, OP, OP_DELETE, OP_INSERT, OP_UPDATE, values_equal

#: A policy callable returns this to leave a conflict unresolved.
UNRESOLVED = object()
CONFLICT_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("key", pa.string()),
        ("column", pa.string()),
        ("base", pa.string()),
        ("ours", pa.string()),
        ("theirs", pa.string()),
        ("resolved", pa.bool_()),
        ("resolution", pa.string()),
    ]
)

Policy = str | Callable[[dict[str, Any]], Any] | Mapping[str, Any]


def check_policy(policy: Policy) -> None:
    """Reject a malformed policy before any work is done."""
    if callable(policy):
        return
    if isinstance(policy, Mapping):
        for col, rule in policy.items():
            if not isinstance(col, str):
                raise UsageError(f"per-column policy keys must be column names, got {col!r}")
            check_policy(rule)
        return
    if policy in ("fail", "ours", "theirs") or (
        isinstance(policy, str) and policy.startswith("latest:") and len(policy) > 7
    ):
        return
    raise UsageError(
        f"unknown merge policy {policy!r}: use fail, ours, theirs, latest:<column>, "
        "a dict of per-column policies, or a callable"
    )


def _rule(policy: Policy, column: str) -> Any:
    if isinstance(policy, Mapping):
        return policy.get(column, policy.get("*", "fail"))
    return policy


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


@dataclass
class TableMerge:
    """The merged version of one table and the conflicts met on the way."""

    table: TableObject | None
    conflicts: list[dict[str, Any]]
    changed_rows: int = 0

    @property
    def unresolved(self) -> list[dict[str, Any]]:
        return [c for c in self.conflicts if not c["resolved"]]


def merge_table(
    io_: TableIO,
    writer: PackWriter,
    name: str,
    base: TableObject | None,
    ours: TableObject,
    theirs: TableObject,
    policy: Policy,
) -> TableMerge:
    """Merge `theirs` into `ours` from `base`; return the new version of ours (a changeset on top of it)."""
    if ours.key != theirs.key:
        raise SchemaConflictError(
            f"table {name!r}: the key is {list(ours.key)} on one side and {list(theirs.key)} on the other", table=name
        )
    key = list(ours.key)
    schema = _merged_schema(name, schema_from_text(ours.schema), schema_from_text(theirs.schema))
    values = [f.name for f in schema if f.name not in key]
    mine = conform(net_changes(io_, base, ours), _net_schema(schema, key))
    other = conform(net_changes(io_, base, theirs), _net_schema(schema, key))
    if len(other) == 0:
        return TableMerge(ours, [])
    # Each key theirs changed, with ours' change (if any) beside it.
    marker = "__dacflow_ours"
    mine_m = mine.append_column(marker, pa.array(np.ones(len(mine), bool)))
    mine_m = mine_m.rename_columns([c if c in key else "o." + c for c in mine_m.column_names])
    joined = other.join(mine_m, keys=key, join_type="left outer")
    both = pc.fill_null(joined.column("o." + marker), False).to_numpy(zero_copy_only=False)
    t_exists = joined.column(EXISTS_AFTER).to_numpy(zero_copy_only=False)
    o_exists_changed = pc.fill_null(joined.column("o." + EXISTS_AFTER), False).to_numpy(zero_copy_only=False)
    b_existed = joined.column(EXISTS_BEFORE).to_numpy(zero_copy_only=False)
    # Ours' current row: its change if it made one, else the base row (what theirs calls "before").
    o_exists = np.where(both, o_exists_changed, b_existed)
    ours_val = {v: pc.if_else(pa.array(both), joined.column("o." + v), joined.column(BEFORE + v)) for v in values}
    theirs_val = {v: joined.column(v) for v in values}
    base_val = {v: joined.column(BEFORE + v) for v in values}
    conflicts: list[dict[str, Any]] = []
    keys_py = joined.select(key).to_pylist() if both.any() else []
    result_exists = t_exists.copy()
    result = dict(theirs_val)  # a key only theirs changed takes theirs' row
    # Rows: a delete on one side against a change on the other is a row conflict (column "*").
    rule = _rule(policy, "*")
    row_overrides: dict[int, dict[str, Any] | None] = {}
    for i in np.flatnonzero(both & (t_exists != o_exists)):
        ours_row = {v: ours_val[v][i].as_py() for v in values} if o_exists[i] else None
        theirs_row = {v: theirs_val[v][i].as_py() for v in values} if t_exists[i] else None
        base_row = {v: base_val[v][i].as_py() for v in values} if b_existed[i] else None
        choice = _resolve(rule, name, keys_py[i], "*", base_row, ours_row, theirs_row, ours_row, theirs_row)
        conflicts.append(
            _conflict(
                name,
                keys_py[i],
                "*",
                base_row,
                ours_row,
                theirs_row,
                choice is not UNRESOLVED,
                _label(rule, choice, ours_row, theirs_row),
            )
        )
        if choice is UNRESOLVED or choice is ours_row:
            choice = ours_row  # unresolved: ours stays as it is (quarantine or failure decides the rest)
        if choice is not theirs_row:
            row_overrides[int(i)] = choice
    for j, row in row_overrides.items():
        result_exists[j] = row is not None
    # Cells: both sides keep the row and both changed it.
    cell_rows = both & t_exists & o_exists
    for v in values:
        o, t, b = ours_val[v], theirs_val[v], base_val[v]
        eq_bo = values_equal(b, o) & b_existed
        eq_bt = values_equal(b, t) & b_existed
        merged = pc.if_else(pa.array(eq_bo), t, o)  # a one-sided change wins; otherwise ours, unless resolved
        clash = cell_rows & ~values_equal(o, t) & ~eq_bo & ~eq_bt
        rule = _rule(policy, v)
        overrides: dict[int, Any] = {}
        for i in np.flatnonzero(clash):
            ours_c, theirs_c = o[i].as_py(), t[i].as_py()
            base_c = b[i].as_py() if b_existed[i] else None
            choice = _resolve(
                rule,
                name,
                keys_py[i],
                v,
                base_c,
                ours_c,
                theirs_c,
                {w: ours_val[w][i].as_py() for w in values},
                {w: theirs_val[w][i].as_py() for w in values},
            )
            resolved = choice is not UNRESOLVED
            conflicts.append(
                _conflict(
                    name, keys_py[i], v, base_c, ours_c, theirs_c, resolved, _label(rule, choice, ours_c, theirs_c)
                )
            )
            if resolved:
                overrides[int(i)] = choice
        merged = _replace(merged, overrides)
        column = pc.if_else(pa.array(cell_rows), merged, result[v])
        result[v] = _replace(column, {i: (row or {}).get(v) for i, row in row_overrides.items()})
    # What changes for ours: rows whose merged state differs from ours' current state.
    differs = result_exists != o_exists
    for v in values:
        differs |= result_exists & o_exists & ~values_equal(result[v], ours_val[v])
    if not differs.any():
        return TableMerge(ours, conflicts)
    sel = pa.array(differs)
    ops = np.where(~result_exists, OP_DELETE, np.where(o_exists, OP_UPDATE, OP_INSERT)).astype(np.int8)
    cols: dict[str, Any] = {k: joined.column(k) for k in key}
    cols[OP] = pa.array(ops)
    for v in values:
        after = pc.if_else(pa.array(result_exists), result[v], pa.nulls(len(joined), schema.field(v).type))
        before = pc.if_else(pa.array(o_exists), ours_val[v], pa.nulls(len(joined), schema.field(v).type))
        cols[v] = after
        cols[BEFORE + v] = before
    change = pa.table(cols).filter(sel)
    change = conform(change, changeset_schema(schema, key))
    from .rows import sort_by_key

    change = sort_by_key(change, key)
    stats = WriteStats()
    run = io_.write_run(writer, change, key, dict(ours.params), stats)
    ins = int(((ops == OP_INSERT) & differs).sum())
    dels = int(((ops == OP_DELETE) & differs).sum())
    new = TableObject(
        schema_to_text(schema), ours.key, ours.rows + ins - dels, ours.base, ours.changes + (run,), ours.params
    )
    return TableMerge(new, conflicts, int(differs.sum()))


def _replace(arr: pa.ChunkedArray | pa.Array, values: Mapping[int, Any]) -> pa.Array:
    """`arr` with the positions in `values` set to those Python values."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not values:
        return arr
    mask = np.zeros(len(arr), dtype=bool)
    order = sorted(values)
    mask[order] = True
    try:
        replacement = pa.array([values[i] for i in order], type=arr.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise UsageError(f"a merge policy returned a value that does not fit the column ({exc})") from None
    return pc.replace_with_mask(arr, pa.array(mask), replacement)


def _net_schema(schema: pa.Schema, key: Sequence[str]) -> pa.Schema:
    fields = [schema.field(k) for k in key] + [pa.field(EXISTS_BEFORE, pa.bool_()), pa.field(EXISTS_AFTER, pa.bool_())]
    for f in schema:
        if f.name not in key:
            fields += [f, pa.field(BEFORE + f.name, f.type)]
    return pa.schema(fields)


def _merged_schema(name: str, ours: pa.Schema, theirs: pa.Schema) -> pa.Schema:
    fields = list(ours)
    for f in theirs:
        if f.name in ours.names:
            if not ours.field(f.name).type.equals(f.type):
                raise SchemaConflictError(
                    f"table {name!r}: column {f.name!r} is {ours.field(f.name).type} on one side and {f.type} "
                    "on the other",
                    table=name,
                    column=f.name,
                )
        else:
            fields.append(pa.field(f.name, f.type, nullable=True))
    return pa.schema(fields)


def _resolve(
    rule: Any,
    table: str,
    key: dict[str, Any],
    column: str,
    base: Any,
    ours: Any,
    theirs: Any,
    ours_row: Any,
    theirs_row: Any,
) -> Any:
    if callable(rule):
        return rule({"table": table, "key": key, "column": column, "base": base, "ours": ours, "theirs": theirs})
    if rule == "ours":
        return ours
    if rule == "theirs":
        return theirs
    if isinstance(rule, str) and rule.startswith("latest:"):
        col = rule[7:]
        o = ours_row.get(col) if isinstance(ours_row, dict) else None
        t = theirs_row.get(col) if isinstance(theirs_row, dict) else None
        if o is None or t is None:
            return UNRESOLVED
        return theirs if t > o else ours
    return UNRESOLVED


def _label(rule: Any, choice: Any, ours: Any, theirs: Any) -> str:
    if choice is UNRESOLVED:
        return ""
    if callable(rule):
        return "callable"
    if isinstance(rule, str) and rule.startswith("latest:"):
        return "theirs" if choice is theirs and choice is not ours else "ours"
    return str(rule)


def _conflict(
    table: str, key: dict[str, Any], column: str, base: Any, ours: Any, theirs: Any, resolved: bool, resolution: str
) -> dict[str, Any]:
    return {
        "table": table,
        "key": _json(key),
        "column": column,
        "base": _json(base),
        "ours": _json(ours),
        "theirs": _json(theirs),
        "resolved": resolved,
        "resolution": resolution,
    }


def conflicts_table(conflicts: list[dict[str, Any]]) -> pa.Table:
    """The conflict report as an Arrow table (values as JSON text, since columns differ in type)."""
    return pa.Table.from_pylist(conflicts, schema=CONFLICT_SCHEMA)
