"""The gateway's own tasks (approvals as tasks, the tasks extension of 2026-07-28): the registry."""

from __future__ import annotations

from portero.gateway.tasks import KEEP_FINISHED, Tasks, wants_tasks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_task_belongs_to_the_client_that_made_it() -> None:
    tasks = Tasks(wall_clock=lambda: 1_764_000_000.0)
    task = tasks.create("laptop", "waiting")
    assert task is not None and len(task.id) >= 20
    assert tasks.get(task.id, "laptop") is task
    assert tasks.get(task.id, "ci-agent") is None  # another client is told it does not exist
    assert tasks.get(["not", "a", "string"], "laptop") is None
    wire = task.wire()
    assert wire["status"] == "working" and wire["statusMessage"] == "waiting"
    assert wire["createdAt"] == "2025-11-24T16:00:00Z" and wire["pollIntervalMs"] > 0
    assert "result" not in wire and "error" not in wire


def test_finishing_fills_the_status_payload_once() -> None:
    tasks = Tasks()
    task = tasks.create("c", "waiting")
    assert task is not None
    tasks.finish(task, "completed", result={"content": []}, message="done")
    tasks.finish(task, "failed", error={"code": -1, "message": "late"})  # a terminal task stays as it is
    wire = task.wire()
    assert wire["status"] == "completed" and wire["result"] == {"content": []} and "error" not in wire


def test_finished_tasks_are_forgotten_and_the_number_is_bounded() -> None:
    clock = Clock()
    tasks = Tasks(clock=clock, max_tasks=2)
    first, second = tasks.create("c", "a"), tasks.create("c", "b")
    assert first is not None and second is not None
    assert tasks.create("c", "c") is None  # two unfinished tasks: no more
    tasks.finish(first, "cancelled")
    clock.now += KEEP_FINISHED + 1
    assert tasks.create("c", "d") is not None  # the finished one was forgotten
    assert tasks.get(first.id, "c") is None and tasks.get(second.id, "c") is second


def test_the_client_asks_for_tasks_in_its_capabilities() -> None:
    assert wants_tasks({"extensions": {"io.modelcontextprotocol/tasks": {}}})
    assert not wants_tasks({}) and not wants_tasks({"extensions": ["io.modelcontextprotocol/tasks"]})
