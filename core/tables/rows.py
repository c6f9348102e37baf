"""Row-level building blocks on Arrow tables: input normalisation, key hashing, content-defined cuts,
"latest row per key" composition and row equality. Imports pyarrow and numpy, so only table code imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError

OP = "__dacflow_op"
LAYER = "__dacflow_layer"
BEFORE = "__dacflow_before__"
OP_INSERT, OP_UPDATE, OP_DELETE = 1, 2, 3
RESERVED_PREFIX = "__dacflow"


class TableInputError(UsageError):
    """Rows handed to a table write are not usable (missing or null keys, duplicates, unreadable files)."""


def to_arrow(data: Any) -> pa.Table:
    """Accept an Arrow table, a pandas or polars frame, record batches, or Parquet/CSV path(s)."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, (list, tuple)) and data and all(isinstance(p, (str, os.PathLike)) for p in data)
    ):
        paths = [os.fspath(p) for p in (data if isinstance(data, (list, tuple)) else [data])]
        return pa.concat_tables([read_path(p) for p in paths], promote_options="default")
    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise TableInputError(
        f"cannot turn {type(data).__name__} into rows; pass an Arrow table, a pandas or polars frame, "
        "or Parquet/CSV paths"
    )


def read_path(path: str) -> pa.Table:
    """Read one Parquet or CSV file into Arrow, with a clear error for anything else."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    lower = path.lower()
    try:
        if lower.endswith((".parquet", ".pq")):
            return pq.read_table(path)
        if lower.endswith((".csv", ".csv.gz", ".tsv")):
            opts = pacsv.ParseOptions(delimiter="\t") if lower.endswith(".tsv") else None
            return pacsv.read_csv(path, parse_options=opts)
    except FileNotFoundError:
        raise TableInputError(f"no such file {path}", path=path) from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableInputError(f"{path} is not a readable table: {str(exc).splitlines()[0]}", path=path) from None
    raise TableInputError(f"{path} is not a table file (expected .parquet or .csv)", path=path)


def check_rows(table: pa.Table, key: Sequence[str], *, dedupe: str | None = None, keys_only: bool = False) -> pa.Table:
    """Validate rows for a write: key columns present and non-null, no reserved names, unique keys.

    Return the rows sorted by key (with `dedupe="last"`, the last row of each duplicate key wins)."""
    if not key:
        raise TableInputError("a table needs a primary key: pass key=[column, ...]")
    missing = [k for k in key if k not in table.column_names]
    if missing:
        raise TableInputError(
            f"key column(s) {', '.join(missing)} not in the data (columns: {', '.join(table.column_names)})",
            columns=missing,
        )
    reserved = [c for c in table.column_names if c.startswith(RESERVED_PREFIX)]
    if reserved:
        raise TableInputError(f"column name(s) {', '.join(reserved)} are reserved by dacflow", columns=reserved)
    if len(set(table.column_names)) != len(table.column_names):
        raise TableInputError("the data has duplicate column names")
    if keys_only:
        table = table.select(list(key))
    for k in key:  # (no combine_chunks: the sort below copies the rows into one chunk anyway)
        col = table.column(k)
        if pa.types.is_dictionary(col.type):
            table = table.set_column(table.column_names.index(k), k, col.cast(col.type.value_type))
            col = table.column(k)
        if col.null_count:
            raise TableInputError(f"key column {k!r} has {col.null_count} null value(s); keys must be set", column=k)
        if pa.types.is_floating(col.type):
            raise TableInputError(f"key column {k!r} is floating point; use an integer, string or time key", column=k)
    table = table.append_column(LAYER, pa.array(np.arange(len(table), dtype=np.int64)))
    table = sort_by_key(table, key, extra=[(LAYER, "ascending")])
    first = first_of_run(table, key)
    if len(table) and not bool(pc.all(first).as_py()):
        if dedupe == "last":
            last = np.append(first.to_numpy(zero_copy_only=False)[1:], True)
            table = table.filter(pa.array(last))
        else:
            dup = table.filter(pc.invert(first)).slice(0, 1).select(list(key)).to_pylist()[0]
            raise TableInputError(
                f"duplicate key {tuple(dup.values())!r} in the rows written; pass dedupe='last' to keep the last",
                key=list(dup.values()),
            )
    return table.drop_columns([LAYER])


def sort_by_key(table: pa.Table, key: Sequence[str], extra: Sequence[tuple[str, str]] = ()) -> pa.Table:
    if len(table) <= 1:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in key] + list(extra)))


def first_of_run(table: pa.Table, key: Sequence[str]) -> pa.BooleanArray:
    """True where a row's key differs from the previous row's (rows sorted by key)."""
    n = len(table)
    if n == 0:
        return pa.array([], pa.bool_())
    diff = np.zeros(n, dtype=bool)
    diff[0] = True
    for k in key:
        col = table.column(k).combine_chunks()
        ne = pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        diff[1:] |= ne
    return pa.array(diff)


# -- key hashing and content-defined cuts --------------------------------------------------------------------
_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_HASH_BATCH = 1 << 18  # string keys are hashed this many values at a time


def _mix(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def _column_hash(col: pa.Array) -> np.ndarray:
    typ = col.type
    if pa.types.is_dictionary(typ):
        col, typ = col.cast(typ.value_type), typ.value_type
    if (
        pa.types.is_string(typ)
        or pa.types.is_binary(typ)
        or pa.types.is_large_string(typ)
        or pa.types.is_large_binary(typ)
    ):
        return _bytes_hash(col)
    if pa.types.is_boolean(typ):
        return col.cast(pa.uint64()).to_numpy(zero_copy_only=False).astype(np.uint64)
    if pa.types.is_integer(typ):
        return col.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if pa.types.is_temporal(typ):
        as_int = col.view(pa.int64() if typ.bit_width == 64 else pa.int32())
        return as_int.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if pa.types.is_decimal(typ):
        return _bytes_hash(col.cast(pa.string()))
    raise TableInputError(f"key columns of type {typ} are not supported")


def _bytes_hash(col: pa.Array) -> np.ndarray:
    """Polynomial hash of each string/binary value, vectorised (no Python loop over rows)."""
    if len(col) > _HASH_BATCH:  # bound the temporaries (~32 bytes per byte of string data) on large columns
        return np.concatenate([_bytes_hash(col.slice(i, _HASH_BATCH)) for i in range(0, len(col), _HASH_BATCH)])
    large = pa.types.is_large_string(col.type) or pa.types.is_large_binary(col.type)
    col = col.cast(pa.large_binary() if large else pa.binary())
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int64 if large else np.int32)
    offs = offsets[col.offset : col.offset + len(col) + 1].astype(np.int64)
    data_buf = col.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    start, end = offs[0], offs[-1]
    lengths = np.diff(offs)
    if end == start:
        return _mix(lengths.astype(np.uint64))
    seg = data[start:end].astype(np.uint64)
    pos = np.arange(end - start, dtype=np.int64) - np.repeat(offs[:-1] - start, lengths)
    maxlen = int(lengths.max())
    powers = np.empty(maxlen, dtype=np.uint64)
    with np.errstate(over="ignore"):
        powers[0] = 1
        if maxlen > 1:
            powers[1:] = np.uint64(1099511628211)
            powers = np.cumprod(powers, dtype=np.uint64)
        contrib = seg * powers[pos]
    nonempty = lengths > 0
    sums = np.zeros(len(lengths), dtype=np.uint64)
    if nonempty.any():
        starts = (offs[:-1] - start)[nonempty]
        sums[nonempty] = np.add.reduceat(contrib, starts)
    with np.errstate(over="ignore"):
        return sums ^ (lengths.astype(np.uint64) * _M2)


def key_hash(table: pa.Table, key: Sequence[str]) -> np.ndarray:
    """A 64-bit hash of each row's key, stable across runs, machines and versions of the libraries."""
    h = np.zeros(len(table), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in key:
            h = _mix(h * _M1 ^ _mix(_column_hash(table.column(k).combine_chunks())))
    return h


def cut_points(table: pa.Table, key: Sequence[str], params: dict[str, int]) -> list[int]:
    """End offsets of fragments: a row closes a fragment when its key hash matches the mask, within bounds.

    Because the rule looks only at keys, an insert or update moves boundaries only around itself, and two
    versions of a table share every fragment away from their differences."""
    n = len(table)
    if n == 0:
        return []
    lo, hi, bits = params["min_rows"], params["max_rows"], params["mask_bits"]
    mask = np.uint64((1 << bits) - 1)
    candidates = np.flatnonzero((key_hash(table, key) & mask) == 0)
    cuts: list[int] = []
    start = 0
    for c in candidates.tolist():
        end = c + 1
        while end - start > hi:
            start += hi
            cuts.append(start)
        if end - start >= lo:
            cuts.append(end)
            start = end
    while n - start > hi:
        start += hi
        cuts.append(start)
    if start < n:
        cuts.append(n)
    return cuts


# -- composition and comparison ------------------------------------------------------------------------------
def latest(rows: pa.Table, key: Sequence[str], order: str = LAYER, *, keep: str = "last") -> pa.Table:
    """Keep one row per key: the one with the highest (`keep="last"`) or lowest `order` value."""
    if len(rows) == 0:
        return rows
    direction = "ascending" if keep == "last" else "descending"
    rows = sort_by_key(rows, key, extra=[(order, direction)])
    first = first_of_run(rows, key).to_numpy(zero_copy_only=False)
    last = np.append(first[1:], True)
    return rows.filter(pa.array(last))


def values_equal(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Element-wise equality where two nulls are equal."""
    if a.type != b.type:
        try:
            b = b.cast(a.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.zeros(len(a), dtype=bool)
    eq = pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b)).to_numpy(zero_copy_only=False)
    return eq | both_null


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Give `table` exactly the columns of `schema` (missing ones as nulls), cast where lossless."""
    cols = []
    for field in schema:
        if field.name in table.column_names:
            col = table.column(field.name)
            if col.type != field.type:
                col = col.cast(field.type)
            cols.append(col)
        else:
            cols.append(pa.nulls(len(table), field.type))
    return pa.Table.from_arrays(cols, schema=schema)
