"""Where tasks, their results and pending webhook deliveries live: the interface and its records. Pure.

`SqliteTaskStore` (sqlite_store.py) implements it on one machine; the Redis backend (redis_store.py) implements
it for a service of several ComfyUI instances. Every method is synchronous and quick; the service calls them off
the event loop, one at a time.

Warnings (things accepted but not done as asked) belong to a task (the request's own, found when it was
validated) and to each result (found while it ran); every delivery path answers both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")

Status = Literal["processing", "success", "error"]
ResultKind = Literal["data", "error"]


@dataclass
class TaskRecord:
    task_uuid: str
    task_type: str
    status: Status = "processing"
    delivery: str = "sync"  # "sync" | "async" (webhookURL counts as async)
    expected: int = 1  # results the task will have (numberResults)
    webhook_url: str | None = None
    upload_endpoint: str | None = None
    session_id: str | None = None  # the WebSocket session that sent a sync task
    request: dict[str, Any] | None = None
    created: float = 0.0
    updated: float = 0.0
    warnings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ResultRecord:
    task_uuid: str
    index: int
    kind: ResultKind
    body: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    warnings: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DeliveryRecord:
    id: int
    task_uuid: str
    url: str
    body: dict[str, Any]
    attempts: int = 0
    next_at: float = 0.0
    status: Literal["pending", "done", "failed"] = "pending"
    last_error: str = ""


class QueueFull(Exception):
    """The store holds `unfinished` imageInference tasks already: the pending-task limit (`limit`) is reached."""

    def __init__(self, unfinished: int, limit: int):
        super().__init__(f"{unfinished} unfinished tasks (limit {limit})")
        self.unfinished, self.limit = unfinished, limit


class StoreUnavailable(Exception):
    """The store cannot be reached now (a shared store's server is down or too slow): nothing was written."""


Snapshot = tuple["TaskRecord | None", list["ResultRecord"]]


class TaskStore(Protocol):
    def create_task(self, task: TaskRecord, max_unfinished: int | None = None) -> bool:
        """Insert a new task; False (and nothing written) when its taskUUID is already known. With
        `max_unfinished`, an imageInference task is inserted only while fewer such tasks are unfinished, checked
        in the same atomic step as the insertion (QueueFull otherwise), so concurrent requests cannot overshoot."""
        ...

    def get_task(self, task_uuid: str) -> TaskRecord | None: ...

    def snapshot(self, task_uuid: str) -> tuple[TaskRecord | None, list[ResultRecord]]:
        """The task and its results as stored at one moment."""
        ...

    def snapshots(self, task_uuids: list[str]) -> dict[str, tuple[TaskRecord | None, list[ResultRecord]]]:
        """`snapshot` of each task, in one call."""
        ...

    def add_result(self, result: ResultRecord) -> bool:
        """Record result `index` of a task; False (nothing written) when that result is already recorded: the
        first one recorded is the one every client gets."""
        ...

    def finish_task(self, task_uuid: str, status: Status, now: float) -> None: ...

    def results(self, task_uuid: str) -> list[ResultRecord]:
        """The task's results by index."""
        ...

    def unfinished(self) -> list[TaskRecord]: ...

    def count_unfinished(self) -> int: ...

    def add_delivery(self, task_uuid: str, url: str, body: dict[str, Any], next_at: float) -> int: ...

    def due_deliveries(self, now: float, limit: int = 50) -> list[DeliveryRecord]: ...

    def update_delivery(self, delivery: DeliveryRecord) -> None: ...

    def purge(self, finished_before: float) -> int:
        """Forget finished tasks (with their results and deliveries) last updated before the time; how many."""
        ...

    def close(self) -> None: ...


class StoreRunner:
    """Runs store calls on worker threads (one for SQLite: in order), so the event loop never waits on the disk or
    the network."""

    def __init__(self, store: TaskStore, threads: int = 1):
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="imageinference-store")

    async def call(self, fn: Callable[[TaskStore], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.store)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Any blocking call on the store's threads (a backend's own methods)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.store.close()
