"""Running `imageInference` tasks: from queued prompts to stored, delivered results. Pure.

`PartRunner` runs results' prompts on this ComfyUI: the engine (comfy_engine.py) queues them, ComfyUI's own
messages come back through `on_message` (`progress`, `executed`, `execution_success`, `execution_error`,
`execution_interrupted`), and each finished prompt becomes one result record (PUT to `uploadEndpoint` first when
there is one). What happens to a result record depends on the backend:

- `TaskTracker` (one ComfyUI, SQLite): the task's prompts are queued here when it is accepted; each result is
  written to the store, pushed to the WebSocket session of a sync task and queued for the webhook; when the last
  result is in, the task is finished and a waiting REST request is answered.
- `FleetTracker` (fleet.py: many ComfyUI instances, Redis): results travel through Redis to the instance that
  accepted the task.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..contract.errors import ApiError
from ..engines.imageio.deliver import MIME
from ..engines.imageio.store import ImageStore
from ..engines.models.pull import DOWNLOAD_EVENT
from ..interop.compiler import NODE
from .config import EndpointConfig
from .delivery import WebhookWorker, send_with_retries
from .plan import Plan, errors_from_execution, errors_from_rejection, result_item
from .protocol import merge_warnings, result_frame
from .sessions import SessionRegistry
from .store import ResultRecord, Status, StoreRunner, TaskRecord, TaskStore

log = logging.getLogger("imageinference.server")
RESTART_MESSAGE = ("ComfyUI restarted before this result was finished; send the task again with a new taskUUID")


class Engine(Protocol):
    async def submit(self, prompt_id: str, prompt: dict[str, Any]) -> tuple[Any, Any] | None:
        """Queue a prompt under `prompt_id`; None when queued, else ComfyUI's (error, node_errors)."""
        ...


@dataclass
class Part:
    task_uuid: str
    index: int
    prompt_id: str
    record: TaskRecord | None = None  # the task this result belongs to (its request, upload target)
    progress: float = 0.0
    response: str | None = None
    done: bool = False
    missing: int = 0  # housekeeping sweeps that did not find the prompt in ComfyUI's queue
    download: float | None = None  # a model fetched on the request path (IMAGEINFERENCE_AUTO_PULL): its share
    ticket: Any = None  # the backend's handle on this piece of work (fleet: its queue entry)

    def fraction(self) -> float:
        """Done: 1. A result that had to fetch a model counts the download as the first half of its way."""
        if self.done:
            return 1.0
        return self.progress if self.download is None else 0.5 * self.download + 0.5 * self.progress


@dataclass
class Outcome:
    """What a finished task has: its result items and errors in result order, and warnings."""

    data: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)


@dataclass
class Running:
    record: TaskRecord
    parts: list[Part]
    results: dict[int, ResultRecord] = field(default_factory=dict)
    waiter: asyncio.Future[Outcome] | None = None
    kinds: dict[int, str] = field(default_factory=dict)  # results being recorded or recorded, by index

    def outcome(self) -> Outcome:
        return outcome_of(self.record, [self.results[i] for i in sorted(self.results)])

    @property
    def complete(self) -> bool:
        return len(self.results) >= max(1, self.record.expected)


def outcome_of(record: TaskRecord, results: list[ResultRecord]) -> Outcome:
    """A task's items and errors in result order, with the request's warnings and every result's."""
    out = Outcome(warnings=merge_warnings(record.warnings, *(r.warnings for r in results)))
    for result in results:
        (out.data if result.kind == "data" else out.errors).append(result.body)
    return out


def progress_percent(fractions: list[float], expected: int) -> int:
    """getResponse's progress: the mean share over a task's results, rounded down, at most 99 while processing."""
    return min(99, int(100 * sum(fractions) / max(1, expected)))


class PartRunner:
    """Runs results' prompts on this ComfyUI and turns ComfyUI's messages about them into result records."""

    def __init__(self, engine: Engine, images: ImageStore, base_url: Callable[[], str], config: EndpointConfig):
        self.engine, self.images, self.base_url, self.config = engine, images, base_url, config
        self.by_prompt: dict[str, Part] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def run_part(self, part: Part, prompt: dict[str, Any]) -> None:
        """Queue one result's prompt; a prompt ComfyUI refuses ends the result with the refusal."""
        self.by_prompt[part.prompt_id] = part
        try:
            rejection = await self.engine.submit(part.prompt_id, prompt)
        except Exception as exc:  # the task is in the store: it must end, with an error
            log.exception("queueing a prompt of %s failed", part.task_uuid)
            rejection = ({"message": f"{type(exc).__name__}: {exc}"}, {})
        if rejection is not None:
            errors = errors_from_rejection(rejection[0], rejection[1], part.task_uuid)
            self._spawn(self._finish_part(part, None, errors))

    def reap(self, active_prompt_ids: set[str]) -> int:
        """End, with an error, results whose prompt left ComfyUI's queue without a word (the queue was cleared,
        the item deleted): missing from the queue on two sweeps in a row. Returns how many."""
        ended = 0
        for part in list(self.by_prompt.values()):
            if part.done or part.prompt_id in active_prompt_ids:
                part.missing = 0
                continue
            part.missing += 1
            if part.missing >= 2:
                ended += 1
                self._spawn(self._finish_part(part, None, [ApiError(
                    "inferenceCancelled", "the prompt was removed from ComfyUI's queue before it ran", "", "",
                    None, part.task_uuid)]))
        return ended

    # ------------------------------------------------------------------ ComfyUI's messages
    def on_message(self, event: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        part = self.by_prompt.get(str(data.get("prompt_id")))
        if part is None or part.done:
            return
        if event == "progress" and str(data.get("node")) == NODE["sampler"]:
            value, top = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(top, (int, float)) and top > 0:
                part.progress = max(part.progress, min(1.0, value / top))
                self.progressed(part)
        elif event == DOWNLOAD_EVENT:
            value, top = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(top, (int, float)) and top > 0:
                part.download = max(part.download or 0.0, min(1.0, value / top))
                self.progressed(part)
        elif event == "executed" and str(data.get("node")) == NODE["output"]:
            output = data.get("output") or {}
            response = output.get("response") if isinstance(output, dict) else None
            if isinstance(response, list) and response:
                part.response = str(response[0])
        elif event == "execution_success":
            self._spawn(self._finish_part(part, part.response, []))
        elif event in ("execution_error", "execution_interrupted"):
            self._spawn(self._finish_part(part, None, errors_from_execution(data, part.task_uuid)))

    def progressed(self, part: Part) -> None:
        """A result moved on (the fleet shares it through Redis; one ComfyUI reads it from memory)."""

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ one result
    async def _finish_part(self, part: Part, response: str | None, errors: list[ApiError]) -> None:
        if part.done:
            return
        part.done = True
        self.by_prompt.pop(part.prompt_id, None)
        request = (part.record.request if part.record else None) or {}
        kind, body = "error", {}
        warnings: list[dict[str, Any]] = []
        try:
            if not errors and response is None:
                errors = [ApiError("inferenceError", "the graph finished without a response", "", "", None,
                                   part.task_uuid)]
            if not errors and response is not None:
                item, warnings = result_item(response, request, self.base_url())
                problem = await self._upload(part.record.upload_endpoint if part.record else None, item)
                if problem:
                    errors = [ApiError("uploadFailed", f"the image {item.get('imageUUID')} could not be PUT to "
                                       f"uploadEndpoint: {problem}", "uploadEndpoint", "string", None,
                                       part.task_uuid)]
                else:
                    kind, body = "data", item
        except Exception as exc:  # a broken response must still end the task, with an error
            log.exception("imageInference result %s/%d failed", part.task_uuid, part.index)
            errors = [ApiError("inferenceError", f"{type(exc).__name__}: {exc}"[:2000], "", "", None,
                               part.task_uuid)]
        if kind == "error":
            body = errors[0].to_json() if len(errors) == 1 else merge_errors(errors)
        await self.deliver(part, ResultRecord(part.task_uuid, part.index, "data" if kind == "data" else "error",
                                              body, time.time(), warnings))

    async def deliver(self, part: Part, result: ResultRecord) -> None:
        raise NotImplementedError

    async def _upload(self, target: str | None, item: dict[str, Any]) -> str | None:
        if not target:
            return None
        path = await asyncio.to_thread(self.images.find, str(item.get("imageUUID", "")))
        if path is None:
            return "the image file is gone"
        data = await asyncio.to_thread(Path(path).read_bytes)
        fmt = {"jpg": "JPG", "png": "PNG", "webp": "WEBP"}.get(path.suffix.lstrip("."), "JPG")
        c = self.config
        return await send_with_retries("PUT", target, data, MIME[fmt], c.webhook_attempts, c.webhook_backoff_s,
                                       c.webhook_backoff_max_s, c.webhook_timeout_s, c.allow_private_targets)


class TaskTracker(PartRunner):
    """One ComfyUI: tasks are stored in its own store and run on its own queue."""

    def __init__(self, runner: StoreRunner, engine: Engine, sessions: SessionRegistry, webhooks: WebhookWorker,
                 images: ImageStore, base_url: Callable[[], str], config: EndpointConfig):
        super().__init__(engine, images, base_url, config)
        self.runner, self.sessions, self.webhooks = runner, sessions, webhooks
        self.running: dict[str, Running] = {}

    # ------------------------------------------------------------------ start
    async def submit(self, record: TaskRecord, plan: Plan, wait: bool) -> Running | None:
        """Store a new task (QueueFull past the pending-task limit, checked in the same atomic write) and queue its
        prompts; None when its taskUUID is taken."""
        limit = self.config.max_pending_tasks
        if not await self.runner.call(lambda s: s.create_task(record, limit)):
            return None
        return await self.start(record, plan, wait)

    async def start(self, record: TaskRecord, plan: Plan, wait: bool) -> Running:
        """Queue every result's prompt of a task already written to the store."""
        loop = asyncio.get_running_loop()
        parts = [Part(record.task_uuid, i, str(uuid.uuid4()), record) for i in range(len(plan.prompts))]
        running = Running(record, parts, waiter=loop.create_future() if wait else None)
        self.running[record.task_uuid] = running
        for part, prompt in zip(parts, plan.prompts, strict=True):
            await self.run_part(part, prompt)
        return running

    def progress(self, task_uuid: str) -> int | None:
        running = self.running.get(task_uuid)
        if running is None:
            return None
        return progress_percent([p.fraction() for p in running.parts], len(running.parts))

    async def progress_of(self, task_uuid: str) -> int:
        return self.progress(task_uuid) or 0

    async def progress_many(self, task_uuids: list[str]) -> dict[str, int]:
        return {u: self.progress(u) or 0 for u in task_uuids}

    def refusal(self) -> str | None:
        return None

    # ------------------------------------------------------------------ one result
    async def deliver(self, part: Part, result: ResultRecord) -> None:
        running = self.running.get(part.task_uuid)
        if running is not None:
            await self._record(running, result)

    async def _record(self, running: Running, result: ResultRecord) -> None:
        """Store the result, its webhook POST and (with the last result) the task's end in one store call."""
        record = running.record
        if result.index in running.kinds:
            return  # one result per index: the first one is what every client gets
        running.kinds[result.index] = result.kind  # before any await: concurrent results each see the others
        last = len(running.kinds) >= len(running.parts)
        status: Status = "success" if all(k == "data" for k in running.kinds.values()) else "error"
        frame = result_frame(result.kind, result.body, merge_warnings(record.warnings, result.warnings))

        def write(s: TaskStore) -> bool:
            if not s.add_result(result):
                return False  # recorded already: the first one is what every client got
            if record.webhook_url:
                s.add_delivery(record.task_uuid, record.webhook_url, frame, result.created)
            if last:
                s.finish_task(record.task_uuid, status, time.time())
            return True

        if not await self.runner.call(write):
            return
        running.results[result.index] = result
        if record.webhook_url:
            self.webhooks.wake()
        if record.delivery == "sync" and record.session_id:
            await self.sessions.push(record.session_id, frame)
        if last:
            self.running.pop(record.task_uuid, None)
            if running.waiter is not None and not running.waiter.done():
                running.waiter.set_result(running.outcome())

    # ------------------------------------------------------------------ restart
    async def recover(self) -> int:
        """Tasks left unfinished by a previous run get an error for every missing result (and their webhook)."""
        unfinished = await self.runner.call(lambda s: s.unfinished())
        for record in unfinished:
            await self._fail_missing(record)
        if unfinished:
            self.webhooks.wake()
        return len(unfinished)

    async def _fail_missing(self, record: TaskRecord) -> None:
        task_uuid, url = record.task_uuid, record.webhook_url
        done = {r.index for r in await self.runner.call(lambda s: s.results(task_uuid))}
        now = time.time()
        body = ApiError("serverRestarted", RESTART_MESSAGE, "", "", None, task_uuid, record.task_type).to_json()
        missing = [ResultRecord(task_uuid, i, "error", body, now) for i in range(max(1, record.expected))
                   if i not in done]

        def write(s: TaskStore) -> None:
            for result in missing:
                s.add_result(result)
                if url:
                    s.add_delivery(task_uuid, url, result_frame("error", body, record.warnings), now)
            s.finish_task(task_uuid, "error", now)

        await self.runner.call(write)


def merge_errors(errors: list[ApiError]) -> dict[str, Any]:
    """Several errors of one result as one error object (the first), the others listed in its message."""
    first = errors[0].to_json()
    first["message"] = "; ".join(e.message for e in errors)[:4000]
    return first
