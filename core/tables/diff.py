"""Row-level difference between two versions of a table.

Versions that share a base run differ only by their changesets: the value a key has in version A is its last
write in A's changesets, or else (it was untouched in A since their common prefix) the before-image of its
first write in B's — so the diff reads changesets only, and costs what changed, not the table. Versions with
different bases (an overwrite or a compaction between them) are compared fragment by fragment, skipping every
fragment both share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..objects import TableObject
from .engine import TableIO, conform, schema_from_text
from .rows import BEFORE, LAYER, OP, OP_DELETE, OP_INSERT, latest, sort_by_key, values_equal

EXISTS_BEFORE, EXISTS_AFTER = "__dacflow_existed", "__dacflow_exists"


@dataclass
class TableDiff:
    """Rows inserted, updated (before and after) and deleted between two versions of a table."""

    key: list[str]
    inserted: pa.Table
    updated_before: pa.Table
    updated: pa.Table
    deleted: pa.Table

    @property
    def counts(self) -> dict[str, int]:
        return {"inserted": len(self.inserted), "updated": len(self.updated), "deleted": len(self.deleted)}

    def __bool__(self) -> bool:
        return bool(len(self.inserted) or len(self.updated) or len(self.deleted))

    @property
    def deleted_keys(self) -> pa.Table:
        return self.deleted.select(self.key)

    def changed_rows(self) -> pa.Table:
        """Inserted and updated rows (new values): what a model has not seen yet."""
        return pa.concat_tables([self.inserted, self.updated])

    def export(self, directory: str) -> dict[str, str]:
        """Write inserted/updated/updated_before/deleted as Parquet files; return their paths."""
        import os

        import pyarrow.parquet as pq

        os.makedirs(directory, exist_ok=True)
        out = {}
        for name in ("inserted", "updated", "updated_before", "deleted"):
            path = os.path.join(directory, f"{name}.parquet")
            pq.write_table(getattr(self, name), path)
            out[name] = path
        return out

    def to_json(self) -> dict[str, Any]:
        return dict(self.counts)


def net_changes(io_: TableIO, old: TableObject | None, new: TableObject | None) -> pa.Table:
    """Per changed key: whether it existed before/after and its values before (BEFORE+col) and after (col).

    Keys whose state is the same in both versions are left out."""
    if old is None and new is None:
        raise ValueError("nothing to compare")
    ref = new if new is not None else old
    assert ref is not None
    key = list(ref.key)
    schema = schema_from_text(ref.schema)
    if old is not None and new is not None and old.schema != new.schema:
        schema = _union(schema_from_text(old.schema), schema_from_text(new.schema))
    if old is not None and new is not None and old.base == new.base:
        states = _from_changesets(io_, old, new, schema, key)
    else:
        states = _from_bases(io_, old, new, schema, key)
    return _only_changed(states, schema, key)


def _union(a: pa.Schema, b: pa.Schema) -> pa.Schema:
    fields = list(a)
    fields += [f for f in b if f.name not in a.names]
    return pa.schema(fields)


def _states(rows: pa.Table, exists: np.ndarray, schema: pa.Schema, key: list[str], prefix: str) -> pa.Table:
    """Rows → (key, exists flag, values renamed with prefix)."""
    rows = conform(rows, schema)
    cols = {k: rows.column(k) for k in key}
    cols[prefix + "__flag"] = pa.array(exists)
    for f in schema:
        if f.name not in key:
            cols[prefix + f.name] = rows.column(f.name)
    return pa.table(cols)


def _from_changesets(io_: TableIO, old: TableObject, new: TableObject, schema: pa.Schema, key: list[str]) -> pa.Table:
    p = 0
    while p < min(len(old.changes), len(new.changes)) and old.changes[p] == new.changes[p]:
        p += 1
    a = io_.changes_between_layers(old.changes[p:], schema, key)
    b = io_.changes_between_layers(new.changes[p:], schema, key)
    values = [f.name for f in schema if f.name not in key]

    def after(ch: pa.Table) -> tuple[pa.Table, np.ndarray]:
        last = latest(ch, key)
        return last.select([*key, *values]), (last.column(OP).to_numpy() != OP_DELETE)

    def before(ch: pa.Table) -> tuple[pa.Table, np.ndarray]:
        first = latest(ch, key, keep="first")
        rows = first.select(key + [BEFORE + v for v in values]).rename_columns(key + values)
        return rows, (first.column(OP).to_numpy() != OP_INSERT)

    # Old state: last write in A, else the value before B's first write; new state: symmetric.
    olds = [(*after(a), 2), (*before(b), 1)]
    news = [(*after(b), 2), (*before(a), 1)]
    return _join_states(_pick(olds, schema, key, "o_"), _pick(news, schema, key, "n_"), schema, key)


def _pick(
    candidates: list[tuple[pa.Table, np.ndarray, int]], schema: pa.Schema, key: list[str], prefix: str
) -> pa.Table:
    parts = []
    for rows, exists, prio in candidates:
        st = _states(rows, exists, schema, key, prefix)
        parts.append(st.append_column(LAYER, pa.array(np.full(len(st), prio, np.int64))))
    combined = pa.concat_tables(parts)
    return latest(combined, key).drop_columns([LAYER])


def _join_states(olds: pa.Table, news: pa.Table, schema: pa.Schema, key: list[str]) -> pa.Table:
    joined = olds.join(news, keys=key, join_type="full outer")
    out = {k: joined.column(k) for k in key}
    out[EXISTS_BEFORE] = pc.fill_null(joined.column("o___flag"), False)
    out[EXISTS_AFTER] = pc.fill_null(joined.column("n___flag"), False)
    for f in schema:
        if f.name not in key:
            out[f.name] = joined.column("n_" + f.name)
            out[BEFORE + f.name] = joined.column("o_" + f.name)
    return sort_by_key(pa.table(out), key)


def _from_bases(
    io_: TableIO, old: TableObject | None, new: TableObject | None, schema: pa.Schema, key: list[str]
) -> pa.Table:
    """Compare versions with different bases; shared fragments are skipped when neither has changesets."""

    def rows_of(t: TableObject | None, skip: set[str]) -> pa.Table:
        if t is None:
            return schema.empty_table()
        if t.changes:
            return conform(io_.rows(t), schema)
        parts = [conform(io_.read_fragment(f), schema) for f in t.base if f.id not in skip]
        return pa.concat_tables(parts) if parts else schema.empty_table()

    shared: set[str] = set()
    if old is not None and new is not None and not old.changes and not new.changes:
        shared = {f.id for f in old.base} & {f.id for f in new.base}
    before_rows, after_rows = rows_of(old, shared), rows_of(new, shared)
    olds = _states(before_rows, np.ones(len(before_rows), bool), schema, key, "o_")
    news = _states(after_rows, np.ones(len(after_rows), bool), schema, key, "n_")
    return _join_states(olds, news, schema, key)


def _only_changed(states: pa.Table, schema: pa.Schema, key: list[str]) -> pa.Table:
    existed = states.column(EXISTS_BEFORE).to_numpy(zero_copy_only=False)
    exists = states.column(EXISTS_AFTER).to_numpy(zero_copy_only=False)
    same = existed == exists
    both = existed & exists
    equal = np.ones(len(states), dtype=bool)
    for f in schema:
        if f.name not in key:
            equal &= values_equal(states.column(f.name), states.column(BEFORE + f.name))
    unchanged = (same & ~existed) | (both & equal)
    return states.filter(pa.array(~unchanged))


def table_diff(io_: TableIO, old: TableObject | None, new: TableObject | None) -> TableDiff:
    """The row diff from `old` to `new` (None = the table does not exist in that version)."""
    ref = new if new is not None else old
    assert ref is not None
    key = list(ref.key)
    schema = schema_from_text(ref.schema)
    if old is not None and new is not None:
        schema = _union(schema_from_text(old.schema), schema_from_text(new.schema))
    net = net_changes(io_, old, new)
    existed = net.column(EXISTS_BEFORE).to_numpy(zero_copy_only=False)
    exists = net.column(EXISTS_AFTER).to_numpy(zero_copy_only=False)
    values = [f.name for f in schema if f.name not in key]
    after_cols = key + values
    before_view = net.select(key + [BEFORE + v for v in values]).rename_columns(after_cols)
    after_view = net.select(after_cols)
    return TableDiff(
        key=key,
        inserted=after_view.filter(pa.array(~existed & exists)),
        updated_before=before_view.filter(pa.array(existed & exists)),
        updated=after_view.filter(pa.array(existed & exists)),
        deleted=before_view.filter(pa.array(existed & ~exists)),
    )


def apply_diff(rows: pa.Table, diff: TableDiff, key: Sequence[str]) -> pa.Table:
    """Apply a diff to the rows of its old version (used to check `diff(a, b)` applied to a gives b)."""
    drop = pa.concat_tables([diff.deleted.select(list(key)), diff.updated.select(list(key))])
    marker = "__dacflow_drop"
    if len(drop):
        joined = rows.join(
            drop.append_column(marker, pa.array(np.ones(len(drop), bool))), keys=list(key), join_type="left outer"
        )
        rows = joined.filter(pc.is_null(joined.column(marker))).drop_columns([marker])
    schema = rows.schema
    out = pa.concat_tables([rows, conform(diff.inserted, schema), conform(diff.updated, schema)])
    return sort_by_key(out, key)
