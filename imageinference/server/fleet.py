"""One endpoint over many ComfyUI instances that share a Redis (IMAGEINFERENCE_STORE=redis://...). Pure.

Every instance accepts tasks and every instance (with IMAGEINFERENCE_LOCAL_QUEUE_DEPTH above 0) runs them:
- accepting: the task is stored and each of its results queued on its model's stream in one atomic step (with the
  service's one pending-task limit); a sync REST request or a WebSocket session waits here, on this instance;
- running: an instance takes a result's work only while fewer than IMAGEINFERENCE_LOCAL_QUEUE_DEPTH of its own
  are queued or running in its ComfyUI, preferring models it has loaded (an entry for a model another live
  instance has loaded waits up to IMAGEINFERENCE_AFFINITY_WAIT seconds for it); it keeps the entry alive while it
  runs, and records the result in the script that acknowledges the entry, queues its webhook and tells the
  accepting instance;
- recovering: work whose instance went quiet for IMAGEINFERENCE_TAKEOVER_SECONDS (killed, cut off) is taken over
  and run once more (at most IMAGEINFERENCE_MAX_ATTEMPTS runs in all, then the result is the error `workerLost`);
  the first result recorded is the one delivered, so a result is answered and webhooked once;
- Redis unreachable: requests are answered `serviceUnavailable` at once; finished results wait in memory and are
  recorded when Redis is back; every loop retries with backoff and says so in the log, once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..contract.errors import ApiError
from ..engines.imageio.store import ImageStore
from .config import EndpointConfig
from .delivery import DeliveryError, backoff, send_once
from .lifecycle import Engine, Outcome, Part, PartRunner, Running, progress_percent
from .plan import Plan, with_seed
from .protocol import merge_warnings, result_frame
from .redis_store import HOOKS, SENDERS, WORKERS, Claim, RedisTaskStore, fingerprint, queue_key
from .sessions import SessionRegistry
from .store import ResultRecord, StoreRunner, StoreUnavailable, TaskRecord

log = logging.getLogger("imageinference.server")
T = TypeVar("T")
LOST_MESSAGE = ("the ComfyUI instance running this result stopped (killed or cut off from the task store) {n} "
                "times; it is not run again")


class FleetTracker(PartRunner):
    def __init__(self, store: RedisTaskStore, runner: StoreRunner, engine: Engine, sessions: SessionRegistry,
                 images: ImageStore, base_url: Callable[[], str], config: EndpointConfig, instance: str):
        super().__init__(engine, images, base_url, config)
        self.store, self.runner, self.sessions = store, runner, sessions
        self.instance = instance  # this process's consumer name: a killed process's work is never its successor's
        self.waiting: dict[str, Running] = {}  # tasks accepted here whose client waits here (sync REST, WebSocket)
        self.working: dict[str, Part] = {}  # queue entry id -> the result running here
        self.sending: set[str] = set()  # webhook entries being delivered by this instance
        self.warm: list[str] = []  # models run here, most recent first
        self.live: dict[str, dict[str, Any]] = {}  # the fleet's live instances, as they announce themselves
        self.known_queues: list[str] = []
        self.limit = config.max_pending_tasks
        self._refusal: str | None = "the task store (Redis) has not been reached yet"
        self._wake = asyncio.Event()
        self._progress_at: dict[str, float] = {}
        self._outage: dict[str, float] = {}
        self._loops: list[asyncio.Task[None]] = []
        self.joined = asyncio.Event()  # the shared settings are read: tasks are taken (or refused for good)

    @property
    def depth(self) -> int:
        return self.config.local_depth

    # ------------------------------------------------------------------ accepting
    async def submit(self, record: TaskRecord, plan: Plan, wait: bool) -> Running | None:
        loop = asyncio.get_running_loop()
        running = Running(record, [], waiter=loop.create_future() if wait else None)
        waits_here = wait or (record.delivery == "sync" and bool(record.session_id))
        if waits_here:
            self.waiting[record.task_uuid] = running  # before the task exists: no result can arrive unseen
        accept = self.instance if waits_here else ""
        model, limit = str(plan.canonical.get("model", "")), self.limit
        try:
            created = await self._db(RedisTaskStore.create_and_queue, record, limit, model, plan.prompts[0],
                                     plan.seeds, accept)
        except BaseException:
            self.waiting.pop(record.task_uuid, None)
            raise
        if not created:
            self.waiting.pop(record.task_uuid, None)
            return None
        self._wake.set()
        return running

    async def progress_of(self, task_uuid: str) -> int:
        expected, recorded, running = await self._db(RedisTaskStore.progress, task_uuid)
        return progress_percent([1.0] * recorded + running, expected)

    async def progress_many(self, task_uuids: list[str]) -> dict[str, int]:
        got = await self._db(RedisTaskStore.progress_many, task_uuids)
        return {u: progress_percent([1.0] * recorded + running, expected)
                for u, (expected, recorded, running) in got.items()}

    def refusal(self) -> str | None:
        return self._refusal

    def _arrived(self, running: Running, result: ResultRecord) -> None:
        """A result of a task waiting here: to its WebSocket session, and to its REST request once complete."""
        if result.index in running.results:
            return
        running.results[result.index] = result
        record = running.record
        if record.delivery == "sync" and record.session_id:
            frame = result_frame(result.kind, result.body, merge_warnings(record.warnings, result.warnings))
            self._spawn(self.sessions.push(record.session_id, frame))
        if running.complete:
            self.waiting.pop(record.task_uuid, None)
            if running.waiter is not None and not running.waiter.done():
                running.waiter.set_result(running.outcome())

    def _lost(self, running: Running) -> None:
        task_uuid = running.record.task_uuid
        self.waiting.pop(task_uuid, None)
        error = ApiError("taskNotFound", "the task store (Redis) lost this task (restarted without its data?); send "
                         "it again with a new taskUUID", "taskUUID", "string", None, task_uuid,
                         running.record.task_type).to_json()
        if running.waiter is not None and not running.waiter.done():
            running.waiter.set_result(Outcome(errors=[error]))
        elif running.record.session_id:
            self._spawn(self.sessions.push(running.record.session_id, {"errors": [error]}))

    # ------------------------------------------------------------------ running
    def progressed(self, part: Part) -> None:
        now = time.monotonic()
        if now - self._progress_at.get(part.prompt_id, 0.0) < 0.25:
            return
        self._progress_at[part.prompt_id] = now
        fraction = part.fraction()
        self._spawn(self._quietly(RedisTaskStore.set_progress, part.task_uuid, part.index, fraction))

    async def _db(self, method: Callable[..., T], *args: Any) -> T:
        """A method of the Redis store, on the store's threads."""
        return await self.runner.run(method, self.store, *args)

    async def _quietly(self, method: Callable[..., Any], *args: Any) -> None:
        with contextlib.suppress(StoreUnavailable):  # progress is a hint; the next one will tell
            await self._db(method, *args)

    def _choices(self) -> list[tuple[str, int, int]]:
        wait_ms = int(self.config.affinity_wait_s * 1000)
        elsewhere = {m for name, info in self.live.items() if name != self.instance and int(info.get("depth", 0)) > 0
                     for m in info.get("warm", [])}
        return [(m, wait_ms if m in self.warm else 0, wait_ms if m not in self.warm and m in elsewhere else 0)
                for m in self.known_queues]

    async def _start(self, claim: Claim) -> None:
        begun = await self._db(RedisTaskStore.begin, claim, self.instance)
        if begun.state != "run" or begun.record is None:
            await self._db(RedisTaskStore.drop, claim)
            return
        record = begun.record
        part = Part(claim.task_uuid, claim.index, str(uuid.uuid4()), record, ticket=(claim, begun.accept))
        self.working[claim.entry] = part
        if begun.attempt > self.config.max_attempts or begun.prompt is None:
            part.done = True
            error = ApiError("workerLost", LOST_MESSAGE.format(n=begun.attempt - 1), "", "", None, claim.task_uuid,
                             record.task_type)
            await self.deliver(part, ResultRecord(claim.task_uuid, claim.index, "error", error.to_json(), time.time()))
            return
        if begun.attempt > 1:
            log.warning("[imageinference] taking over result %d of task %s (run %d): its instance went quiet",
                        claim.index, claim.task_uuid, begun.attempt)
        if begun.model:
            self.warm = [begun.model] + [m for m in self.warm if m != begun.model][:max(0, self.config.warm_models - 1)]
        seeds = begun.seeds or []
        prompt = with_seed(begun.prompt, seeds[claim.index]) if claim.index < len(seeds) else begun.prompt
        await self.run_part(part, prompt)

    async def deliver(self, part: Part, result: ResultRecord) -> None:
        record = part.record
        claim, accept = part.ticket if part.ticket else (None, "")
        if record is None:
            return
        frame = result_frame(result.kind, result.body, merge_warnings(record.warnings, result.warnings))
        hook = (record.webhook_url, frame) if record.webhook_url else None
        await self._until_stored("recording a result", RedisTaskStore.record_result, result, claim, hook, accept)
        if claim is not None:
            self.working.pop(claim.entry, None)
        self._progress_at.pop(part.prompt_id, None)
        self._wake.set()

    async def _until_stored(self, what: str, method: Callable[..., T], *args: Any) -> T:
        """A write that must not be lost: retried until Redis takes it (the result waits in memory meanwhile)."""
        delay = 0.2
        while True:
            try:
                value = await self._db(method, *args)
                self._recovered(what)
                return value
            except StoreUnavailable as exc:
                self._unreachable(what, exc)
                await asyncio.sleep(delay)
                delay = min(5.0, delay * 2)

    def _unreachable(self, what: str, exc: Exception) -> None:
        if what not in self._outage:
            self._outage[what] = time.monotonic()
            log.error("[imageinference] %s: %s; retrying until it is back", what, exc)

    def _recovered(self, what: str) -> None:
        since = self._outage.pop(what, None)
        if since is not None:
            log.warning("[imageinference] %s: the task store (Redis) answers again after %.1f s", what,
                        time.monotonic() - since)

    # ------------------------------------------------------------------ the loops
    def start(self) -> None:
        for loop in (self._join, self._pull, self._bell, self._heartbeat, self._takeover, self._inbox,
                     self._hooks):
            self._loops.append(asyncio.create_task(self._forever(loop)))

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(StoreUnavailable):
            await self._db(RedisTaskStore.leave, self.instance)

    async def _forever(self, loop: Callable[[], Awaitable[None]]) -> None:
        """Run a loop; when Redis is unreachable, wait (with backoff) and run it again."""
        delay = 0.5
        name = loop.__name__.strip("_")
        while True:
            try:
                await loop()
                return
            except StoreUnavailable as exc:
                self._unreachable(name, exc)
                await asyncio.sleep(delay + random.uniform(0, delay / 2))
                delay = min(5.0, delay * 2)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("[imageinference] the fleet's %s loop failed; restarting it", name)
                await asyncio.sleep(1.0)

    async def _join(self) -> None:
        """Read the service's shared settings; an instance set up unlike the others refuses tasks."""
        await self._db(RedisTaskStore.ensure_group, HOOKS, SENDERS)
        mine = {"apiKey": fingerprint(self.config.api_key), "maxPendingTasks": str(self.config.max_pending_tasks)}
        shared = await self._db(RedisTaskStore.shared_settings, mine)
        self._recovered("join")
        self.limit = int(shared.get("maxPendingTasks", self.limit))
        if shared.get("apiKey") != mine["apiKey"]:
            self._refusal = ("this ComfyUI instance is set up with another IMAGEINFERENCE_API_KEY than the rest of "
                             "the service (its fingerprint in Redis' ii:config); every instance needs the same key")
            log.error("[imageinference] %s: refusing tasks", self._refusal)
        else:
            self._refusal = None
        if self.limit != self.config.max_pending_tasks:
            log.warning("[imageinference] the service's pending-task limit is %d (set by the first instance; this "
                        "one has IMAGEINFERENCE_MAX_PENDING_TASKS=%d)", self.limit, self.config.max_pending_tasks)
        log.info("[imageinference] fleet instance %s joined (local queue depth %d)", self.instance, self.depth)
        self.joined.set()

    async def _bell(self) -> None:
        last = await self._db(RedisTaskStore.bell_id)
        while True:
            newer = await self._db(RedisTaskStore.wait_bell, last, 1000)
            self._recovered("bell")
            if newer != last:
                last = newer
                self._wake.set()

    async def _pull(self) -> None:
        if self.depth <= 0:
            return  # accepts tasks, runs none
        refreshed = 0.0
        poll = max(0.05, min(1.0, self.config.affinity_wait_s / 4))
        while True:
            self._wake.clear()
            if time.monotonic() - refreshed > 2.0:
                self.known_queues = await self._db(RedisTaskStore.queues)
                refreshed = time.monotonic()
            while len(self.working) < self.depth:
                choices = self._choices()
                claim = await self._db(RedisTaskStore.claim, self.instance, choices)
                if claim is None:
                    break
                await self._start(claim)
            self._recovered("pull")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll)

    async def _heartbeat(self) -> None:
        every = max(0.3, self.config.takeover_s / 4)
        while True:
            claims = [(part.ticket[0].queue, WORKERS, entry) for entry, part in list(self.working.items())
                      if part.ticket and part.ticket[0] is not None]
            claims += [(HOOKS, SENDERS, entry) for entry in list(self.sending)]
            await self._db(RedisTaskStore.keep_alive, claims, self.instance)
            info = {"warm": self.warm, "depth": self.depth, "working": len(self.working)}
            self.live = await self._db(RedisTaskStore.announce, self.instance, info, self.config.takeover_s)
            self._recovered("heartbeat")
            await asyncio.sleep(every)

    async def _takeover(self) -> None:
        idle_ms = int(self.config.takeover_s * 1000)
        while True:
            await asyncio.sleep(self.config.takeover_s / 2 * random.uniform(0.8, 1.2))
            for model in list(self.known_queues):
                free = self.depth - len(self.working)
                if free <= 0:
                    break
                queue = queue_key(model)
                taken = await self._db(RedisTaskStore.take_over, queue, WORKERS, self.instance, idle_ms, free)
                for entry, fields in taken:
                    await self._start(Claim(queue, entry, fields["t"], int(fields["i"])))
            free_hooks = self.config.webhook_concurrency - len(self.sending)
            hooks = await self._db(RedisTaskStore.take_over, HOOKS, SENDERS, self.instance, idle_ms, free_hooks)
            for entry, fields in hooks:
                self._send_hook(entry, fields)
            self._recovered("takeover")

    async def _inbox(self) -> None:
        last, reconciled = "0-0", time.monotonic()
        while True:
            told = await self._db(RedisTaskStore.read_inbox, self.instance, last, 1000)
            self._recovered("inbox")
            for entry, task_uuid, index in told:
                last = entry
                running = self.waiting.get(task_uuid)
                if running is not None and index not in running.results:
                    result = await self._db(RedisTaskStore.result, task_uuid, index)
                    if result is not None:
                        self._arrived(running, result)
            if time.monotonic() - reconciled > 5.0 and self.waiting:
                reconciled = time.monotonic()
                for task_uuid, running in list(self.waiting.items()):  # whatever a notice did not bring
                    stored, results = await self._db(RedisTaskStore.snapshot, task_uuid)
                    if stored is None:  # gone from Redis (restarted without its data): the client must not hang
                        self._lost(running)
                    for result in results:
                        self._arrived(running, result)

    async def _hooks(self) -> None:
        while True:
            free = self.config.webhook_concurrency - len(self.sending)
            if free <= 0:
                await asyncio.sleep(0.2)
                continue
            entries = await self._db(RedisTaskStore.read_hooks, self.instance, free, 1000)
            self._recovered("hooks")
            for entry, fields in entries:
                self._send_hook(entry, fields)

    def _send_hook(self, entry: str, fields: dict[str, str]) -> None:
        if entry in self.sending:
            return
        self.sending.add(entry)
        self._spawn(self._deliver_hook(entry, fields))

    async def _deliver_hook(self, entry: str, fields: dict[str, str]) -> None:
        c = self.config
        outcome = "failed"
        try:
            while True:
                attempt = await self._until_stored("counting a webhook attempt", RedisTaskStore.hook_attempt, entry)
                if attempt > c.webhook_attempts:
                    break
                try:
                    await send_once("POST", fields["url"], fields["body"].encode(), "application/json",
                                    c.webhook_timeout_s, c.allow_private_targets)
                    outcome = "done"
                    break
                except DeliveryError as exc:
                    log.warning("[imageinference] webhook of %s, attempt %d: %s", fields.get("t"), attempt, exc)
                    if exc.permanent or attempt >= c.webhook_attempts:
                        break
                    await asyncio.sleep(backoff(attempt, c.webhook_backoff_s, c.webhook_backoff_max_s))
            await self._until_stored("finishing a webhook", RedisTaskStore.hook_done, entry, fields.get("t", ""),
                                     fields.get("i", ""), outcome)
        finally:
            self.sending.discard(entry)


def instance_name(config: EndpointConfig, port: int) -> str:
    """This process's name in the fleet: IMAGEINFERENCE_INSTANCE (or host:port), and a part of its own, so work a
    killed process had claimed is never mistaken for its successor's."""
    import socket

    base = config.instance or f"{socket.gethostname()}:{port}"
    return f"{base}/{uuid.uuid4().hex[:8]}"


def describe(store_url: str) -> str:
    """The store's URL without its password, for the log."""
    import urllib.parse

    parsed = urllib.parse.urlsplit(store_url)
    host = parsed.hostname or ""
    netloc = f"{host}:{parsed.port}" if parsed.port else host
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))
