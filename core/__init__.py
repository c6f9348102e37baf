"""dacflow: data as code for workflow engines.

Immutable snapshots, branches, diffs and merges for datasets, on a local directory or any object store, moving
only deltas. Public surface:

- `Repository` (`Repository.init(url)`, `Repository.open(url)`) and `Branch`;
- the errors, all subclasses of `DacflowError`;
- `open_store` and the `Store` protocol for storage backends.

Importing dacflow loads no cloud SDK, no Airflow and no flytekit.
"""

from __future__ import annotations

from .errors import (
    CorruptObjectError,
    DacflowError,
    GateRejectedError,
    InvalidRefNameError,
    ObjectNotFoundError,
    RefConflictError,
    RefExistsError,
    RefNotFoundError,
    RepositoryExistsError,
    RepositoryLockedError,
    RepositoryNotFoundError,
    StoreError,
    UnsafePathError,
    UnsupportedFormatError,
    UsageError,
)
from .merge import MergeConflictError, MergeResult
from .repository import Branch, CommitResult, Repository
from .stores import Store, open_store
from .trees import Change, TreeDiff

__version__ = "0.1.0"

__all__ = [
    "Branch",
    "Change",
    "CommitResult",
    "CorruptObjectError",
    "DacflowError",
    "GateRejectedError",
    "InvalidRefNameError",
    "MergeConflictError",
    "MergeResult",
    "ObjectNotFoundError",
    "RefConflictError",
    "RefExistsError",
    "RefNotFoundError",
    "Repository",
    "RepositoryExistsError",
    "RepositoryLockedError",
    "RepositoryNotFoundError",
    "Store",
    "StoreError",
    "TreeDiff",
    "UnsafePathError",
    "UnsupportedFormatError",
    "UsageError",
    "__version__",
    "open_store",
]
