"""Flytekit plugin for dacflow: dataset snapshots as Flyte values, ready-made tasks and a sensor.

Public surface (docs/flyte.md):

- `Snapshot` — a commit of a repository, or a table or path in it; `Delta` — the rows of a table changed between
  two commits. Both are Flyte types (registered through the `flytekit.plugins` entry point); their literal
  carries the content id, so Flyte's cache keys on the data, not on the store or path it came from.
- tasks: `init_task`, `snapshot_task`, `write_table_task`, `head_task`, `transfer_task`, `push_task`,
  `merge_task`, `diff_task`, `delta_task`, `tag_task`, `sync_task` (subscriptions); `flyte_lineage` for commit
  metadata of your own tasks.
- `SnapshotSensor` — waits for a branch to move past a commit (or to exist).

Importing this package needs no flytekit: `Snapshot` and `Delta` are plain values; the tasks, the sensor and the
transformers load flytekit on first access.
"""

from __future__ import annotations

import sys
from typing import Any

from .values import CHANGE_COLUMN, Delta, Snapshot

if "flytekit" in sys.modules:  # flytekit is loaded (perhaps without our entry point installed): register now
    from . import types as _types  # noqa: F401

_LAZY = {
    "SnapshotSensor": "sensor",
    "SnapshotSensorTimeout": "sensor",
    "SnapshotTransformer": "types",
    "DeltaTransformer": "types",
    "LINEAGE": "tasks",
    "Merged": "tasks",
    "Pushed": "tasks",
    "delta_task": "tasks",
    "diff_task": "tasks",
    "flyte_lineage": "tasks",
    "head_task": "tasks",
    "init_task": "tasks",
    "merge_task": "tasks",
    "push_task": "tasks",
    "snapshot_task": "tasks",
    "sync_task": "tasks",
    "tag_task": "tasks",
    "transfer_task": "tasks",
    "write_table_task": "tasks",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    try:
        loaded = importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        raise ImportError(
            f"dacflow.providers.flyte.{name} needs flytekit (pip install 'dacflow[flyte]'): {exc}"
        ) from exc
    value = getattr(loaded, name)
    globals()[name] = value
    return value


__all__ = ["CHANGE_COLUMN", "Delta", "Snapshot", *sorted(_LAZY)]
