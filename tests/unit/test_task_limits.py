"""The endpoint's limits over real HTTP on a bare aiohttp app (routes.py + service.py, a fake engine; no ComfyUI):
a body that does not arrive within IMAGEINFERENCE_BODY_TIMEOUT gets 408 `requestTimeout`, and past
IMAGEINFERENCE_MAX_PENDING_TASKS unfinished tasks a new imageInference task gets `queueFull` (429)."""

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web

from imageinference.engines.imageio.store import ImageStore
from imageinference.interop.compiler import NODE
from imageinference.server.config import BASE_PATH, EndpointConfig
from imageinference.server.delivery import WebhookWorker
from imageinference.server.lifecycle import TaskTracker
from imageinference.server.protocol import EnvelopeError, http_status, status_of
from imageinference.server.routes import Endpoint, read_body
from imageinference.server.service import TaskService
from imageinference.server.sessions import SessionRegistry
from imageinference.server.sqlite_store import SqliteTaskStore
from imageinference.server.store import StoreRunner

MODEL = "civitai:4384@128713"


class QueueingEngine:
    """ComfyUI accepts every prompt and runs none until told (`finish`)."""

    def __init__(self):
        self.prompt_ids = []

    async def submit(self, prompt_id, prompt):
        self.prompt_ids.append(prompt_id)
        return None


def image_task(n, **fields):
    task = {"taskType": "imageInference", "taskUUID": f"0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e{n:02x}",
            "model": MODEL, "positivePrompt": "a lighthouse", "width": 512, "height": 512, "steps": 4, "seed": n}
    task.update(fields)
    return task


class Server:
    """The endpoint's routes on a real aiohttp server on loopback, as install.py puts them on ComfyUI's."""

    def __init__(self, tmp_path, config):
        self.tmp_path, self.config = tmp_path, config

    async def __aenter__(self):
        self.runner = StoreRunner(SqliteTaskStore(self.tmp_path / "tasks.sqlite"))
        self.engine = QueueingEngine()
        images = ImageStore(self.tmp_path / "images")
        webhooks = WebhookWorker(self.runner, 1, 0.01, 0.01, 1, False)
        self.tracker = TaskTracker(self.runner, self.engine, SessionRegistry(1.0), webhooks, images,
                                   lambda: "http://127.0.0.1", self.config)
        service = TaskService(self.runner, self.tracker, self.config, images, lambda: "http://127.0.0.1")
        endpoint = Endpoint(service, SessionRegistry(1.0), self.config, images)
        app = web.Application()
        app.router.add_post(BASE_PATH, endpoint.post)
        self.app_runner = web.AppRunner(app)
        await self.app_runner.setup()
        site = web.TCPSite(self.app_runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}{BASE_PATH}"
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc):
        await self.session.close()
        await self.app_runner.cleanup()
        self.runner.close()

    async def post(self, tasks):
        async with self.session.post(self.url, json=tasks) as resp:
            return resp.status, await resp.json()

    async def finish(self, prompt_id):
        response = {"data": [{"taskType": "imageInference", "imageUUID": "x", "seed": 1}]}
        self.tracker.on_message("executed", {"node": NODE["output"], "prompt_id": prompt_id,
                                             "output": {"response": [json.dumps(response)]}})
        self.tracker.on_message("execution_success", {"prompt_id": prompt_id})
        for _ in range(200):
            await asyncio.sleep(0.005)
            if not self.tracker._tasks:
                return
        raise AssertionError("the result was never recorded")


async def slow_request(port, trickle=None):
    """A POST that declares a 1000-byte body and sends one byte of it (then, with `trickle`, one more byte every
    `trickle` seconds); answers (status, JSON body, seconds until the answer's head) or (None, None, seconds) if
    the server closed the connection without an answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(b"POST " + BASE_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[")
    await writer.drain()

    async def drip():
        while True:
            await asyncio.sleep(trickle)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(drip()) if trickle else None
    try:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except asyncio.IncompleteReadError as exc:  # closed without (a whole) answer
            assert not exc.partial, exc.partial
            return None, None, time.monotonic() - started
        elapsed = time.monotonic() - started
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    finally:
        if dripping:
            dripping.cancel()
        writer.close()
    return int(lines[0].split(" ", 2)[1]), json.loads(body), elapsed


@pytest.mark.parametrize("trickle", [None, 0.05], ids=["stalled", "trickling"])
def test_a_body_that_does_not_arrive_in_time_gets_408_request_timeout(tmp_path, trickle):
    async def scenario():
        async with Server(tmp_path, EndpointConfig(body_timeout_s=0.6)) as srv:
            answer = asyncio.create_task(slow_request(srv.port, trickle=trickle))
            # meanwhile other clients are served
            assert await srv.post([{"taskType": "ping"}]) == (200, {"data": [{"taskType": "ping", "pong": True}]})
            status, body, elapsed = await answer
            assert status == 408, body
            (error,) = body["errors"]
            assert error["code"] == "requestTimeout" and "0.6 s" in error["message"]
            assert {"message", "taskType", "documentation"} <= set(error) and "parameter" not in error
            # cut off at the deadline for the whole body, however slowly bytes keep coming
            assert 0.5 <= elapsed < 5, elapsed

    asyncio.run(scenario())


def test_the_body_reader_stops_at_its_deadline():
    class Stalled:
        content_length = None

        class content:  # noqa: N801 - the attribute aiohttp's request has
            calls = 0

            @classmethod
            async def read(cls, n):
                cls.calls += 1
                if cls.calls == 1:
                    return b"["
                await asyncio.Event().wait()  # never more

    async def scenario():
        started = time.monotonic()
        with pytest.raises(EnvelopeError) as info:
            await asyncio.wait_for(read_body(Stalled(), 1000, 0.3), 10)  # a reader without a deadline fails here
        assert 0.25 <= time.monotonic() - started < 3
        assert info.value.status == 408 and info.value.error.code == "requestTimeout"
        assert "IMAGEINFERENCE_BODY_TIMEOUT" in info.value.error.message

    asyncio.run(scenario())


def test_past_the_pending_limit_image_tasks_get_queue_full_429(tmp_path):
    async def scenario():
        async with Server(tmp_path, EndpointConfig(max_pending_tasks=2)) as srv:
            status, body = await srv.post([image_task(1, deliveryMethod="async"), image_task(2, deliveryMethod="async"),
                                           image_task(3, deliveryMethod="async")])
            assert status == 200  # some tasks have data: 200 with the third one's error
            assert [i["taskUUID"] for i in body["data"]] == [image_task(1)["taskUUID"], image_task(2)["taskUUID"]]
            (full,) = body["errors"]
            assert full["code"] == "queueFull"
            assert (full["taskUUID"], full["taskType"]) == (image_task(3)["taskUUID"], "imageInference")
            assert "parameter" not in full  # about the server, not a field of the task (empty ones are omitted)
            assert full["message"] == ("2 tasks are unfinished; the limit is 2 (IMAGEINFERENCE_MAX_PENDING_TASKS); "
                                       "try again later")
            assert len(srv.engine.prompt_ids) == 2  # the refused task was never queued ...
            status, body = await srv.post([{"taskType": "getResponse", "taskUUID": image_task(3)["taskUUID"]}])
            assert status == 404 and body["errors"][0]["code"] == "taskNotFound"  # ... nor stored

            status, body = await srv.post([image_task(4)])  # sync, alone: the answer's status is 429
            assert status == 429 and [e["code"] for e in body["errors"]] == ["queueFull"]
            assert status_of("queueFull") == 429 == http_status([], body["errors"])
            # other task types are still answered
            status, body = await srv.post([{"taskType": "ping"}, image_task(5)])
            assert status == 200 and body["data"] == [{"taskType": "ping", "pong": True}]
            assert body["errors"][0]["code"] == "queueFull"

            await srv.finish(srv.engine.prompt_ids[0])  # a task finishes: room for one more
            status, body = await srv.post([image_task(6, deliveryMethod="async"),
                                           image_task(7, deliveryMethod="async")])
            assert status == 200 and body["data"] == [{"taskType": "imageInference",
                                                       "taskUUID": image_task(6)["taskUUID"]}]
            assert [e["code"] for e in body["errors"]] == ["queueFull"]

    asyncio.run(scenario())
