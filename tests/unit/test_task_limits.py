"""The endpoint's limits over real HTTP on a bare aiohttp app (routes.py + service.py, a fake engine; no ComfyUI):
a body that does not arrive within IMAGEINFERENCE_BODY_TIMEOUT gets 408 `requestTimeout`, and past
IMAGEINFERENCE_MAX_PENDING_TASKS unfinished tasks a new imageInference task gets `queueFull` (429)."""

import asyncio
import json
import time

import pytest
from unit_helpers import EndpointApp

from imageinference.server.body import read_body
from imageinference.server.config import BASE_PATH, EndpointConfig
from imageinference.server.protocol import EnvelopeError, http_status, status_of

MODEL = "civitai:4384@128713"


def image_task(n, **fields):
    task = {"taskType": "imageInference", "taskUUID": f"0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e{n:02x}",
            "model": MODEL, "positivePrompt": "a lighthouse", "width": 512, "height": 512, "steps": 4, "seed": n}
    task.update(fields)
    return task


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
        async with EndpointApp(tmp_path, EndpointConfig(body_timeout_s=0.6)) as srv:
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
        async with EndpointApp(tmp_path, EndpointConfig(max_pending_tasks=2)) as srv:
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


def test_concurrent_batches_cannot_overshoot_the_pending_limit(tmp_path):
    """Many batches at once, each task validated off the event loop before it is stored: the limit is checked
    in the same atomic step as each insertion, so exactly `limit` tasks are accepted, whatever the interleaving."""

    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig(max_pending_tasks=5)) as srv:
            batches = [[image_task(16 * b + i, deliveryMethod="async") for i in range(4)] for b in range(6)]
            answers = await asyncio.gather(*(srv.post(batch) for batch in batches))
            accepted = [i["taskUUID"] for _s, body in answers for i in body.get("data", [])]
            refused = [e for _s, body in answers for e in body.get("errors", [])]
            assert len(accepted) == 5 and len(refused) == 24 - 5
            assert {e["code"] for e in refused} == {"queueFull"}
            assert len(srv.engine.prompt_ids) == 5 and srv.store.count_unfinished() == 5
            await srv.finish(srv.engine.prompt_ids[0])  # one finishes: exactly one more fits
            again = await asyncio.gather(*(srv.post([image_task(200 + i, deliveryMethod="async")]) for i in range(4)))
            assert sum(status == 200 for status, _b in again) == 1
            assert sorted(status for status, _b in again) == [200, 429, 429, 429]

    asyncio.run(scenario())


def test_results_beyond_a_sessions_buffer_are_kept_for_get_response(tmp_path):
    """A WebSocket client away while its sync task finishes: frames beyond the session's byte bound are not held in
    memory, but every result is answered by getResponse."""
    config = EndpointConfig(ws_buffer_bytes=3000)

    async def scenario():
        async with EndpointApp(tmp_path, config) as srv:
            ws = await srv.ws()
            await ws.send_str(json.dumps([{"taskType": "authentication", "apiKey": "x"}]))
            session = (await ws.receive_json(timeout=5))["data"][0]["connectionSessionUUID"]
            task = image_task(1, numberResults=3)
            await ws.send_str(json.dumps([task]))
            for _ in range(400):
                if len(srv.engine.prompt_ids) == 3:
                    break
                await asyncio.sleep(0.005)
            await ws.close()
            await asyncio.sleep(0.05)
            for i, prompt_id in enumerate(srv.engine.prompt_ids):  # each frame about 1.2 KB: two fit in 3000 bytes
                await srv.finish(prompt_id, {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"],
                                                       "imageUUID": f"img-{i}", "seed": i,
                                                       "imageBase64Data": "A" * 1200}]})
            assert srv.sessions.total_bytes <= 3000
            ws = await srv.ws()
            await ws.send_str(json.dumps([{"taskType": "authentication", "apiKey": "x",
                                           "connectionSessionUUID": session}]))
            assert (await ws.receive_json(timeout=5))["data"][0]["connectionSessionUUID"] == session
            resent = [await ws.receive_json(timeout=5) for _ in range(2)]
            assert [f["data"][0]["imageUUID"] for f in resent] == ["img-0", "img-1"]
            await ws.send_str(json.dumps([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}]))
            polled = await ws.receive_json(timeout=5)
            assert [i["imageUUID"] for i in polled["data"]] == ["img-0", "img-1", "img-2"]
            await ws.close()

    asyncio.run(scenario())
