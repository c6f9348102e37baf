"""Triggers that wait for a dacflow branch to move, polling its ref cheaply (a HEAD request per poll).

`DacSnapshotTrigger` serves the deferrable `DacSnapshotSensor`: it fires once, or fires an error event.
`DacBranchEventTrigger` serves `AssetWatcher`: it fires on every new commit, so a branch starts a DAG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, BaseTrigger, TriggerEvent
from dacflow import DacflowError
from dacflow.errors import TransientStoreError
from dacflow.watch import BranchWatch

log = logging.getLogger(__name__)

_TRANSIENT_LIMIT = 5  # consecutive transient store errors a sensor's trigger rides out before it gives up


def one_line(exc: BaseException) -> str:
    """An error as one line: its class and message (what a task log and an event carry)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, DacflowError) else f"{type(exc).__name__}: {text}"


def _open_watch(conn_id: str | None, url: str | None, branch: str, after: str | None, meta: dict) -> BranchWatch:
    from .hooks import DacHook

    return BranchWatch(DacHook(conn_id, url=url).get_repo(), branch, after=after, meta_match=meta)


class DacSnapshotTrigger(BaseTrigger):
    """Fire once `branch` points at a commit other than `after` (and its metadata has `meta_match`).

    The event is `{"status": "success", "commit", "parent", "previous", "branch", "message", "changes"}`, or
    `{"status": "error", "message"}` when the repository cannot be read (no exception leaves the triggerer).
    """

    def __init__(
        self,
        *,
        branch: str,
        dacflow_conn_id: str | None = None,
        url: str | None = None,
        after: str | None = None,
        meta_match: dict[str, Any] | None = None,
        poke_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.branch, self.dacflow_conn_id, self.url = branch, dacflow_conn_id, url
        self.after, self.meta_match, self.poke_interval = after, dict(meta_match or {}), float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "branch": self.branch,
                "dacflow_conn_id": self.dacflow_conn_id,
                "url": self.url,
                "after": self.after,
                "meta_match": self.meta_match,
                "poke_interval": self.poke_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        transient = 0
        try:
            watch = await asyncio.to_thread(
                _open_watch, self.dacflow_conn_id, self.url, self.branch, self.after, self.meta_match
            )
            while True:
                try:
                    move = await asyncio.to_thread(watch.poll)
                    transient = 0
                except TransientStoreError as exc:
                    transient += 1
                    if transient >= _TRANSIENT_LIMIT:
                        raise
                    log.warning("dacflow: %s (retrying)", one_line(exc))
                    move = None
                if move is not None:
                    yield TriggerEvent({"status": "success", **move.to_json()})
                    return
                await asyncio.sleep(self.poke_interval)
        except Exception as exc:  # every failure becomes an event the sensor turns into a one-line task failure
            yield TriggerEvent({"status": "error", "branch": self.branch, "message": one_line(exc)})


class DacBranchEventTrigger(BaseEventTrigger):
    """Fire an event for every new commit on `branch` (for `Asset(..., watchers=[AssetWatcher(...)])`).

    It starts from the commit it last reported (kept in Airflow's asset state store, so a restarted triggerer
    misses nothing) or, the first time, from the branch's current head. Store errors are logged and retried;
    they never fire an event.
    """

    def __init__(
        self,
        *,
        branch: str,
        dacflow_conn_id: str | None = None,
        url: str | None = None,
        meta_match: dict[str, Any] | None = None,
        poke_interval: float = 30.0,
    ) -> None:
        super().__init__()
        self.branch, self.dacflow_conn_id, self.url = branch, dacflow_conn_id, url
        self.meta_match, self.poke_interval = dict(meta_match or {}), float(poke_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "branch": self.branch,
                "dacflow_conn_id": self.dacflow_conn_id,
                "url": self.url,
                "meta_match": self.meta_match,
                "poke_interval": self.poke_interval,
            },
        )

    @property
    def _state_key(self) -> str:
        return f"dacflow.seen.{self.branch}"

    async def _remembered(self) -> str | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            return None
        try:
            value = await store.aget(self._state_key)
        except Exception as exc:
            log.warning("dacflow: cannot read the asset state store (%s)", one_line(exc))
            return None
        return value if isinstance(value, str) else None

    async def _remember(self, commit: str) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is not None:
            try:
                await store.aset(self._state_key, commit)
            except Exception as exc:
                log.warning("dacflow: cannot write the asset state store (%s)", one_line(exc))

    async def _start(self) -> BranchWatch:
        seen = await self._remembered()
        watch = await asyncio.to_thread(_open_watch, self.dacflow_conn_id, self.url, self.branch, seen, self.meta_match)
        if seen is None:  # first start: the current head is the baseline, not news
            watch.seen = await asyncio.to_thread(watch.repo.head, self.branch)
        return watch

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watch: BranchWatch | None = None
        while True:
            try:
                if watch is None:
                    watch = await self._start()
                move = await asyncio.to_thread(watch.poll)
            except Exception as exc:
                log.warning("dacflow: watching branch %s failed: %s (retrying)", self.branch, one_line(exc))
                move = None
            if move is not None:
                await self._remember(move.commit)
                yield TriggerEvent(move.to_json())
            await asyncio.sleep(self.poke_interval)
