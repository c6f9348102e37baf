"""`SnapshotSensor`: a Flyte sensor (flytekit's sensor API) that waits for a branch to move past a commit.

Flyte runs a sensor by calling `poke` again and again (the sensor connector remotely; locally flytekit polls about
once a second), each time on a freshly built sensor object, so the wait's start and last look are kept per
(store, branch, commit) in this process. `poke` reads the branch at most once per `poll_interval` and raises
`SnapshotSensorTimeout` (one line) once `timeout` has passed — flytekit ignores a task timeout when running
locally, so the sensor enforces its own.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from dacflow.errors import DacflowError, TransientStoreError
from dacflow.repository import Repository
from flytekit.sensor.base_sensor import BaseSensor

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0
DEFAULT_POLL = 5.0


class SnapshotSensorTimeout(DacflowError):
    """The branch did not move within the sensor's timeout."""


@dataclass
class SnapshotSensorConfig:
    """How long to wait and how often to look (seconds); travels with the task template."""

    timeout_seconds: float = DEFAULT_TIMEOUT
    poll_seconds: float = DEFAULT_POLL

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SnapshotSensorConfig:
        return cls(float(d.get("timeout_seconds", DEFAULT_TIMEOUT)), float(d.get("poll_seconds", DEFAULT_POLL)))


@dataclass
class _Wait:
    started: float
    seen: float
    checked: float = float("-inf")


_WAITS: dict[tuple[str, str, str], _Wait] = {}
_LOCK = threading.Lock()


def _seconds(value: datetime.timedelta | float | int | None, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


class SnapshotSensor(BaseSensor):
    """Wait until branch `branch` of store `url` points somewhere other than commit `after` ("" = until it exists).

    `SnapshotSensor(name="main_moved", timeout=timedelta(minutes=30), poll_interval=10)`; call it in a workflow
    as `main_moved(url=..., branch="main", after=commit)` and order the next task after it with `>>`.
    """

    def __init__(
        self,
        name: str,
        timeout: datetime.timedelta | float | None = None,
        poll_interval: datetime.timedelta | float = DEFAULT_POLL,
        config: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if config is not None:  # rebuilt by the sensor engine from the task template
            cfg = SnapshotSensorConfig.from_dict(config)
        else:
            cfg = SnapshotSensorConfig(_seconds(timeout, DEFAULT_TIMEOUT), _seconds(poll_interval, DEFAULT_POLL))
        if cfg.timeout_seconds <= 0 or cfg.poll_seconds < 0:
            raise ValueError("SnapshotSensor needs a positive timeout and a non-negative poll interval")
        super().__init__(
            name=name, timeout=datetime.timedelta(seconds=cfg.timeout_seconds), sensor_config=cfg, **kwargs
        )
        self.config = cfg

    async def poke(self, url: str, branch: str, after: str) -> bool:
        """True once the branch exists and is not at `after`; raise `SnapshotSensorTimeout` when time is up."""
        key = (url, branch, after)
        now = time.monotonic()
        stale = max(60.0, 10 * self.config.poll_seconds)  # a gap this long means an earlier, abandoned wait
        with _LOCK:
            wait = _WAITS.get(key)
            if wait is None or now - wait.seen > stale:
                wait = _WAITS[key] = _Wait(started=now, seen=now)
            wait.seen = now
            look = now - wait.checked >= self.config.poll_seconds
            if look:
                wait.checked = now
        if look:
            try:
                head = await asyncio.to_thread(_head, url, branch)
            except TransientStoreError as exc:
                log.info("branch %s of %s not readable this time: %s", branch, url, exc)
                head = None
            except DacflowError:
                with _LOCK:
                    _WAITS.pop(key, None)
                raise
            if head is not None and head != after:
                log.info("branch %s of %s moved to %s", branch, url, head[:12])
                with _LOCK:
                    _WAITS.pop(key, None)
                return True
        if now - wait.started >= self.config.timeout_seconds:
            with _LOCK:
                _WAITS.pop(key, None)
            what = f"move past {after[:12]}" if after else "appear"
            raise SnapshotSensorTimeout(
                f"branch {branch!r} of {url} did not {what} within {self.config.timeout_seconds:g}s",
                url=url,
                ref=branch,
                after=after,
            )
        return False


def _head(url: str, branch: str) -> str | None:
    return Repository.open(url).head(branch)


__all__ = ["SnapshotSensor", "SnapshotSensorConfig", "SnapshotSensorTimeout"]
