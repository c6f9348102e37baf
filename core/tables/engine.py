"""Tables: row-level versions in a content-addressed store.

A table version is a *base run* — rows sorted by key, cut into Parquet fragments where a hash of the key
matches a mask, so an overwrite that changes a few rows shares every untouched fragment — plus *changesets*
written since: key-sorted fragments holding each changed row's operation (insert, update, delete), its new
values and its before-image. An upsert of 1% of the rows therefore stores about 2× those rows, wherever they
fall, and the difference between two versions with the same base is read from their changesets alone.
Reading composes the runs (last write of a key wins); `compact` folds changesets back into a new base.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import CorruptObjectError, DacflowError, UsageError
from ..objects import Fragment, TableObject, hash_bytes
from ..odb import KIND_CHUNK, ObjectDatabase, PackWriter
from .rows import (
    BEFORE,
    LAYER,
    OP,
    OP_DELETE,
    OP_INSERT,
    OP_UPDATE,
    TableInputError,
    check_rows,
    conform,
    cut_points,
    latest,
    to_arrow,
    values_equal,
)

log = logging.getLogger(__name__)

DEFAULT_PARAMS = {"min_rows": 4096, "mask_bits": 15, "max_rows": 131072}
#: Fold changesets into a new base once there are this many (reads compose every run).
COMPACT_AFTER = 48
MODES = ("append", "upsert", "overwrite", "delete")


class SchemaConflictError(DacflowError):
    """Two schemas cannot be reconciled (a column changed type incompatibly, or the key changed)."""

    exit_code = 11


@dataclass
class WriteStats:
    """What a table write did."""

    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    missing: int = 0  # keys asked to be deleted that were not there
    fragments_new: int = 0
    fragments_reused: int = 0
    bytes_new: int = 0
    compacted: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def _key_value(col: pa.Array, i: int) -> Any:
    typ = col.type
    if pa.types.is_temporal(typ):
        return col.view(pa.int64() if typ.bit_width == 64 else pa.int32())[i].as_py()
    return col[i].as_py()


def key_domain(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A key column in the domain its fragment bounds are recorded in (time types as integers)."""
    typ = col.type
    if pa.types.is_temporal(typ):
        return col.view(pa.int64() if typ.bit_width == 64 else pa.int32())
    return col


@dataclass
class TableIO:
    """Reads and writes fragments of tables in one object database."""

    odb: ObjectDatabase

    # -- fragments -------------------------------------------------------------------------------------------
    def write_fragment(self, writer: PackWriter, rows: pa.Table, key: Sequence[str], stats: WriteStats) -> Fragment:
        buf = io.BytesIO()
        pq.write_table(
            rows, buf, compression="zstd", row_group_size=max(1, len(rows)), write_statistics=True, store_schema=True
        )
        data = buf.getvalue()
        fid = hash_bytes(data)
        if writer.add(fid, data, KIND_CHUNK, compress=False):
            stats.fragments_new += 1
            stats.bytes_new += len(data)
        else:
            stats.fragments_reused += 1
        cols = [rows.column(k).combine_chunks() for k in key]
        lo = tuple(_key_value(c, 0) for c in cols)
        hi = tuple(_key_value(c, len(rows) - 1) for c in cols)
        return Fragment(fid, len(rows), lo, hi, len(data))

    def read_fragment(self, frag: Fragment, columns: Sequence[str] | None = None) -> pa.Table:
        """A fragment's rows (verified bytes; a fragment that is not the Parquet its table says is corrupt)."""
        data = self.odb.get_bytes(frag.id)
        try:
            table = pq.read_table(pa.BufferReader(data), columns=list(columns) if columns is not None else None)
        except pa.ArrowInvalid as exc:
            raise CorruptObjectError(f"fragment {frag.id} is not valid Parquet: {exc}", id=frag.id) from None
        if len(table) != frag.rows:
            raise CorruptObjectError(
                f"fragment {frag.id} has {len(table)} rows, its table says {frag.rows}", id=frag.id
            )
        return table

    def write_run(
        self, writer: PackWriter, rows: pa.Table, key: Sequence[str], params: dict[str, int], stats: WriteStats
    ) -> tuple[Fragment, ...]:
        """Cut key-sorted rows at content-defined boundaries and store each piece."""
        out, start = [], 0
        for end in cut_points(rows, key, params):
            out.append(self.write_fragment(writer, rows.slice(start, end - start), key, stats))
            start = end
        return tuple(out)

    # -- reading ---------------------------------------------------------------------------------------------
    def _changeset_rows(
        self, run: Sequence[Fragment], schema: pa.Schema, keys: pa.Table | None, key: Sequence[str]
    ) -> pa.Table:
        parts = [self._restrict(self.read_fragment(f), f, keys, key) for f in self._overlapping(run, keys, key)]
        return concat_changes(parts, schema, key)

    def _overlapping(self, frags: Sequence[Fragment], keys: pa.Table | None, key: Sequence[str]) -> list[Fragment]:
        if keys is None:
            return list(frags)
        if len(keys) == 0:
            return []
        first = key_domain(keys.column(key[0]))
        lo, hi = pc.min(first).as_py(), pc.max(first).as_py()
        return [f for f in frags if not (f.max[0] < lo or f.min[0] > hi)]

    def _restrict(self, rows: pa.Table, frag: Fragment, keys: pa.Table | None, key: Sequence[str]) -> pa.Table:
        if keys is None:
            return rows
        first = key_domain(keys.column(key[0]))
        in_range = pc.and_(pc.greater_equal(first, frag.min[0]), pc.less_equal(first, frag.max[0]))
        probe = keys.filter(in_range)
        if len(probe) == 0:
            return rows.slice(0, 0)
        # Join the keys alone and take the matching rows: a join's output holds buffers sized for whole batches
        # (megabytes per fragment even for a few rows), and a read of many fragments keeps every one of them.
        at = "__dacflow_row"
        hits = rows.select(list(key)).append_column(at, pa.array(np.arange(len(rows), dtype=np.int64)))
        hits = hits.join(probe.select(list(key)), keys=list(key), join_type="inner", use_threads=True)
        return rows.take(pa.array(np.sort(hits.column(at).to_numpy())))

    def rows(self, table: TableObject, keys: pa.Table | None = None) -> pa.Table:
        """The table's current rows (all, or only those whose key is in `keys`), sorted by key."""
        schema = schema_from_text(table.schema)
        key = list(table.key)
        if keys is None:  # the base run is in key order: apply the changes fragment by fragment, no global sort
            return pa.Table.from_batches(list(self.iter_batches(table, 1 << 62)), schema=schema)
        parts = [
            conform(self._restrict(self.read_fragment(f), f, keys, key), schema)
            for f in self._overlapping(table.base, keys, key)
        ]
        base = pa.concat_tables(parts) if parts else schema.empty_table()
        if not table.changes:
            return _sorted(base, key)
        layers = [
            base.append_column(OP, pa.array(np.full(len(base), OP_UPDATE, np.int8))).append_column(
                LAYER, pa.array(np.zeros(len(base), np.int64))
            )
        ]
        for i, run in enumerate(table.changes, 1):
            ch = self._changeset_rows(run, schema, keys, key)
            after = ch.select([*schema.names, OP])
            layers.append(after.append_column(LAYER, pa.array(np.full(len(after), i, np.int64))))
        combined = latest(pa.concat_tables(layers), key)
        live = combined.filter(pc.not_equal(combined.column(OP), OP_DELETE))
        return live.select(schema.names)

    def iter_batches(self, table: TableObject, batch_rows: int = 65536) -> Iterator[pa.RecordBatch]:
        """Stream the current rows in key order, one base fragment at a time with the changes that fall in it.

        Memory is bounded by one fragment plus the table's changesets (the deltas), not by the table."""
        schema = schema_from_text(table.schema)
        key = list(table.key)
        if not table.changes:
            for base_frag in table.base:
                yield from conform(self.read_fragment(base_frag), schema).to_batches(batch_rows)
            return
        changes = self.changes_between_layers(table.changes, schema, key)
        final = latest(changes, key).select([*schema.names, OP])
        owner = _owning_fragment(final, table.base, schema, key)
        order = np.argsort(owner, kind="stable")  # each fragment's changes as one slice (key order kept)
        final, owner = final.take(pa.array(order)), owner[order]
        starts = np.searchsorted(owner, np.arange(len(table.base) + 2), side="left")
        frags: list[Fragment | None] = [*table.base, None]  # None: changes past the last fragment
        for i, frag in enumerate(frags):
            delta = final.slice(int(starts[i]), int(starts[i + 1] - starts[i]))
            if frag is None:
                rows = delta.filter(pc.not_equal(delta.column(OP), OP_DELETE)).select(schema.names)
            else:
                base = conform(self.read_fragment(frag), schema)
                base = base.append_column(OP, pa.array(np.full(len(base), OP_UPDATE, np.int8)))
                both = pa.concat_tables(
                    [
                        base.append_column(LAYER, pa.array(np.zeros(len(base), np.int64))),
                        delta.append_column(LAYER, pa.array(np.ones(len(delta), np.int64))),
                    ]
                )
                merged = latest(both, key)
                rows = merged.filter(pc.not_equal(merged.column(OP), OP_DELETE)).select(schema.names)
            if len(rows):
                yield from rows.to_batches(batch_rows)

    def changes_between_layers(
        self, runs: Sequence[Sequence[Fragment]], schema: pa.Schema, key: Sequence[str]
    ) -> pa.Table:
        """All changeset rows of some runs with a LAYER column giving their order."""
        parts = []
        for i, run in enumerate(runs):
            ch = self._changeset_rows(run, schema, None, key)
            parts.append(ch.append_column(LAYER, pa.array(np.full(len(ch), i, np.int64))))
        if not parts:
            return changeset_schema(schema, key).empty_table().append_column(LAYER, pa.array([], pa.int64()))
        return pa.concat_tables(parts)


def _owning_fragment(rows: pa.Table, frags: Sequence[Fragment], schema: pa.Schema, key: Sequence[str]) -> np.ndarray:
    """For each row (key-sorted or not), the index of the first fragment whose max key is >= its key
    (len(frags) if none): the fragment whose key range it belongs to."""
    n = len(rows)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    bound_cols = {}
    for j, k in enumerate(key):
        typ = schema.field(k).type
        values = [f.max[j] for f in frags]
        if pa.types.is_temporal(typ):
            raw = pa.array(values, pa.int64() if typ.bit_width == 64 else pa.int32())
            bound_cols[k] = raw.view(typ)
        else:
            bound_cols[k] = pa.array(values, typ)
    marker, idx = "__dacflow_bound", "__dacflow_idx"
    bounds = pa.table(
        {
            **bound_cols,
            marker: pa.array(np.ones(len(frags), np.int8)),
            idx: pa.array(np.arange(len(frags), dtype=np.int64)),
        }
    )
    probe = rows.select(list(key)).append_column(marker, pa.array(np.zeros(n, np.int8)))
    probe = probe.append_column(idx, pa.array(np.arange(n, dtype=np.int64)))
    both = pa.concat_tables([probe, bounds.cast(probe.schema)])
    both = both.take(pc.sort_indices(both, sort_keys=[(k, "ascending") for k in key] + [(marker, "ascending")]))
    is_bound = both.column(marker).to_numpy() == 1
    ids = both.column(idx).to_numpy()
    # Next bound at or after each position: scan from the end.
    nxt = np.where(is_bound, ids, len(frags))
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    owner = np.empty(n, dtype=np.int64)
    owner[ids[~is_bound]] = nxt[~is_bound]
    return owner


def _sorted(rows: pa.Table, key: Sequence[str]) -> pa.Table:
    from .rows import sort_by_key

    return sort_by_key(rows, key)


def changeset_schema(schema: pa.Schema, key: Sequence[str]) -> pa.Schema:
    fields = [schema.field(k) for k in key] + [pa.field(OP, pa.int8())]
    for f in schema:
        if f.name not in key:
            fields.append(f)
            fields.append(pa.field(BEFORE + f.name, f.type))
    return pa.schema(fields)


def concat_changes(parts: list[pa.Table], schema: pa.Schema, key: Sequence[str]) -> pa.Table:
    target = changeset_schema(schema, key)
    return pa.concat_tables([conform(p, target) for p in parts]) if parts else target.empty_table()


# -- writing -------------------------------------------------------------------------------------------------
def evolve_schema(old: pa.Schema, new: pa.Schema, key: Sequence[str]) -> pa.Schema:
    """The schema after writing rows of `new` into a table of `old`: old columns keep their type, new columns
    are appended (nullable). A column whose type cannot be cast raises `SchemaConflictError` naming it."""
    fields = list(old)
    for f in new:
        if f.name in old.names:
            have = old.field(f.name).type
            if have != f.type and not _castable(f.type, have):
                raise SchemaConflictError(
                    f"column {f.name!r} is {have} in the table but {f.type} in the new rows",
                    column=f.name,
                    expected=str(have),
                    actual=str(f.type),
                )
        else:
            fields.append(pa.field(f.name, f.type, nullable=True))
    return pa.schema(fields)


def _castable(src: pa.DataType, dst: pa.DataType) -> bool:
    if pa.types.is_null(src):
        return True
    try:
        pa.array([], src).cast(dst)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(t(src) for t in numeric) and any(t(dst) for t in numeric):
        return not (pa.types.is_floating(src) and pa.types.is_integer(dst))
    return (
        src.equals(dst)
        or (pa.types.is_string(src) and pa.types.is_large_string(dst))
        or (pa.types.is_timestamp(src) and pa.types.is_timestamp(dst))
        or (pa.types.is_dictionary(src) and src.value_type.equals(dst))
    )


def _cast_column(col: pa.ChunkedArray, f: pa.Field) -> pa.ChunkedArray:
    """A written column in the table's type; values that do not fit raise `SchemaConflictError` naming it."""
    try:
        return col.cast(f.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaConflictError(
            f"column {f.name!r} is {f.type} in the table and the new values do not fit: {str(exc).splitlines()[0]}",
            column=f.name,
            expected=str(f.type),
            actual=str(col.type),
        ) from None


def _cast_rows(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays(
        [
            _cast_column(rows.column(f.name), f) if f.name in rows.column_names else pa.nulls(len(rows), f.type)
            for f in schema
        ],
        schema=schema,
    )


def write_rows(
    io_: TableIO,
    writer: PackWriter,
    existing: TableObject | None,
    data: Any,
    key: Sequence[str] | None,
    mode: str,
    *,
    dedupe: str | None = None,
) -> tuple[TableObject | None, WriteStats]:
    """Apply a write to a table version; return the new version (None if nothing changed) and stats."""
    if mode not in MODES:
        raise UsageError(f"unknown table write mode {mode!r}; use one of {', '.join(MODES)}")
    stats = WriteStats()
    rows = to_arrow(data)
    if rows.num_rows == 0 and rows.num_columns == 0 and mode != "overwrite":
        return None, stats  # nothing at all (e.g. an empty list of rows from an engine): no change, no error
    if existing is not None:
        if key is not None and tuple(key) != existing.key:
            raise SchemaConflictError(
                f"the table's key is {list(existing.key)}, not {list(key)}",
                expected=list(existing.key),
                actual=list(key),
            )
        key = list(existing.key)
    elif not key:
        raise TableInputError("a new table needs a primary key: pass key=[column, ...]")
    key = list(key)
    rows = check_rows(rows, key, dedupe=dedupe, keys_only=(mode == "delete"))
    params = dict(existing.params) if existing is not None else dict(DEFAULT_PARAMS)
    if existing is not None and mode == "overwrite":
        change = _overwrite_changes(io_, existing, rows, key, stats)
        if change is not None:  # a small change to a big table: one changeset, so cost follows the change
            if not len(change):
                return None, stats
            return _with_changeset(io_, writer, existing, change, schema_from_text(existing.schema), params, stats)
        stats = WriteStats()
    if existing is None or mode == "overwrite":
        if mode == "delete":
            raise TableInputError("cannot delete rows from a table that does not exist")
        schema = rows.schema if existing is None else evolve_schema(schema_from_text(existing.schema), rows.schema, key)
        rows = _cast_rows(rows, schema)
        base = io_.write_run(writer, rows, key, params, stats)
        stats.inserted = len(rows)
        new = TableObject(schema_to_text(schema), tuple(key), len(rows), base, (), params)
        if (
            existing is not None
            and new.base == existing.base
            and not existing.changes
            and new.schema == existing.schema
        ):
            return None, stats
        return new, stats
    old_schema = schema_from_text(existing.schema)
    schema = old_schema if mode == "delete" else evolve_schema(old_schema, rows.schema, key)
    provided = [c for c in rows.column_names if c not in key]
    current = io_.rows(existing, rows.select(key))
    current = conform(current, schema)
    change = _changeset(rows, current, schema, key, mode, provided, stats)
    if change is None:
        return None, stats
    return _with_changeset(io_, writer, existing, change, schema, params, stats)


def _with_changeset(
    io_: TableIO,
    writer: PackWriter,
    existing: TableObject,
    change: pa.Table,
    schema: pa.Schema,
    params: dict[str, Any],
    stats: WriteStats,
) -> tuple[TableObject, WriteStats]:
    """The table version `existing` plus one changeset (compacted when changesets pile up)."""
    key = list(existing.key)
    run = io_.write_run(writer, change, key, params, stats)
    count = existing.rows + stats.inserted - stats.deleted
    new = TableObject(schema_to_text(schema), tuple(key), count, existing.base, existing.changes + (run,), params)
    if len(new.changes) >= COMPACT_AFTER:
        writer.flush()  # compaction reads the changeset just written: publish it first
        new = compact(io_, writer, new, stats)
    return new, stats


def _overwrite_changes(
    io_: TableIO, existing: TableObject, rows: pa.Table, key: list[str], stats: WriteStats
) -> pa.Table | None:
    """An overwrite of an existing table as one changeset (inserts, updates, deletes); None when the overwrite
    changes the schema or updates/deletes more than half the rows, where a new base run is the better layout
    (inserts alone never are: they cost the same either way, and only a changeset keeps the old rows' bytes)."""
    schema = schema_from_text(existing.schema)
    if sorted(rows.column_names) != sorted(schema.names) or evolve_schema(schema, rows.schema, key) != schema:
        return None
    rows = _cast_rows(rows, schema)
    current = conform(io_.rows(existing), schema)
    provided = [c for c in rows.column_names if c not in key]
    upserts = _changeset(rows, current, schema, key, "upsert", provided, stats)
    gone = current.select(key).join(rows.select(key), keys=key, join_type="left anti")
    deletes = _changeset(gone, current, schema, key, "delete", [], stats) if len(gone) else None
    if stats.updated + stats.deleted > existing.rows // 2:
        return None
    parts = [p for p in (upserts, deletes) if p is not None]
    if not parts:
        return changeset_schema(schema, key).empty_table()
    return pa.concat_tables(parts).sort_by([(k, "ascending") for k in key])


def _changeset(
    rows: pa.Table,
    current: pa.Table,
    schema: pa.Schema,
    key: list[str],
    mode: str,
    provided: list[str],
    stats: WriteStats,
) -> pa.Table | None:
    """Classify each written row against the current rows and build the changeset (sorted by key)."""
    cs_schema = changeset_schema(schema, key)
    # Mark which written keys exist now, and fetch their current values aligned to the written rows.
    marker = "__dacflow_exists"
    cur = current.append_column(marker, pa.array(np.ones(len(current), bool)))
    joined = rows.select(key).append_column(LAYER, pa.array(np.arange(len(rows), dtype=np.int64)))
    joined = joined.join(cur, keys=key, join_type="left outer").sort_by(LAYER)
    exists = pc.fill_null(joined.column(marker), False).to_numpy(zero_copy_only=False)
    if mode == "delete":
        stats.missing = int((~exists).sum())
        sel = pa.array(exists)
        gone = joined.filter(sel)
        cols: dict[str, Any] = {k: gone.column(k) for k in key}
        cols[OP] = pa.array(np.full(len(gone), OP_DELETE, np.int8))
        for f in schema:
            if f.name not in key:
                cols[f.name] = pa.nulls(len(gone), f.type)
                cols[BEFORE + f.name] = gone.column(f.name)
        stats.deleted = len(gone)
        return pa.table(cols, schema=cs_schema) if len(gone) else None
    if mode == "append" and exists.any():
        dup = joined.filter(pa.array(exists)).select(key).slice(0, 1).to_pylist()[0]
        raise TableInputError(
            f"append: {int(exists.sum())} written key(s) already exist, e.g. {tuple(dup.values())!r}; "
            "use mode='upsert' to update them",
            count=int(exists.sum()),
        )
    after_cols: dict[str, Any] = {}
    same = np.ones(len(rows), dtype=bool)
    for f in schema:
        if f.name in key:
            continue
        old = joined.column(f.name)
        # A column the write does not mention keeps its value (null for new rows).
        new = _cast_column(rows.column(f.name), f) if f.name in provided else old
        after_cols[f.name] = new
        same &= values_equal(new, old)
    same &= exists
    ops = np.where(exists, OP_UPDATE, OP_INSERT).astype(np.int8)
    keep = pa.array(~same)
    stats.unchanged = int(same.sum())
    stats.inserted = int((~exists).sum())
    stats.updated = int((exists & ~same).sum())
    if not (~same).any():
        return None
    cols = {k: rows.column(k) for k in key}
    cols[OP] = pa.array(ops)
    for f in schema:
        if f.name not in key:
            cols[f.name] = after_cols[f.name]
            cols[BEFORE + f.name] = joined.column(f.name)
    return pa.table(cols, schema=cs_schema).filter(keep)


def compact(io_: TableIO, writer: PackWriter, table: TableObject, stats: WriteStats | None = None) -> TableObject:
    """Fold every changeset into a new content-defined base run."""
    stats = stats or WriteStats()
    rows = io_.rows(table)
    base = io_.write_run(writer, rows, list(table.key), dict(table.params), stats)
    stats.compacted = True
    return TableObject(table.schema, table.key, len(rows), base, (), table.params)
