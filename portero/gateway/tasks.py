"""Tasks (the ``io.modelcontextprotocol/tasks`` extension of 2026-07-28) for calls that wait for an
approval.

A stateless-era client that declares the extension in its request's capabilities gets, for a call
that needs the admin's approval, a task at once instead of a request held open: ``tasks/get``
says ``working`` with the waiting message, then ``completed`` with the tool's result (a refusal is
a result with ``isError``, as a blocking call would answer), or ``failed`` with a JSON-RPC error;
``tasks/cancel`` withdraws the approval. A client that did not declare the extension keeps the
blocking call.

Task ids are random (128 bits) and bound to the client that created them: another client asking
for one is told it does not exist. Tasks live in memory, bounded in number, and are forgotten
:data:`KEEP_FINISHED` seconds after they finish.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
KEEP_FINISHED = 3600.0  # seconds a finished task can still be read
MAX_TASKS = 1000
POLL_INTERVAL_MS = 1000
TERMINAL = ("completed", "failed", "cancelled")


def wants_tasks(capabilities: dict[str, Any]) -> bool:
    """Whether a client's per-request capabilities declare the tasks extension."""
    extensions = capabilities.get("extensions")
    return isinstance(extensions, dict) and TASKS_EXTENSION in extensions


def _iso(ts: float) -> str:
    return (
        datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


@attrs.define(eq=False)
class Task:
    id: str
    owner: str
    created: float
    updated: float
    status: str = "working"
    status_message: str = ""
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    finished_at: float | None = None  # monotonic, for forgetting
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    def wire(self) -> dict[str, Any]:
        """The task as ``tasks/get`` answers it (and as the creating call does, with resultType task)."""
        out: dict[str, Any] = {
            "taskId": self.id,
            "status": self.status,
            "createdAt": _iso(self.created),
            "lastUpdatedAt": _iso(self.updated),
            "ttlMs": None,
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if self.status_message:
            out["statusMessage"] = self.status_message
        if self.status == "completed" and self.result is not None:
            out["result"] = self.result
        if self.status == "failed" and self.error is not None:
            out["error"] = self.error
        return out


class Tasks:
    """The gateway's own tasks, by id."""

    def __init__(
        self,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        max_tasks: int = MAX_TASKS,
    ) -> None:
        self._wall = wall_clock
        self._clock = clock
        self._max = max_tasks
        self._by_id: dict[str, Task] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def create(self, owner: str, message: str) -> Task | None:
        """A new ``working`` task, or None when the gateway holds too many unfinished ones."""
        self._forget_old()
        if len(self._by_id) >= self._max:
            return None
        now = self._wall()
        task = Task(
            id=secrets.token_urlsafe(16), owner=owner, created=now, updated=now, status_message=message
        )
        self._by_id[task.id] = task
        return task

    def get(self, task_id: Any, owner: str) -> Task | None:
        task = self._by_id.get(task_id) if isinstance(task_id, str) else None
        return task if task is not None and secrets.compare_digest(task.owner, owner) else None

    def finish(
        self,
        task: Task,
        status: str,
        *,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        message: str = "",
    ) -> None:
        if task.status in TERMINAL:
            return
        task.status, task.result, task.error = status, result, error
        task.status_message = message
        task.updated = self._wall()
        task.finished_at = self._clock()

    def _forget_old(self) -> None:
        now = self._clock()
        for task_id, task in list(self._by_id.items()):
            if task.finished_at is not None and now - task.finished_at > KEEP_FINISHED:
                del self._by_id[task_id]
