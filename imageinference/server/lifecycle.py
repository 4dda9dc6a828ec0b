"""Running `imageInference` tasks: from queued prompts to stored, delivered results. Pure.

The engine (comfy_engine.py on ComfyUI) queues prompts; ComfyUI's own messages come back through
`on_message` (`progress`, `executed`, `execution_success`, `execution_error`, `execution_interrupted`). Each
finished prompt is one result of its task: it is PUT to `uploadEndpoint` when there is one, written to the store,
pushed to the WebSocket session of a sync task, and queued for the webhook. When the last result is in, the task
is finished and a waiting REST request is answered.
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
    progress: float = 0.0
    response: str | None = None
    done: bool = False
    missing: int = 0  # housekeeping sweeps that did not find the prompt in ComfyUI's queue
    download: float | None = None  # a model fetched on the request path (IMAGEINFERENCE_AUTO_PULL): its share

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
    plan: Plan
    parts: list[Part]
    results: dict[int, ResultRecord] = field(default_factory=dict)
    waiter: asyncio.Future[Outcome] | None = None

    def outcome(self) -> Outcome:
        return outcome_of(self.record, [self.results[i] for i in sorted(self.results)])


def outcome_of(record: TaskRecord, results: list[ResultRecord]) -> Outcome:
    """A task's items and errors in result order, with the request's warnings and every result's."""
    out = Outcome(warnings=merge_warnings(record.warnings, *(r.warnings for r in results)))
    for result in results:
        (out.data if result.kind == "data" else out.errors).append(result.body)
    return out


class TaskTracker:
    def __init__(self, runner: StoreRunner, engine: Engine, sessions: SessionRegistry, webhooks: WebhookWorker,
                 images: ImageStore, base_url: Callable[[], str], config: EndpointConfig):
        self.runner, self.engine, self.sessions, self.webhooks = runner, engine, sessions, webhooks
        self.images, self.base_url, self.config = images, base_url, config
        self.running: dict[str, Running] = {}
        self.by_prompt: dict[str, Part] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ start
    async def start(self, record: TaskRecord, plan: Plan, wait: bool) -> Running:
        """Queue every result's prompt of a task already written to the store."""
        loop = asyncio.get_running_loop()
        parts = [Part(record.task_uuid, i, str(uuid.uuid4())) for i in range(len(plan.prompts))]
        running = Running(record, plan, parts, waiter=loop.create_future() if wait else None)
        self.running[record.task_uuid] = running
        for part, prompt in zip(parts, plan.prompts, strict=True):
            self.by_prompt[part.prompt_id] = part
            try:
                rejection = await self.engine.submit(part.prompt_id, prompt)
            except Exception as exc:  # the task is in the store: it must end, with an error
                log.exception("queueing a prompt of %s failed", record.task_uuid)
                rejection = ({"message": f"{type(exc).__name__}: {exc}"}, {})
            if rejection is not None:
                errors = errors_from_rejection(rejection[0], rejection[1], record.task_uuid)
                self._spawn(self._finish_part(part, None, errors))
        return running

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

    def progress(self, task_uuid: str) -> int | None:
        running = self.running.get(task_uuid)
        if running is None:
            return None
        total = sum(p.fraction() for p in running.parts)
        return min(99, int(100 * total / max(1, len(running.parts))))

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
        elif event == DOWNLOAD_EVENT:
            value, top = data.get("value"), data.get("max")
            if isinstance(value, (int, float)) and isinstance(top, (int, float)) and top > 0:
                part.download = max(part.download or 0.0, min(1.0, value / top))
        elif event == "executed" and str(data.get("node")) == NODE["output"]:
            output = data.get("output") or {}
            response = output.get("response") if isinstance(output, dict) else None
            if isinstance(response, list) and response:
                part.response = str(response[0])
        elif event == "execution_success":
            self._spawn(self._finish_part(part, part.response, []))
        elif event in ("execution_error", "execution_interrupted"):
            self._spawn(self._finish_part(part, None, errors_from_execution(data, part.task_uuid)))

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
        running = self.running[part.task_uuid]
        kind, body = "error", {}
        warnings: list[dict[str, Any]] = []
        try:
            if not errors and response is None:
                errors = [ApiError("inferenceError", "the graph finished without a response", "", "", None,
                                   part.task_uuid)]
            if not errors and response is not None:
                item, warnings = result_item(response, running.plan.canonical, self.base_url())
                problem = await self._upload(running, item)
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
        await self._record(running, ResultRecord(part.task_uuid, part.index, "data" if kind == "data" else "error",
                                                 body, time.time(), warnings))

    async def _upload(self, running: Running, item: dict[str, Any]) -> str | None:
        target = running.record.upload_endpoint
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

    async def _record(self, running: Running, result: ResultRecord) -> None:
        record = running.record
        if not await self.runner.call(lambda s: s.add_result(result)):
            return  # this result was recorded already: the first one is what every client got
        running.results[result.index] = result
        frame = result_frame(result.kind, result.body, merge_warnings(record.warnings, result.warnings))
        if record.webhook_url:
            url = record.webhook_url
            await self.runner.call(lambda s: s.add_delivery(record.task_uuid, url, frame, result.created))
            self.webhooks.wake()
        if record.delivery == "sync" and record.session_id:
            await self.sessions.push(record.session_id, frame)
        if len(running.results) == len(running.parts):
            status: Status = "success" if all(r.kind == "data" for r in running.results.values()) else "error"
            await self.runner.call(lambda s: s.finish_task(record.task_uuid, status, time.time()))
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
