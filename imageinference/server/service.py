"""The task service: every task of a request validated and answered on its own, whatever the transport. Pure.

Task types: `authentication`, `ping`, `imageInference` (sync and async), `getResponse`, `imageUpload`,
`modelSearch`. An error in one task never stops the others; answers keep the order of the tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..contract.errors import ApiError, ContractError
from ..contract.response import AsyncAck
from ..engines.imageio.fetch import Deadline
from ..engines.imageio.limits import Limits
from ..engines.imageio.store import ImageStore
from ..engines.models.catalog import Catalog, CatalogError
from .auth import auth_error, check_authentication_task
from .config import EndpointConfig
from .delivery import DeliveryError, check_target
from .lifecycle import Outcome, Running, outcome_of
from .plan import Plan, plan_task
from .protocol import check_task_shape, echo, identity, merge_warnings, require_uuid, task_error
from .search import model_search
from .sessions import TooManySessions
from .store import QueueFull, ResultRecord, Snapshot, StoreRunner, StoreUnavailable, TaskRecord
from .uploads import upload_image

Json = dict[str, Any]
log = logging.getLogger("imageinference.server")


class Tracker(Protocol):
    """Where accepted imageInference tasks go: this ComfyUI's queue (lifecycle.TaskTracker) or the fleet's
    (fleet.FleetTracker)."""

    async def submit(self, record: TaskRecord, plan: Plan, wait: bool) -> Running | None:
        """Store and queue a task: None when its taskUUID is taken, QueueFull past the pending-task limit."""
        ...

    async def progress_of(self, task_uuid: str) -> int: ...

    async def progress_many(self, task_uuids: list[str]) -> dict[str, int]: ...

    def refusal(self) -> str | None:
        """Why this instance takes no tasks now, or None."""
        ...


@dataclass
class Caller:
    """Who sent a batch, over what. `authenticate` (WebSocket) attaches the session and sends its own reply;
    `ensure_session` gives the WebSocket session that sync results are pushed to."""

    transport: str  # "rest" | "ws"
    authenticated: bool
    given_key: Any = None
    session_id: str | None = None
    authenticate: Callable[[Json], Awaitable[Json | None]] | None = None
    ensure_session: Callable[[], Awaitable[str]] | None = None


@dataclass
class Slot:
    """The answer to one task: items and errors now, or a REST sync task still running."""

    data: list[Json] = field(default_factory=list)
    errors: list[Json] = field(default_factory=list)
    waiter: asyncio.Future[Outcome] | None = None
    task_uuid: str = ""
    warnings: list[Json] = field(default_factory=list)


@dataclass
class Answer:
    data: list[Json] = field(default_factory=list)
    errors: list[Json] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)


class TaskService:
    def __init__(self, runner: StoreRunner, tracker: Tracker, config: EndpointConfig, images: ImageStore,
                 base_url: Callable[[], str], load_catalog: Callable[[], Catalog] = Catalog.load,
                 limits: Callable[[], Limits] = Limits.from_env):
        self.runner, self.tracker, self.config, self.images = runner, tracker, config, images
        self.base_url, self.load_catalog, self.limits = base_url, load_catalog, limits

    async def handle_batch(self, tasks: list[Any], caller: Caller) -> list[Slot]:
        slots = []
        try:
            polled = await self._poll_all(tasks)
        except StoreUnavailable:
            polled = {}  # each getResponse then meets the outage itself, and says so
        for raw in tasks:
            try:
                slots.append(await self._one(raw, caller, polled))
            except (TooManySessions, StoreUnavailable) as exc:
                slots.append(Slot(errors=[task_error(raw, "serviceUnavailable", f"{exc}; try again later")
                                          .to_json()]))
            except Exception as exc:  # never a 500: an unexpected failure is this task's error
                log.exception("imageInference endpoint: a %s task failed", identity(raw)[0] or "malformed")
                slots.append(Slot(errors=[task_error(raw, "internalServerError",
                                                     f"{type(exc).__name__}: {exc}"[:500]).to_json()]))
        return slots

    async def collect(self, slots: list[Slot], timeout_s: float | None = None) -> Answer:
        """Wait for the REST sync tasks among the slots (up to the sync timeout) and assemble the answer."""
        deadline = time.monotonic() + (self.config.sync_timeout_s if timeout_s is None else timeout_s)
        answer = Answer()
        for slot in slots:
            if slot.waiter is not None:
                try:
                    remaining = max(0.0, deadline - time.monotonic())
                    outcome = await asyncio.wait_for(asyncio.shield(slot.waiter), remaining)
                    slot.data, slot.errors = outcome.data, outcome.errors
                    slot.warnings = merge_warnings(slot.warnings, outcome.warnings)
                except asyncio.TimeoutError:
                    slot.errors = [ApiError("timeout", f"the task is still running after "
                                            f"{self.config.sync_timeout_s:.0f} s; poll getResponse with this "
                                            "taskUUID for its results", "", "", None, slot.task_uuid).to_json()]
            answer.data.extend(slot.data)
            answer.errors.extend(slot.errors)
            answer.warnings = merge_warnings(answer.warnings, slot.warnings)
        return answer

    # ------------------------------------------------------------------ dispatch
    async def _poll_all(self, tasks: list[Any]) -> dict[str, tuple[int, Snapshot]]:
        """The state of every task a batch polls, read at once (a client polling many tasks makes one store call,
        not one per task): progress first, then each task with its results as stored at one moment. A task the
        batch also creates or uploads is left to its own turn."""
        polled = [str(t["taskUUID"]).lower() for t in tasks if isinstance(t, dict) and t.get("taskType") == "getResponse"
                  and require_uuid(t) is None]
        others = {str(t.get("taskUUID", "")).lower() for t in tasks if isinstance(t, dict)
                  and t.get("taskType") != "getResponse"}
        wanted = sorted(set(polled) - others)
        if len(wanted) < 2:
            return {}
        progress = await self.tracker.progress_many(wanted)
        snapshots = await self.runner.call(lambda s: s.snapshots(wanted))
        return {u: (progress.get(u, 0), snapshots[u]) for u in wanted}

    async def _one(self, raw: Any, caller: Caller, polled: dict[str, tuple[int, Snapshot]] | None = None) -> Slot:
        shape = check_task_shape(raw)
        if shape is not None:
            return Slot(errors=[shape.to_json()])
        task_type = raw["taskType"]
        if task_type == "ping":
            return Slot(data=[echo(raw, pong=True)])
        if task_type == "authentication":
            problem = check_authentication_task(raw, self.config.api_key)
            if problem is not None:
                return Slot(errors=[problem.to_json()])
            caller.authenticated = True
            item = await caller.authenticate(raw) if caller.authenticate else echo(raw)
            return Slot(data=[item] if item else [])
        if not caller.authenticated:
            return Slot(errors=[_as_task(auth_error(raw, caller.given_key), raw).to_json()])
        refusal = self.tracker.refusal()
        if refusal is not None:  # this instance cannot serve tasks (a fleet instance set up unlike the others)
            return Slot(errors=[task_error(raw, "serviceUnavailable", refusal).to_json()])
        if task_type != "modelSearch":
            bad = require_uuid(raw)
            if bad is not None:
                return Slot(errors=[bad.to_json()])
        if task_type == "imageInference":
            return await self._image_inference(raw, caller)
        if task_type == "getResponse":
            return await self._get_response(raw, (polled or {}).get(str(raw["taskUUID"]).lower()))
        if task_type == "imageUpload":
            return await self._image_upload(raw)
        return await self._model_search(raw)

    # ------------------------------------------------------------------ imageInference
    async def _image_inference(self, raw: Json, caller: Caller) -> Slot:
        try:
            # a few tenths of a millisecond for a request of ordinary size: a thread only for large ones (inline
            # images), whose copying and encoding would hold the event loop
            plan = plan_task(raw) if small(raw) else await asyncio.get_running_loop().run_in_executor(
                None, plan_task, raw)
        except ContractError as exc:
            return Slot(errors=[e.to_json() for e in exc.errors])
        refused = await self._check_targets(raw, {"webhookURL": plan.webhook_url,
                                                  "uploadEndpoint": plan.upload_endpoint})
        if refused:
            return Slot(errors=refused)
        session = None
        if plan.delivery == "sync" and caller.transport == "ws":
            session = caller.session_id or (await caller.ensure_session() if caller.ensure_session else None)
        request = dict(plan.canonical)
        request.update({k: v for k, v in (("webhookURL", plan.webhook_url),
                                          ("uploadEndpoint", plan.upload_endpoint)) if v})
        now = time.time()
        record = TaskRecord(plan.task_uuid, "imageInference", "processing", plan.delivery, len(plan.prompts),
                            plan.webhook_url, plan.upload_endpoint, session, request, now, now, plan.warnings)
        wait = plan.delivery == "sync" and caller.transport == "rest"
        try:
            # the pending-task limit is checked by the store in the same atomic step as the insertion
            running = await self.tracker.submit(record, plan, wait)
        except QueueFull as full:
            return Slot(errors=[task_error(raw, "queueFull", f"{full.unfinished} tasks are unfinished; the limit is "
                                           f"{full.limit} (IMAGEINFERENCE_MAX_PENDING_TASKS); try again later")
                                .to_json()])
        if running is None:
            return Slot(errors=[_conflict(raw).to_json()])
        if plan.delivery == "async":
            return Slot(data=[AsyncAck(taskUUID=plan.task_uuid).model_dump()], warnings=list(plan.warnings))
        return Slot(waiter=running.waiter, task_uuid=plan.task_uuid, warnings=list(plan.warnings))

    async def _check_targets(self, raw: Json, targets: dict[str, str | None]) -> list[Json]:
        """Webhook and upload targets must be reachable addresses (not private ones, unless allowed)."""
        errors = []
        for name, url in targets.items():
            if url:
                try:
                    await check_target(url, self.config.allow_private_targets,
                                       Deadline(self.config.webhook_timeout_s))
                except DeliveryError as exc:
                    errors.append(task_error(raw, f"invalid{name[:1].upper()}{name[1:]}",
                                             f"Invalid value for {name}: {exc}", name, "string").to_json())
        return errors

    # ------------------------------------------------------------------ getResponse
    async def _get_response(self, raw: Json, polled: tuple[int, Snapshot] | None = None) -> Slot:
        task_uuid = str(raw["taskUUID"]).lower()
        # Progress first, then the task and its results in one store call: a task that finishes meanwhile answers
        # either processing with the progress it had (never 0 after 99: the tracker forgets a task only after its
        # end is stored) or finished; its results always match its status as stored at one moment.
        if polled is not None:
            progress, (record, results) = polled
        else:
            progress = await self.tracker.progress_of(task_uuid)
            record, results = await self.runner.call(lambda s: s.snapshot(task_uuid))
        if record is None:
            return Slot(errors=[task_error(raw, "taskNotFound", f"no task {task_uuid} is known here (finished "
                                           "tasks are kept for IMAGEINFERENCE_TASK_RETENTION_HOURS)",
                                           "taskUUID", "string").to_json()])
        slot = Slot(warnings=outcome_of(record, results).warnings)
        for r in results:
            (slot.data if r.kind == "data" else slot.errors).append(
                dict(r.body, status="success" if r.kind == "data" else "error"))
        if record.status == "processing":
            slot.data.append({"taskType": record.task_type, "taskUUID": record.task_uuid, "status": "processing",
                              "progress": progress})
        return slot

    # ------------------------------------------------------------------ imageUpload, modelSearch
    async def _image_upload(self, raw: Json) -> Slot:
        task_uuid = str(raw["taskUUID"]).lower()
        now = time.time()
        record = TaskRecord(task_uuid, "imageUpload", "processing", "sync", 1, created=now, updated=now)
        if not await self.runner.call(lambda s: s.create_task(record)):
            return Slot(errors=[_conflict(raw).to_json()])
        item, errors = await asyncio.to_thread(upload_image, raw, self.images, self.base_url(), self.limits())
        body = item if item is not None else errors[0].to_json()
        result = ResultRecord(task_uuid, 0, "data" if item is not None else "error", body, time.time())
        await self.runner.call(lambda s: s.add_result(result))
        await self.runner.call(lambda s: s.finish_task(task_uuid, "success" if item else "error", time.time()))
        return Slot(data=[item]) if item is not None else Slot(errors=[e.to_json() for e in errors])

    async def _model_search(self, raw: Json) -> Slot:
        try:
            catalog = await asyncio.to_thread(self.load_catalog)
        except (CatalogError, OSError, ValueError) as exc:
            return Slot(errors=[task_error(raw, "catalogError", f"the model catalog cannot be read: {exc}"
                                           [:500]).to_json()])
        item, errors = model_search(raw, catalog)
        return Slot(data=[item]) if item is not None else Slot(errors=[e.to_json() for e in errors])


def small(value: Any, budget: int = 64 * 1024) -> bool:
    """Whether a task's strings add up to less than `budget` characters (checked without serialising it)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item)
            if budget < 0:
                return False
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _conflict(raw: Any) -> ApiError:
    return task_error(raw, "conflictTaskUUID", "this taskUUID was already used; every task needs a new UUID v4",
                      "taskUUID", "string")


def _as_task(error: ApiError, raw: Any) -> ApiError:
    """An authentication error reported on the task it refused (its taskType and taskUUID)."""
    task_type, task_uuid = identity(raw)
    return ApiError(error.code, error.message, error.parameter, error.type, None, task_uuid, task_type)
