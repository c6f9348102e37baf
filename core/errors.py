"""The one error hierarchy of dacflow.

Every error carries the data a caller needs to act (ref, key, expected, actual, path) as attributes and pickles
cleanly, because errors cross process boundaries in Airflow and Flyte workers.
"""

from __future__ import annotations

from typing import Any


class DacflowError(Exception):
    """Base of every error dacflow raises on purpose; the message is one actionable line."""

    exit_code = 1

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__(message)
        self.message = message
        self.data = data
        for name, value in data.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.data))

    def __str__(self) -> str:
        return self.message


def _rebuild(cls: type[DacflowError], message: str, data: dict[str, Any]) -> DacflowError:
    err = cls.__new__(cls)
    DacflowError.__init__(err, message, **data)
    return err


class UsageError(DacflowError):
    """The caller asked for something that cannot be done as asked (bad argument, wrong kind of path)."""

    exit_code = 2


class RepositoryNotFoundError(DacflowError):
    """No dacflow repository exists at the given location."""

    exit_code = 3


class RepositoryExistsError(DacflowError):
    """`init` was asked to create a repository where one already exists."""


class UnsupportedFormatError(DacflowError):
    """A stored format (repository config, pack, object) has a version this dacflow does not know."""


class RefNotFoundError(DacflowError):
    """A branch, tag or commit id names nothing in the repository."""

    exit_code = 4


class InvalidRefNameError(UsageError):
    """A branch or tag name breaks the naming rules."""


class RefConflictError(DacflowError):
    """A ref moved under us and the change could not be rebased onto the new head."""

    exit_code = 5


class RefExistsError(DacflowError):
    """A branch or tag to be created already exists."""


class ObjectNotFoundError(DacflowError):
    """An object the repository references is missing from the store."""

    exit_code = 6


class CorruptObjectError(DacflowError):
    """Stored bytes do not hash to their id (bit rot, truncation, tampering); they are never returned."""

    exit_code = 6


class UnsafePathError(DacflowError):
    """A name from a manifest would escape the checkout root or is otherwise not a safe path element."""

    exit_code = 7


class StoreError(DacflowError):
    """The storage system failed (I/O error, permission, network) in a way retries did not fix."""

    exit_code = 8


class TransientStoreError(StoreError):
    """A failure that may pass if tried again (dropped connection, throttling, 5xx); wrappers retry it."""


class KeyNotFoundError(StoreError):
    """A store key does not exist."""


class ContainerNotFoundError(StoreError):
    """The bucket or container a store URL names does not exist."""


class PreconditionFailedError(StoreError):
    """A conditional write lost: the key exists (create) or changed (if_match)."""


class RepositoryLockedError(DacflowError):
    """Another process holds a lock that conflicts with this operation (e.g. gc while a snapshot runs)."""

    exit_code = 9


class SignatureError(DacflowError):
    """No trusted key's signature verifies a commit (`reason`: unsigned, unknown_key, bad_signature, unsupported)."""

    exit_code = 11


class GateRejectedError(DacflowError):
    """A gate or plugin vetoed a ref move (`reasons`: every reason, in order); the branch stayed where it was."""

    exit_code = 12


__all__ = [
    "ContainerNotFoundError",
    "CorruptObjectError",
    "DacflowError",
    "GateRejectedError",
    "InvalidRefNameError",
    "KeyNotFoundError",
    "ObjectNotFoundError",
    "PreconditionFailedError",
    "RefConflictError",
    "RefExistsError",
    "RefNotFoundError",
    "RepositoryExistsError",
    "RepositoryLockedError",
    "RepositoryNotFoundError",
    "SignatureError",
    "StoreError",
    "TransientStoreError",
    "UnsafePathError",
    "UnsupportedFormatError",
    "UsageError",
]
