"""Apache Airflow 3 provider for dacflow.

Modules: `hooks` (DacHook: connections -> repositories, cross-cloud transfer), `operators` (DacSnapshotOperator,
DacWriteTableOperator, DacBranchOperator, DacMergeOperator, DacDiffOperator, DacTransferOperator, DacTagOperator),
`sensors` (DacSnapshotSensor), `triggers` (DacSnapshotTrigger, DacBranchEventTrigger for AssetWatcher),
`decorators` (`@dac_step` for cached `@task` functions; operators take `cache=True`) and `assets` (dacflow://
asset URIs). Importing this package itself needs no Airflow.
"""

from __future__ import annotations

__all__: list[str] = []
