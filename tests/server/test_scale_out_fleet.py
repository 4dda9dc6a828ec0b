"""The fleet's own logic (server/fleet.py, server/redis_store.py) on a real Redis: several instances in this
process, each the endpoint's real routes and service over HTTP, their ComfyUI replaced by a queue the test finishes
(the same instances on real ComfyUI servers: test_scale_out.py). Any instance accepts, any runs; one pending-task
limit; takeover of a killed instance's work, each result delivered and webhooked once; model affinity; Redis
down answers serviceUnavailable at once and the fleet recovers."""

import asyncio
import json
import time
import uuid

import pytest
import redis
from aiohttp import web
from server_helpers import FleetInstance, RedisServer, until

from imageinference.server.redis_store import OPEN, task_key

MODEL_X, MODEL_Y = "civitai:4384@128713", "civitai:133005@782002"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def fleet(redis_server, tmp_path):
    """fleet(name, **settings) starts an instance; all are stopped at the end."""
    redis.Redis.from_url(redis_server.url).flushall()
    started = []

    async def make(name, **settings):
        inst = await FleetInstance(redis_server.url, tmp_path / "images", name, **settings).start()
        started.append(inst)
        return inst

    make.started = started
    return make


async def stop_all(started):
    for inst in started:
        if not inst.session.closed:
            await inst.stop()


def task(model=MODEL_X, **fields):
    t = {"taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": model, "positivePrompt": "a fox",
         "width": 512, "height": 512, "steps": 4, "seed": 7}
    t.update(fields)
    return t


def response_for(prompt, i=0):
    """The Output node's answer for a prompt: its taskUUID and seed come from the prompt itself."""
    request = json.loads(prompt["5"]["inputs"]["request"])
    return {"data": [{"taskType": "imageInference", "taskUUID": request["taskUUID"], "imageUUID": str(uuid.uuid4()),
                      "seed": prompt["4"]["inputs"]["seed"]}]}


async def run_all(inst):
    """Finish every prompt the instance's ComfyUI holds now."""
    for prompt_id, prompt in list(inst.engine.prompts.items()):
        if prompt_id in inst.tracker.by_prompt:
            await inst.finish(prompt_id, response_for(prompt))


def test_any_instance_accepts_and_any_runs(fleet):
    async def scenario():
        a = await fleet("A", local_depth=0)  # accepts, runs nothing
        b = await fleet("B")
        c = await fleet("C")
        try:
            t = task(numberResults=2, seed=40)
            answer = asyncio.create_task(a.post([t]))
            await until(lambda: len(b.engine.prompts) + len(c.engine.prompts) == 2, what="both results claimed")
            assert not a.engine.prompts
            seeds = sorted(p["4"]["inputs"]["seed"] for inst in (b, c) for p in inst.engine.prompts.values())
            assert seeds == [40, 41]  # each result its own prompt, seed + i
            for inst in (b, c):
                await run_all(inst)
            status, body = await answer  # the sync answer comes through A, which accepted it
            assert status == 200 and sorted(i["seed"] for i in body["data"]) == [40, 41]
            status, polled = await c.post([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}])
            assert [i["status"] for i in polled["data"]] == ["success", "success"]
            status, again = await b.post([t])
            assert status == 400 and again["errors"][0]["code"] == "conflictTaskUUID"  # one taskUUID, service-wide
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


def test_one_pending_task_limit_for_the_service(fleet):
    async def scenario():
        a = await fleet("A", local_depth=0, max_pending_tasks=5)
        b = await fleet("B", local_depth=0, max_pending_tasks=5)
        try:
            batches = [[task(deliveryMethod="async") for _ in range(4)] for _ in range(6)]
            answers = await asyncio.gather(*(inst.post(batch) for inst, batch in zip([a, b] * 3, batches, strict=True)))
            accepted = [i for _s, body in answers for i in body.get("data", [])]
            refused = [e["code"] for _s, body in answers for e in body.get("errors", [])]
            assert len(accepted) == 5 and refused == ["queueFull"] * 19
            assert redis.Redis.from_url(a.redis_url).zcard(OPEN) == 5
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


class Hooks:
    """A webhook receiver: every POST body, in order."""

    def __init__(self):
        self.bodies = []

    async def __aenter__(self):
        async def hook(request):
            self.bodies.append(await request.json())
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


def test_a_killed_instances_work_is_taken_over_and_delivered_once(fleet):
    async def scenario():
        async with Hooks() as hooks:
            a = await fleet("A", local_depth=0)
            b = await fleet("B")
            try:
                sync = task(seed=3)
                hooked = task(seed=5, webhookURL=hooks.url)
                answer = asyncio.create_task(a.post([sync], timeout=60))
                await a.post([hooked])
                await until(lambda: len(b.engine.prompts) == 2, what="B claimed both")
                lost = dict(b.engine.prompts)
                started = time.monotonic()
                await b.stop(killed=True)  # SIGKILL: nothing acknowledged, no goodbye
                c = await fleet("C")
                await until(lambda: len(c.engine.prompts) == 2, timeout=15, what="C took both over")
                took = time.monotonic() - started
                assert 1.0 <= took <= 8, took  # IMAGEINFERENCE_TAKEOVER_SECONDS 1.5 (checked every ~0.75 s)
                # the same prompts (same seeds) run once more
                assert sorted(p["4"]["inputs"]["seed"] for p in c.engine.prompts.values()) == \
                    sorted(p["4"]["inputs"]["seed"] for p in lost.values())
                await run_all(c)
                status, body = await answer
                assert status == 200 and [i["seed"] for i in body["data"]] == [3]
                await until(lambda: len(hooks.bodies) >= 1, what="the webhook")
                # the killed instance's own answer, had it come late, is not delivered again: the first recorded wins
                from imageinference.server.redis_store import Claim, queue_key
                from imageinference.server.store import ResultRecord

                late = ResultRecord(hooked["taskUUID"], 0, "data", {"imageUUID": "late", "seed": 5}, time.time())
                claim = Claim(queue_key(MODEL_X), "0-1", hooked["taskUUID"], 0)
                assert not a.store.record_result(late, claim, (hooks.url, {"data": [late.body]}), "")
                await asyncio.sleep(1.0)
                assert len(hooks.bodies) == 1 and hooks.bodies[0]["data"][0]["seed"] == 5
                status, polled = await a.post([{"taskType": "getResponse", "taskUUID": hooked["taskUUID"]}])
                assert [i["imageUUID"] != "late" for i in polled["data"]] == [True]
                r = redis.Redis.from_url(a.redis_url, decode_responses=True)
                assert r.hget(task_key(hooked["taskUUID"]), "attempts:0") == "2"
                assert r.hget(task_key(hooked["taskUUID"]), "ran:0").startswith("C/")
            finally:
                await stop_all(fleet.started)

    asyncio.run(scenario())


def test_a_result_whose_instances_keep_dying_ends_as_worker_lost(fleet):
    async def scenario():
        a = await fleet("A", local_depth=0, max_attempts=2)
        try:
            t = task(deliveryMethod="async")
            assert (await a.post([t]))[0] == 200
            for name in ("B", "C"):  # two runs, each killed
                worker = await fleet(name)
                await until(lambda w=worker: len(w.engine.prompts) == 1, timeout=15, what=f"{name} ran it")
                await worker.stop(killed=True)
            d = await fleet("D")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                status, polled = await a.post([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}])
                if polled.get("errors"):
                    break
                await asyncio.sleep(0.2)
            (error,) = polled["errors"]
            assert error["code"] == "workerLost" and "2 times" in error["message"] and error["status"] == "error"
            assert not d.engine.prompts  # not run a third time
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


def test_work_goes_to_the_instance_that_has_its_model_loaded(fleet):
    async def scenario():
        a = await fleet("A", local_depth=0)
        b = await fleet("B", local_depth=1, affinity_wait_s=3.0)
        c = await fleet("C", local_depth=1, affinity_wait_s=3.0)
        try:
            # warm them up: B runs X, C runs Y (each the only one free at that moment)
            await c.stop(killed=False)
            await a.post([task(MODEL_X, deliveryMethod="async")])
            await until(lambda: len(b.engine.prompts) == 1, what="B took X")
            c = await fleet("C", local_depth=1, affinity_wait_s=3.0)
            await a.post([task(MODEL_Y, deliveryMethod="async")])
            await until(lambda: len(c.engine.prompts) == 1, what="C took Y")
            await run_all(b)
            await run_all(c)
            await asyncio.sleep(0.5)  # both announce what they have loaded
            assert b.tracker.warm == [MODEL_X] and c.tracker.warm == [MODEL_Y]
            # now X and Y work, interleaved: each goes to the instance that has its model, both being free
            for i in range(6):
                await a.post([task(MODEL_X if i % 2 == 0 else MODEL_Y, deliveryMethod="async", seed=100 + i)])
            for _ in range(6):
                await asyncio.sleep(0.1)
                await run_all(b)
                await run_all(c)
            await until(lambda: len(b.engine.prompts) + len(c.engine.prompts) == 8, what="all six ran")
            models = {name: {json.loads(p["5"]["inputs"]["request"])["model"] for p in inst.engine.prompts.values()}
                      for name, inst in (("B", b), ("C", c))}
            assert models == {"B": {MODEL_X}, "C": {MODEL_Y}}
            # X work while B is busy: C takes it, but only after the affinity wait (3 s)
            await a.post([task(MODEL_X, deliveryMethod="async", seed=300)])
            await until(lambda: len(b.engine.prompts) == 5, what="B took X")  # B busy now (depth 1)
            t0 = time.monotonic()
            await a.post([task(MODEL_X, deliveryMethod="async", seed=301)])
            await until(lambda: len(c.engine.prompts) == 5, timeout=10, what="C stole the X work")
            assert time.monotonic() - t0 >= 2.5
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


def test_a_websocket_client_gets_results_run_on_another_instance(fleet):
    async def scenario():
        a = await fleet("A", local_depth=0)
        b = await fleet("B")
        try:
            ws = await a.session.ws_connect(a.url)
            await ws.send_str(json.dumps([{"taskType": "authentication", "apiKey": "x"}]))
            await ws.receive_json(timeout=5)
            t = task(numberResults=2, seed=11)
            await ws.send_str(json.dumps([t]))
            await until(lambda: len(b.engine.prompts) == 2, what="B claimed both")
            await run_all(b)
            frames = [await ws.receive_json(timeout=10) for _ in range(2)]
            assert sorted(f["data"][0]["seed"] for f in frames) == [11, 12]
            await ws.close()
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


def test_an_instance_with_another_api_key_refuses_tasks(fleet):
    async def scenario():
        await fleet("A", local_depth=0, api_key="k" * 32)
        other = await fleet("B", local_depth=0, api_key="z" * 32)
        try:
            await until(lambda: other.tracker.refusal() is not None and "another IMAGEINFERENCE_API_KEY" in
                        other.tracker.refusal(), what="B's refusal")
            async with other.session.post(other.url, json=[task()], headers={"Authorization": "Bearer " + "z" * 32}
                                          ) as resp:
                body = await resp.json()
            assert resp.status == 503 and body["errors"][0]["code"] == "serviceUnavailable"
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


def test_redis_down_is_answered_at_once_and_the_fleet_recovers(fleet, redis_server):
    async def scenario():
        a = await fleet("A", local_depth=0)
        b = await fleet("B")
        try:
            running = task(deliveryMethod="async", seed=21)
            await a.post([running])
            await until(lambda: len(b.engine.prompts) == 1, what="B claimed it")
            redis_server.stop()
            started = time.monotonic()
            status, body = await a.post([task(deliveryMethod="async"),
                                         {"taskType": "getResponse", "taskUUID": running["taskUUID"]}])
            assert time.monotonic() - started < 5
            assert status == 503 and [e["code"] for e in body["errors"]] == ["serviceUnavailable"] * 2
            assert "Redis" in body["errors"][0]["message"]
            assert (await a.post([{"taskType": "ping"}]))[0] == 200  # what needs no store still works
            await run_all(b)  # finishes while Redis is down: kept in memory, recorded when it is back
            await asyncio.sleep(0.5)
            redis_server.start()
            t = task(deliveryMethod="async", seed=22)
            status, body = await until_ok(lambda: a.post([t]))
            assert status == 200 and body["data"][0]["taskUUID"] == t["taskUUID"]
            await until(lambda: len(b.engine.prompts) == 2, timeout=15, what="B takes new work")
            await run_all(b)
            for u, seed in ((running["taskUUID"], 21), (t["taskUUID"], 22)):
                polled = await poll_done(a, u)
                assert [i["seed"] for i in polled["data"]] == [seed]
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())


async def until_ok(call, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        status, body = await call()
        if status == 200 or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.2)


async def poll_done(inst, task_uuid, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _s, polled = await inst.post([{"taskType": "getResponse", "taskUUID": task_uuid}])
        if polled.get("data") and all(i["status"] == "success" for i in polled["data"]):
            return polled
        await asyncio.sleep(0.2)
    raise AssertionError(f"{task_uuid} not finished: {polled}")


def test_a_sync_client_is_answered_when_redis_lost_its_task(fleet, redis_server):
    """Redis restarted without its data (no append-only file): the instance holding a sync client finds the task
    gone at its next reconciliation (every 5 s) and answers taskNotFound instead of leaving the client hanging."""
    async def scenario():
        a = await fleet("A", local_depth=0)  # accepts, runs nothing: the task stays queued
        try:
            t = task(seed=31)
            answer = asyncio.create_task(a.post([t], timeout=30))
            await until(lambda: redis.Redis.from_url(redis_server.url).exists(task_key(t["taskUUID"])),
                        what="the task stored")
            redis.Redis.from_url(redis_server.url).flushall()
            started = time.monotonic()
            status, body = await answer
            assert time.monotonic() - started < 12
            (error,) = body["errors"]
            assert error["code"] == "taskNotFound" and error["taskUUID"] == t["taskUUID"] and "Redis" in error["message"]
        finally:
            await stop_all(fleet.started)

    asyncio.run(scenario())
