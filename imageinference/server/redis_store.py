"""The task store of a fleet: one Redis that several ComfyUI instances share (IMAGEINFERENCE_STORE=redis://...).

Imported only when that setting names a Redis: the `redis` client (the `redis` extra) is needed by nothing else.

Everything uses Redis' own primitives; every change that must be atomic is one Lua script (Redis runs a script
alone, start to end), never a lock of ours:
- a task is a hash `ii:task:<uuid>`, its results a hash `ii:results:<uuid>` (one field per result index, written
  with HSETNX: the first result recorded is the one every client gets), its sampler progress `ii:progress:<uuid>`;
- unfinished imageInference tasks are a sorted set `ii:open`: the service's one pending-task limit is its size,
  checked in the same script that stores the task and queues its results;
- work waits in one stream per model, `ii:q:<model>` (consumer group `workers`): an instance claims an entry with
  XREADGROUP, keeps it alive while it runs (XCLAIM ... JUSTID resets its idle time), and acknowledges it in the
  script that records its result; entries whose instance went quiet (killed) are taken over with XAUTOCLAIM;
- results for the instance that accepted a sync task go to its inbox stream `ii:inbox:<instance>`; webhook POSTs
  wait in the stream `ii:hooks` (consumer group `senders`), one entry per result, added by the recording script;
- `ii:instances` says which models each live instance has loaded (the scheduler prefers them), `ii:config` holds
  the service's settings every instance must share (the API key's fingerprint, the pending-task limit).
Finished tasks expire from Redis after IMAGEINFERENCE_TASK_RETENTION_HOURS.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .store import DeliveryRecord, QueueFull, ResultKind, ResultRecord, Status, StoreUnavailable, TaskRecord

P = "ii:"
OPEN, QUEUES, BELL, HOOKS, INSTANCES, CONFIG = (P + "open", P + "queues", P + "bell", P + "hooks", P + "instances",
                                                P + "config")
WORKERS, SENDERS = "workers", "senders"
INBOX_MAX = 10_000
T = TypeVar("T")


def task_key(task_uuid: str) -> str:
    return f"{P}task:{task_uuid}"


def results_key(task_uuid: str) -> str:
    return f"{P}results:{task_uuid}"


def progress_key(task_uuid: str) -> str:
    return f"{P}progress:{task_uuid}"


def queue_key(model: str) -> str:
    return f"{P}q:{model}"


def inbox_key(instance: str) -> str:
    return f"{P}inbox:{instance}"


def fingerprint(api_key: str | None) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest() if api_key else "none"


_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0} end
local limit = tonumber(ARGV[2])
if limit >= 0 then
  local open = redis.call('ZCARD', KEYS[2])
  if open >= limit then return {-1, open} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
if ARGV[6] == '1' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
local n = tonumber(ARGV[4])
if n > 0 then
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('XGROUP', 'CREATE', KEYS[3], 'workers', '0', 'MKSTREAM') end
  for i = 0, n - 1 do redis.call('XADD', KEYS[3], '*', 't', ARGV[1], 'i', i) end
  redis.call('SADD', KEYS[4], ARGV[5])
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100, '*', 'q', ARGV[5])
end
return {1, 0}
"""

# Claim the next entry for this instance. KEYS: the queues; ARGV: consumer, then per queue a bonus in ms (the
# affinity wait when this instance has the model loaded, else 0) and a minimum wait in ms (the affinity wait when
# another live instance has the model loaded, else 0). The queue whose oldest waiting entry has waited longest,
# bonus included, wins: FIFO across models, biased toward loaded models by at most the affinity wait.
_CLAIM = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local best, best_score = nil, nil
for k = 1, #KEYS do
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[k])
  if ok then
    local last = nil
    for _, g in ipairs(groups) do
      local name, lid = nil, nil
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] end
        if g[i] == 'last-delivered-id' then lid = g[i + 1] end
      end
      if name == 'workers' then last = lid end
    end
    if last then
      local nxt = redis.call('XRANGE', KEYS[k], '(' .. last, '+', 'COUNT', 1)
      if #nxt > 0 then
        local waited = now_ms - tonumber(string.match(nxt[1][1], '^(%d+)'))
        local bonus, minimum = tonumber(ARGV[2 * k]), tonumber(ARGV[2 * k + 1])
        if waited >= minimum then
          local score = waited + bonus
          if best_score == nil or score > best_score then best, best_score = k, score end
        end
      end
    end
  end
end
if best == nil then return nil end
local got = redis.call('XREADGROUP', 'GROUP', 'workers', ARGV[1], 'COUNT', 1, 'STREAMS', KEYS[best], '>')
if not got then return nil end
local entry = got[1][2][1]
return {KEYS[best], entry[1], entry[2]}
"""

_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'done'} end
local n = redis.call('HINCRBY', KEYS[1], 'attempts:' .. ARGV[1], 1)
redis.call('HSET', KEYS[1], 'ran:' .. ARGV[1], ARGV[2])
return {'run', n, redis.call('HGETALL', KEYS[1])}
"""

# KEYS: results, task, open, progress, queue, hooks, inbox. ARGV: uuid, index, result JSON, kind, now, retention
# seconds, webhook body JSON ('' for none), queue entry id ('' for none), webhook URL, '1' to notify the inbox.
_RECORD = """
local function ack()
  if ARGV[8] ~= '' then
    redis.call('XACK', KEYS[5], 'workers', ARGV[8])
    redis.call('XDEL', KEYS[5], ARGV[8])
  end
end
if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then ack() return 0 end
redis.call('HDEL', KEYS[4], ARGV[2])
if ARGV[4] == 'error' then redis.call('HINCRBY', KEYS[2], 'errors', 1) end
redis.call('HSET', KEYS[2], 'updated', ARGV[5])
if ARGV[7] ~= '' then redis.call('XADD', KEYS[6], '*', 't', ARGV[1], 'i', ARGV[2], 'url', ARGV[9], 'body', ARGV[7]) end
if ARGV[10] == '1' then
  redis.call('XADD', KEYS[7], 'MAXLEN', '~', 10000, '*', 't', ARGV[1], 'i', ARGV[2])
  redis.call('EXPIRE', KEYS[7], 86400)
end
local expected = tonumber(redis.call('HGET', KEYS[2], 'expected') or '1')
if redis.call('HLEN', KEYS[1]) >= expected then
  local status = 'success'
  if tonumber(redis.call('HGET', KEYS[2], 'errors') or '0') > 0 then status = 'error' end
  redis.call('HSET', KEYS[2], 'status', status)
  redis.call('HDEL', KEYS[2], 'prompt', 'request')  -- needed to run it, kept no longer: a finished task is small
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4])
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
ack()
return 1
"""

_FINISH = """
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated', ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
"""

_STATE_FIELDS = ("type", "status", "delivery", "expected", "webhook", "upload", "session", "created", "updated",
                 "warnings")
"""What getResponse reads of a task: not its request or graph (large with inline images, and polled often)."""


def _unavailable(fn: Callable[..., T]) -> Callable[..., T]:
    """Redis errors of the connection kind become StoreUnavailable (the service answers serviceUnavailable)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            raise StoreUnavailable(f"the task store (Redis) cannot be reached: {type(exc).__name__}: {exc}"
                                   [:300]) from exc
    return wrapper


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _task_from(uuid: str, h: dict[str, str]) -> TaskRecord:
    return TaskRecord(uuid, h.get("type", "imageInference"), cast(Status, h.get("status", "processing")),
                      h.get("delivery", "sync"), int(h.get("expected", "1")), h.get("webhook") or None,
                      h.get("upload") or None, h.get("session") or None,
                      json.loads(h["request"]) if h.get("request") else None, float(h.get("created", "0")),
                      float(h.get("updated", "0")), json.loads(h.get("warnings") or "[]"))


def _result_from(uuid: str, index: str, text: str) -> ResultRecord:
    value = json.loads(text)
    return ResultRecord(uuid, int(index), cast(ResultKind, value["kind"]), value["body"], float(value["created"]),
                        value.get("warnings", []))


def result_json(result: ResultRecord) -> str:
    return json.dumps({"kind": result.kind, "body": result.body, "created": result.created,
                       "warnings": result.warnings})


@dataclass
class Claim:
    """One result's work taken from a model's queue."""

    queue: str
    entry: str
    task_uuid: str
    index: int


@dataclass
class Begun:
    """What a claim turned out to be: work to run (with its attempt number and task), or nothing left to do."""

    state: str  # "run" | "done" (recorded already) | "gone" (the task expired)
    attempt: int = 0
    record: TaskRecord | None = None
    prompt: dict[str, Any] | None = None
    seeds: list[int] | None = None
    accept: str = ""
    model: str = ""


class RedisTaskStore:
    def __init__(self, url: str, timeout_s: float = 2.0, retention_s: float = 7 * 24 * 3600.0):
        self.url, self.timeout_s, self.retention = url, timeout_s, int(retention_s)
        common: dict[str, Any] = {"socket_connect_timeout": timeout_s, "decode_responses": True,
                                  "retry": Retry(NoBackoff(), 0), "health_check_interval": 10}
        # Any: with decode_responses every answer is str, which the client's annotations cannot say
        self.r: Any = redis.Redis.from_url(url, socket_timeout=timeout_s, **common)
        # blocking reads (XREAD ... BLOCK) wait up to three seconds longer than their block time
        self.blocking: Any = redis.Redis.from_url(url, socket_timeout=timeout_s + 3.0, **common)
        self._create = self.r.register_script(_CREATE)
        self._claim = self.r.register_script(_CLAIM)
        self._begin = self.r.register_script(_BEGIN)
        self._record = self.r.register_script(_RECORD)
        self._finish = self.r.register_script(_FINISH)

    # ------------------------------------------------------------------ TaskStore
    @_unavailable
    def create_task(self, task: TaskRecord, max_unfinished: int | None = None) -> bool:
        return self.create_and_queue(task, max_unfinished)

    @_unavailable
    def create_and_queue(self, task: TaskRecord, max_unfinished: int | None = None, model: str = "",
                         prompt: dict[str, Any] | None = None, seeds: list[int] | None = None,
                         accept: str = "") -> bool:
        """Store a task and (with a model) queue each of its results, in one atomic step with the pending-task
        limit: False for a taken taskUUID, QueueFull past the limit."""
        limited = max_unfinished is not None and task.task_type == "imageInference"
        fields: dict[str, Any] = {
            "type": task.task_type, "status": task.status, "delivery": task.delivery, "expected": task.expected,
            "webhook": task.webhook_url or "", "upload": task.upload_endpoint or "", "session": task.session_id or "",
            "request": json.dumps(task.request) if task.request is not None else "", "created": task.created,
            "updated": task.updated, "warnings": json.dumps(task.warnings), "accept": accept, "model": model,
            "prompt": json.dumps(prompt) if prompt is not None else "", "seeds": json.dumps(seeds or [])}
        flat = [str(x) for kv in fields.items() for x in kv]
        queued = task.expected if model else 0
        code, open_count = self._create(
            keys=[task_key(task.task_uuid), OPEN, queue_key(model), QUEUES, BELL],
            args=[task.task_uuid, max_unfinished if limited and max_unfinished is not None else -1, task.created,
                  queued, model,
                  "1" if task.task_type == "imageInference" else "0", *flat])
        if int(code) == -1:
            raise QueueFull(int(open_count), int(max_unfinished or 0))
        return int(code) == 1

    @_unavailable
    def get_task(self, task_uuid: str) -> TaskRecord | None:
        h = self.r.hgetall(task_key(task_uuid))
        return _task_from(task_uuid, h) if h else None

    @_unavailable
    def snapshot(self, task_uuid: str) -> tuple[TaskRecord | None, list[ResultRecord]]:
        return self.snapshots([task_uuid])[task_uuid]

    @_unavailable
    def snapshots(self, task_uuids: list[str]) -> dict[str, tuple[TaskRecord | None, list[ResultRecord]]]:
        """Each task (its state, without its request) and its results, all read at one moment (MULTI)."""
        pipe = self.r.pipeline(transaction=True)
        for u in task_uuids:
            pipe.hmget(task_key(u), _STATE_FIELDS)
            pipe.hgetall(results_key(u))
        got = pipe.execute()
        out: dict[str, tuple[TaskRecord | None, list[ResultRecord]]] = {}
        for i, u in enumerate(task_uuids):
            values, results = got[2 * i], got[2 * i + 1]
            if values[0] is None:
                out[u] = (None, [])
                continue
            state = {k: v for k, v in zip(_STATE_FIELDS, values, strict=True) if v is not None}
            out[u] = (_task_from(u, state), sorted((_result_from(u, k, v) for k, v in results.items()),
                                                   key=lambda r: r.index))
        return out

    @_unavailable
    def progress_many(self, task_uuids: list[str]) -> dict[str, tuple[int, int, list[float]]]:
        pipe = self.r.pipeline(transaction=True)
        for u in task_uuids:
            pipe.hget(task_key(u), "expected")
            pipe.hlen(results_key(u))
            pipe.hgetall(progress_key(u))
        got = pipe.execute()
        return {u: (int(got[3 * i] or 1), int(got[3 * i + 1]), [float(v) for v in got[3 * i + 2].values()])
                for i, u in enumerate(task_uuids)}

    @_unavailable
    def add_result(self, result: ResultRecord) -> bool:
        return bool(self.r.hsetnx(results_key(result.task_uuid), str(result.index), result_json(result)))

    @_unavailable
    def finish_task(self, task_uuid: str, status: Status, now: float) -> None:
        self._finish(keys=[task_key(task_uuid), results_key(task_uuid), OPEN],
                     args=[task_uuid, status, now, self.retention])

    @_unavailable
    def results(self, task_uuid: str) -> list[ResultRecord]:
        return self.snapshot(task_uuid)[1]

    @_unavailable
    def unfinished(self) -> list[TaskRecord]:
        found = [self.get_task(u) for u in self.r.zrange(OPEN, 0, -1)]
        return [t for t in found if t is not None]

    @_unavailable
    def count_unfinished(self) -> int:
        return int(self.r.zcard(OPEN))

    def add_delivery(self, task_uuid: str, url: str, body: dict[str, Any], next_at: float) -> int:
        raise NotImplementedError("a fleet queues webhooks with the result (record_result)")

    def due_deliveries(self, now: float, limit: int = 50) -> list[DeliveryRecord]:
        return []

    def update_delivery(self, delivery: DeliveryRecord) -> None:
        return None

    def purge(self, finished_before: float) -> int:
        return 0  # finished tasks expire by themselves (EXPIRE at their end)

    def close(self) -> None:
        self.r.close()
        self.blocking.close()

    # ------------------------------------------------------------------ the fleet's work
    @_unavailable
    def ping(self) -> bool:
        return bool(self.r.ping())

    @_unavailable
    def queues(self) -> list[str]:
        return sorted(self.r.smembers(QUEUES))

    @_unavailable
    def claim(self, consumer: str, choices: list[tuple[str, int, int]]) -> Claim | None:
        """The next entry for this consumer among (model, bonus ms, minimum wait ms) queues (see _CLAIM)."""
        if not choices:
            return None
        got = self._claim(keys=[queue_key(m) for m, _b, _w in choices],
                          args=[consumer, *(str(x) for _m, b, w in choices for x in (b, w))])
        if not got:
            return None
        queue, entry, flat = got
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return Claim(queue, entry, fields["t"], int(fields["i"]))

    @_unavailable
    def begin(self, claim: Claim, consumer: str) -> Begun:
        """Count an attempt at a claimed result and read its task; 'done' when it is recorded already."""
        got = self._begin(keys=[task_key(claim.task_uuid), results_key(claim.task_uuid)],
                          args=[claim.index, consumer])
        if got[0] != "run":
            return Begun(got[0])
        h = dict(zip(got[2][::2], got[2][1::2], strict=True))
        return Begun("run", int(got[1]), _task_from(claim.task_uuid, h),
                     json.loads(h["prompt"]) if h.get("prompt") else None, json.loads(h.get("seeds") or "[]"),
                     h.get("accept", ""), h.get("model", ""))

    @_unavailable
    def drop(self, claim: Claim) -> None:
        """Acknowledge and remove an entry that needs no run (its result is recorded, its task expired)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(claim.queue, WORKERS, claim.entry)
        pipe.xdel(claim.queue, claim.entry)
        pipe.execute()

    @_unavailable
    def record_result(self, result: ResultRecord, claim: Claim | None, hook: tuple[str, dict[str, Any]] | None,
                      inbox: str) -> bool:
        """Record a result (first one wins), queue its webhook POST, tell the accepting instance, finish the task
        with its last result, acknowledge the work entry: one atomic step. False when it was recorded already."""
        url, body = hook if hook else ("", None)
        u = result.task_uuid
        done = self._record(
            keys=[results_key(u), task_key(u), OPEN, progress_key(u), claim.queue if claim else queue_key(""),
                  HOOKS, inbox_key(inbox or "-")],
            args=[u, result.index, result_json(result), result.kind, result.created, self.retention,
                  json.dumps(body) if body is not None else "", claim.entry if claim else "", url,
                  "1" if inbox else "0"])
        return bool(done)

    @_unavailable
    def keep_alive(self, claims: list[tuple[str, str, str]], consumer: str) -> None:
        """Reset the idle time of entries this consumer is working on: (stream, group, entry id)."""
        if not claims:
            return
        pipe = self.r.pipeline(transaction=False)
        for stream, group, entry in claims:
            pipe.xclaim(stream, group, consumer, 0, [entry], justid=True)
        pipe.execute()

    @_unavailable
    def take_over(self, stream: str, group: str, consumer: str, idle_ms: int, count: int) -> list[tuple[str, dict[str, str]]]:
        """Entries idle longer than `idle_ms` (their consumer went quiet), now this consumer's."""
        if count <= 0:
            return []
        try:
            got = self.r.xautoclaim(stream, group, consumer, idle_ms, "0-0", count=count)
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                return []
            raise
        return [(entry_id, fields) for entry_id, fields in got[1] if fields]

    @_unavailable
    def set_progress(self, task_uuid: str, index: int, fraction: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(progress_key(task_uuid), str(index), f"{fraction:.4f}")
        pipe.expire(progress_key(task_uuid), 3600)
        pipe.execute()

    @_unavailable
    def progress(self, task_uuid: str) -> tuple[int, int, list[float]]:
        """(expected results, recorded results, fractions of the ones running)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hget(task_key(task_uuid), "expected")
        pipe.hlen(results_key(task_uuid))
        pipe.hgetall(progress_key(task_uuid))
        expected, recorded, running = pipe.execute()
        return int(expected or 1), int(recorded), [float(v) for v in running.values()]

    @_unavailable
    def result(self, task_uuid: str, index: int) -> ResultRecord | None:
        text = self.r.hget(results_key(task_uuid), str(index))
        return _result_from(task_uuid, str(index), text) if text else None

    @_unavailable
    def read_inbox(self, instance: str, after: str, block_ms: int) -> list[tuple[str, str, int]]:
        """(entry id, task uuid, result index) told to this instance after `after`."""
        got = self.blocking.xread({inbox_key(instance): after}, count=500, block=block_ms)
        return [(entry_id, f["t"], int(f["i"])) for _stream, entries in got or [] for entry_id, f in entries]

    @_unavailable
    def wait_bell(self, after: str, block_ms: int) -> str:
        """Block until work is queued (or `block_ms`); the bell's last id."""
        got = self.blocking.xread({BELL: after}, count=100, block=block_ms)
        for _stream, entries in got or []:
            if entries:
                after = entries[-1][0]
        return after

    @_unavailable
    def bell_id(self) -> str:
        last = self.r.xrevrange(BELL, count=1)
        return str(last[0][0]) if last else "0-0"

    @_unavailable
    def ensure_group(self, stream: str, group: str) -> None:
        try:
            self.r.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @_unavailable
    def read_hooks(self, consumer: str, count: int, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        try:
            got = self.blocking.xreadgroup(SENDERS, consumer, {HOOKS: ">"}, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_group(HOOKS, SENDERS)
            return []
        return [(entry_id, fields) for _stream, entries in got or [] for entry_id, fields in entries]

    @_unavailable
    def hook_attempt(self, entry: str) -> int:
        """Count one more attempt at a webhook entry (across instances, takeovers included); its number."""
        return int(self.r.hincrby(P + "hook-attempts", entry, 1))

    @_unavailable
    def hook_done(self, entry: str, task_uuid: str, index: str, outcome: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(P + "hooks-done:" + task_uuid, index, outcome)
        pipe.expire(P + "hooks-done:" + task_uuid, self.retention)
        pipe.xack(HOOKS, SENDERS, entry)
        pipe.xdel(HOOKS, entry)
        pipe.hdel(P + "hook-attempts", entry)
        pipe.execute()

    @_unavailable
    def announce(self, instance: str, info: dict[str, Any], ttl_s: float) -> dict[str, dict[str, Any]]:
        """Publish this instance's state (loaded models, capacity); answer every live instance's."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(INSTANCES, instance, json.dumps(dict(info, seen=now)))
        pipe.hgetall(INSTANCES)
        _set, everyone = pipe.execute()
        live: dict[str, dict[str, Any]] = {}
        stale = []
        for name, text in everyone.items():
            try:
                value = json.loads(text)
            except ValueError:
                continue
            age = now - float(value.get("seen", 0))
            if age <= ttl_s:
                live[name] = value
            elif age > 20 * ttl_s:
                stale.append(name)
        if stale:
            self.r.hdel(INSTANCES, *stale)
        return live

    @_unavailable
    def leave(self, instance: str) -> None:
        self.r.hdel(INSTANCES, instance)

    @_unavailable
    def shared_settings(self, settings: dict[str, str]) -> dict[str, str]:
        """The service's settings: the first instance's values win (HSETNX), every instance reads them back."""
        pipe = self.r.pipeline(transaction=True)
        for name, value in settings.items():
            pipe.hsetnx(CONFIG, name, value)
        pipe.hgetall(CONFIG)
        return dict(pipe.execute()[-1])

    @_unavailable
    def ran_on(self, task_uuid: str) -> dict[int, str]:
        """Which instance ran each result (its last attempt)."""
        h = self.r.hgetall(task_key(task_uuid))
        return {int(k.split(":", 1)[1]): v for k, v in h.items() if k.startswith("ran:")}
