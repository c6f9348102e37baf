"""A plain-Python reference model of dacflow tables, shared by test_tables.py and test_table_merge.py.

A table state is a dict: key tuple -> {value column: value}. Writes, diffs and three-way merges are written
straight from the documented semantics (issue 4), with no Arrow, so the engine can be checked against them.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dacflow.tables import UNRESOLVED
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

KEY = ["pid", "ts"]
VALUES = ["x", "y", "z"]
SCHEMA = pa.schema(
    [("pid", pa.string()), ("ts", pa.int64()), ("x", pa.int64()), ("y", pa.string()), ("z", pa.float64())]
)
# Small domains so that keys and values collide often (same change on both sides, re-inserts, reverts).
PIDS = ["", "a", "b", "é"]
TSS = [-1, 0, 1, 7]
ALL_KEYS = [(p, t) for p in PIDS for t in TSS]
DOMAIN = {"x": [None, 0, 1, 2**40], "y": [None, "", "p", "q"], "z": [None, 0.5, 1.5]}

State = dict[tuple[Any, ...], dict[str, Any]]


# -- Arrow <-> model -----------------------------------------------------------------------------------------
def to_state(table: pa.Table, key: list[str] = KEY, values: list[str] = VALUES) -> State:
    """Arrow rows -> state (columns absent from the table read as None); duplicate keys are an error."""
    out: State = {}
    for row in table.to_pylist():
        k = tuple(row[c] for c in key)
        assert k not in out, f"duplicate key {k} in table"
        out[k] = {c: row.get(c) for c in values}
    return out


def rows_table(
    rows: Iterable[tuple[tuple[Any, ...], Mapping[str, Any]]],
    columns: Iterable[str],
    schema: pa.Schema = SCHEMA,
    key: list[str] = KEY,
) -> pa.Table:
    """Rows (key, values) -> an Arrow table with the key columns plus `columns`, typed by `schema`."""
    names = [*key, *columns]
    sch = pa.schema([schema.field(n) for n in names])
    data: dict[str, list[Any]] = {n: [] for n in names}
    for k, vals in rows:
        for n, v in zip(key, k, strict=True):
            data[n].append(v)
        for c in columns:
            data[c].append(vals.get(c))
    return pa.table(data, schema=sch)


def state_table(state: State) -> pa.Table:
    return rows_table(sorted(state.items()), VALUES)


def assert_table_equals(table: pa.Table, state: State, where: str = "") -> None:
    """`table` holds exactly `state`'s rows, sorted by key, with the model's schema."""
    assert table.schema.names == SCHEMA.names, (where, table.schema)
    for f in SCHEMA:
        assert table.schema.field(f.name).type == f.type, (where, f.name, table.schema)
    got = to_state(table)
    keys = [tuple(r[c] for c in KEY) for r in table.select(KEY).to_pylist()]
    assert keys == sorted(keys), f"{where}: rows not sorted by key: {keys}"
    if got != state:
        missing = {k: v for k, v in state.items() if k not in got}
        extra = {k: v for k, v in got.items() if k not in state}
        wrong = {k: (got[k], state[k]) for k in got.keys() & state.keys() if got[k] != state[k]}
        raise AssertionError(
            f"{where}: table differs from the model: missing {missing}, extra {extra}, wrong (got, want) {wrong}"
        )


# -- writes --------------------------------------------------------------------------------------------------
@dataclass
class Write:
    """One table write: mode, rows (key, values) in order, the value columns the data carries, dedupe and
    the input format (Arrow table, record batch or a Parquet file)."""

    mode: str
    rows: list[tuple[tuple[Any, ...], dict[str, Any]]]
    columns: tuple[str, ...]
    dedupe: bool = False
    fmt: str = "arrow"

    def data(self, tmpdir: str) -> Any:
        table = rows_table(self.rows, self.columns)
        if self.fmt == "arrow":
            return table
        if self.fmt == "batch":
            return table.combine_chunks().to_batches()[0] if len(table) else table
        fd, path = tempfile.mkstemp(suffix=".parquet", dir=tmpdir)
        os.close(fd)
        pq.write_table(table, path)
        return path


class ExpectedError(Exception):
    """The model says this write must be refused."""


@dataclass
class Expected:
    state: State
    stats: dict[str, int] = field(default_factory=dict)


def model_write(state: State, w: Write) -> Expected:
    """The state after write `w` (raise ExpectedError when the write must fail) and the expected counts."""
    keys = [k for k, _ in w.rows]
    rows = list(w.rows)
    if len(set(keys)) != len(keys):
        if not w.dedupe:
            raise ExpectedError("duplicate keys")
        last: dict[tuple[Any, ...], dict[str, Any]] = {}
        for k, v in rows:
            last[k] = v
        rows = list(last.items())
    new = {k: dict(v) for k, v in state.items()}
    if w.mode == "overwrite":
        after = {k: {c: v.get(c) if c in w.columns else None for c in VALUES} for k, v in rows}
        if tuple(w.columns) != tuple(VALUES) or not state:
            return Expected(after, {"inserted": len(rows)})  # a new base run
        ins = sum(1 for k in after if k not in state)
        upd = sum(1 for k in after if k in state and after[k] != state[k])
        dele = sum(1 for k in state if k not in after)
        if upd + dele > len(state) // 2:
            return Expected(after, {"inserted": len(rows)})  # most old rows change: a new base run
        # a small change: one changeset with exact counts
        return Expected(after, {"inserted": ins, "updated": upd, "deleted": dele, "unchanged": len(after) - ins - upd})
    if w.mode == "delete":
        present = [k for k, _ in rows if k in new]
        for k in present:
            del new[k]
        return Expected(new, {"deleted": len(present), "missing": len(rows) - len(present)})
    if w.mode == "append" and any(k in state for k, _ in rows):
        raise ExpectedError("append of an existing key")
    inserted = updated = unchanged = 0
    for k, v in rows:
        if k in new:
            row = dict(new[k])
            row.update({c: v.get(c) for c in w.columns})
            if row == new[k]:
                unchanged += 1
            else:
                updated += 1
            new[k] = row
        else:
            inserted += 1
            new[k] = {c: v.get(c) if c in w.columns else None for c in VALUES}
    return Expected(new, {"inserted": inserted, "updated": updated, "unchanged": unchanged})


def model_diff(a: State, b: State) -> dict[str, State]:
    """What changed from a to b: inserted/updated (after), updated_before, deleted (before rows)."""
    return {
        "inserted": {k: v for k, v in b.items() if k not in a},
        "deleted": {k: v for k, v in a.items() if k not in b},
        "updated": {k: v for k, v in b.items() if k in a and a[k] != v},
        "updated_before": {k: a[k] for k, v in b.items() if k in a and a[k] != v},
    }


# -- three-way merge -----------------------------------------------------------------------------------------
def _rule(policy: Any, column: str) -> Any:
    if isinstance(policy, Mapping):
        return policy.get(column, policy.get("*", "fail"))
    return policy


def _resolve(
    rule: Any,
    key: tuple[Any, ...],
    column: str,
    base: Any,
    ours: Any,
    theirs: Any,
    ours_row: dict[str, Any] | None,
    theirs_row: dict[str, Any] | None,
) -> tuple[Any, str]:
    """(chosen value or UNRESOLVED, resolution label)."""
    if callable(rule):
        got = rule(
            {
                "table": "t",
                "key": dict(zip(KEY, key, strict=True)),
                "column": column,
                "base": base,
                "ours": ours,
                "theirs": theirs,
            }
        )
        return got, ("" if got is UNRESOLVED else "callable")
    if rule in ("ours", "theirs"):
        return (ours if rule == "ours" else theirs), rule
    if isinstance(rule, str) and rule.startswith("latest:"):
        col = rule[len("latest:") :]
        o = ours_row.get(col) if ours_row is not None else None
        t = theirs_row.get(col) if theirs_row is not None else None
        if o is None or t is None:
            return UNRESOLVED, ""
        return (theirs, "theirs") if t > o else (ours, "ours")
    return UNRESOLVED, ""


@dataclass
class Conflict:
    key: tuple[Any, ...]
    column: str
    base: Any
    ours: Any
    theirs: Any
    resolved: bool
    resolution: str

    def as_tuple(self) -> tuple[Any, ...]:
        values = (json.dumps(v, sort_keys=True) for v in (self.base, self.ours, self.theirs))
        return (self.key, self.column, *values, self.resolved, self.resolution)


def model_merge(base: State, ours: State, theirs: State, policy: Any) -> tuple[State, list[Conflict]]:
    """Three-way merge of theirs into ours; unresolved conflicts keep ours' side (what quarantine commits)."""
    out: State = {}
    conflicts: list[Conflict] = []
    for k in sorted(base.keys() | ours.keys() | theirs.keys()):
        b, o, t = base.get(k), ours.get(k), theirs.get(k)
        if t == b:
            result = o
        elif o in (b, t):
            result = t
        elif o is None or t is None:  # delete against update: a row conflict
            choice, label = _resolve(_rule(policy, "*"), k, "*", b, o, t, o, t)
            conflicts.append(Conflict(k, "*", b, o, t, choice is not UNRESOLVED, label))
            result = o if choice is UNRESOLVED else choice
        else:
            result = {}
            for c in VALUES:
                bc = b[c] if b is not None else None
                oc, tc = o[c], t[c]
                if oc == tc:
                    result[c] = oc
                elif b is not None and oc == bc:
                    result[c] = tc
                elif b is not None and tc == bc:
                    result[c] = oc
                else:
                    choice, label = _resolve(_rule(policy, c), k, c, bc, oc, tc, o, t)
                    conflicts.append(Conflict(k, c, bc, oc, tc, choice is not UNRESOLVED, label))
                    result[c] = oc if choice is UNRESOLVED else choice
        if result is not None:
            out[k] = dict(result)
    return out, conflicts


def reported_conflicts(table: pa.Table | list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """A merge's conflicts (its Arrow table, or the error's list) in Conflict.as_tuple form, sorted."""
    out = []
    for c in table if isinstance(table, list) else table.to_pylist():
        key = json.loads(c["key"])
        values = (json.dumps(json.loads(c[side]), sort_keys=True) for side in ("base", "ours", "theirs"))
        out.append((tuple(key[n] for n in KEY), c["column"], *values, c["resolved"], c["resolution"]))
    return sorted(out, key=repr)


def expected_conflicts(conflicts: list[Conflict]) -> list[tuple[Any, ...]]:
    return sorted((c.as_tuple() for c in conflicts), key=repr)


# -- hypothesis strategies -----------------------------------------------------------------------------------
def property_settings(examples: int) -> settings:
    """Hypothesis settings for tests that build a repository per example: no deadline, `examples` examples
    (DACFLOW_TABLE_EXAMPLES overrides), and with DACFLOW_TABLE_SHRINK=0 the first failure is reported as
    found (shrinking can take minutes when every example writes a repository)."""
    phases = [Phase.explicit, Phase.reuse, Phase.generate]
    if os.environ.get("DACFLOW_TABLE_SHRINK", "1") != "0":
        phases.append(Phase.shrink)
    return settings(
        max_examples=int(os.environ.get("DACFLOW_TABLE_EXAMPLES", examples)),
        deadline=None,
        print_blob=True,
        phases=phases,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


values_st = st.fixed_dictionaries({c: st.sampled_from(d) for c, d in DOMAIN.items()})


@st.composite
def writes(
    draw: Callable[..., Any],
    modes: tuple[str, ...] = ("upsert", "upsert", "append", "delete", "overwrite"),
    min_rows: int = 0,
    max_rows: int = 6,
    keys: list[tuple[Any, ...]] = ALL_KEYS,
) -> Write:
    """A random write; `modes` lists the modes with repetition as weights."""
    mode = draw(st.sampled_from(modes))
    dedupe = draw(st.sampled_from([False, False, False, True]))
    chosen = draw(st.lists(st.sampled_from(keys), min_size=min_rows, max_size=max_rows, unique=not dedupe))
    rows = [(k, draw(values_st)) for k in chosen]
    if mode == "delete":
        columns: tuple[str, ...] = draw(st.sampled_from([(), (), tuple(VALUES)]))
    else:
        full = draw(st.booleans())
        columns = tuple(VALUES) if full else tuple(c for c in VALUES if draw(st.booleans()))
    fmt = draw(st.sampled_from(["arrow", "arrow", "batch", "parquet"]))
    return Write(mode, rows, columns, dedupe, fmt)


@st.composite
def base_states(
    draw: Callable[..., Any], min_rows: int = 0, max_rows: int = 10, keys: list[tuple[Any, ...]] = ALL_KEYS
) -> State:
    chosen = draw(st.lists(st.sampled_from(keys), min_size=min_rows, max_size=max_rows, unique=True))
    return {k: draw(values_st) for k in chosen}
