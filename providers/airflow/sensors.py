"""`DacSnapshotSensor`: wait until a branch moves past a commit; deferrable by default (no worker slot held)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException
from dacflow.watch import BranchWatch

from .hooks import DacHook
from .triggers import DacSnapshotTrigger


class DacSnapshotSensor(BaseSensorOperator):
    """Succeed once `branch` points at a commit other than `after` whose metadata holds `meta_match`.

    `after=None` waits for the branch to exist. Returns (XCom) the move: commit, parent, previous, message,
    change counts. With `deferrable=True` (default) the wait runs in the triggerer as a `DacSnapshotTrigger`.
    """

    template_fields: Sequence[str] = ("branch", "after", "url", "meta_match")
    ui_color = "#c9e4f5"

    def __init__(
        self,
        *,
        branch: str,
        dacflow_conn_id: str | None = DacHook.default_conn_name,
        url: str | None = None,
        after: str | None = None,
        meta_match: dict[str, Any] | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.branch, self.dacflow_conn_id, self.url = branch, dacflow_conn_id, url
        self.after, self.meta_match, self.deferrable = after or None, dict(meta_match or {}), deferrable
        self._watch: BranchWatch | None = None

    def _poll(self) -> dict[str, Any] | None:
        if self._watch is None:
            repo = DacHook(self.dacflow_conn_id, url=self.url).get_repo()
            self._watch = BranchWatch(repo, self.branch, after=self.after, meta_match=self.meta_match)
        move = self._watch.poll()
        return move.to_json() if move else None

    def poke(self, context: Any) -> bool | PokeReturnValue:
        from .operators import failing_with_one_line

        with failing_with_one_line():
            move = self._poll()
        return PokeReturnValue(is_done=True, xcom_value=move) if move else False

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from .operators import failing_with_one_line

        with failing_with_one_line():
            move = self._poll()  # already there: no trip through the triggerer
        if move is not None:
            return move
        self.defer(
            trigger=DacSnapshotTrigger(
                branch=self.branch,
                dacflow_conn_id=self.dacflow_conn_id,
                url=self.url,
                after=self.after,
                meta_match=self.meta_match,
                poke_interval=self.poke_interval,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout) if self.timeout else None,
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger: return the move, or fail with the trigger's one-line reason."""
        if event.get("status") != "success":
            raise AirflowFailException(f"dacflow: waiting for branch {self.branch!r} failed: {event.get('message')}")
        self.log.info("branch %s moved to %s", self.branch, event["commit"])
        return {k: v for k, v in event.items() if k != "status"}
