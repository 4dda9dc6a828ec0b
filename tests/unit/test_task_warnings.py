"""Every delivery path answers a task's warnings (REST sync, the async acknowledgement and getResponse, WebSocket
frames, webhooks), each warning once, the same on each path: the endpoint's routes over real HTTP and a real
SQLite store, ComfyUI replaced by a queue a test finishes with the response the Output node gives."""

import asyncio
import json
import uuid

from aiohttp import web
from unit_helpers import EndpointApp

from imageinference.server.config import EndpointConfig

MODEL = "civitai:4384@128713"
LORA = {"code": "unmatchedLoraKeys", "message": "12 keys of LoRA x matched nothing in this model",
        "parameter": "lora.0.model"}
NEGATIVE = {"code": "ignoredNegativePrompt", "message": "'negativePrompt' has no effect at CFGScale 1",
            "parameter": "negativePrompt"}


def task(**fields):
    t = {"taskType": "imageInference", "taskUUID": str(uuid.uuid4()), "model": MODEL, "positivePrompt": "a lighthouse",
         "width": 512, "height": 512, "steps": 4, "seed": 3}
    t.update(fields)
    return t


def response(t, i, warnings):
    """What the Output node answers for result i: the item, and its warnings carrying the task's UUID."""
    return {"data": [{"taskType": "imageInference", "taskUUID": t["taskUUID"], "imageUUID": str(uuid.uuid4()),
                      "seed": t["seed"] + i}],
            "warnings": [dict(w, taskUUID=t["taskUUID"]) for w in warnings]}


def expected(t, *warnings):
    return [dict(w, taskUUID=t["taskUUID"]) for w in warnings]


async def finish_all(app, t, count, warnings_of=lambda i: [LORA, NEGATIVE]):
    for _ in range(400):
        if len(app.engine.prompt_ids) >= count:
            break
        await asyncio.sleep(0.005)
    for i, prompt_id in enumerate(list(app.engine.prompt_ids)[-count:]):
        await app.finish(prompt_id, response(t, i, warnings_of(i)))


def test_rest_sync_answers_each_warning_once(tmp_path):
    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig()) as app:
            t = task(numberResults=2)
            answer = asyncio.create_task(app.post([t]))
            await finish_all(app, t, 2)
            status, body = await answer
            assert status == 200 and len(body["data"]) == 2
            # both results give the same two warnings: the answer lists each once
            assert body["warnings"] == expected(t, LORA, NEGATIVE)

    asyncio.run(scenario())


def test_async_acknowledgement_then_get_response_answer_the_warnings(tmp_path):
    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig()) as app:
            t = task(deliveryMethod="async", numberResults=2)
            status, ack = await app.post([t])
            assert status == 200 and ack == {"data": [{"taskType": "imageInference", "taskUUID": t["taskUUID"]}]}
            poll = [{"taskType": "getResponse", "taskUUID": t["taskUUID"]}]
            first_id = app.engine.prompt_ids[0]
            await app.finish(first_id, response(t, 0, [LORA]))
            _s, partial = await app.post(poll)  # one result in: its warnings already
            assert [i["status"] for i in partial["data"]] == ["success", "processing"]
            assert partial["warnings"] == expected(t, LORA)
            await app.finish(app.engine.prompt_ids[1], response(t, 1, [LORA, NEGATIVE]))
            _s, done = await app.post(poll)
            assert [i["status"] for i in done["data"]] == ["success", "success"]
            assert done["warnings"] == expected(t, LORA, NEGATIVE)
            # several tasks polled at once: each task's warnings, once each
            quiet = task(deliveryMethod="async")
            await app.post([quiet])
            await app.finish(app.engine.prompt_ids[2], response(quiet, 0, []))
            _s, both = await app.post(poll + [{"taskType": "getResponse", "taskUUID": quiet["taskUUID"]}])
            assert both["warnings"] == expected(t, LORA, NEGATIVE)

    asyncio.run(scenario())


def test_websocket_frames_carry_the_warnings_of_their_result(tmp_path):
    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig()) as app:
            ws = await app.ws()
            try:
                await ws.send_str(json.dumps([{"taskType": "authentication", "apiKey": "x"}]))
                await ws.receive_json(timeout=5)
                t = task(numberResults=2)
                await ws.send_str(json.dumps([t]))
                await finish_all(app, t, 2, lambda i: [LORA] if i == 0 else [LORA, NEGATIVE])
                frames = [await ws.receive_json(timeout=5) for _ in range(2)]
                assert [len(f["data"]) for f in frames] == [1, 1]
                assert frames[0]["warnings"] == expected(t, LORA)
                assert frames[1]["warnings"] == expected(t, LORA, NEGATIVE)
                # getResponse over the socket: the same as over REST
                await ws.send_str(json.dumps([{"taskType": "getResponse", "taskUUID": t["taskUUID"]}]))
                polled = await ws.receive_json(timeout=5)
                assert polled["warnings"] == expected(t, LORA, NEGATIVE) and len(polled["data"]) == 2
            finally:
                await ws.close()

    asyncio.run(scenario())


def test_webhooks_carry_the_warnings_of_their_result(tmp_path):
    async def scenario():
        received = []

        async def hook(request):
            received.append(await request.json())
            return web.Response(text="ok")

        hook_app = web.Application()
        hook_app.router.add_post("/hook", hook)
        runner = web.AppRunner(hook_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"
        try:
            async with EndpointApp(tmp_path, EndpointConfig(allow_private_targets=True)) as app:
                t = task(webhookURL=url, numberResults=2)
                status, ack = await app.post([t])
                assert status == 200 and ack["data"][0]["taskUUID"] == t["taskUUID"]
                await finish_all(app, t, 2)
                for _ in range(400):
                    if len(received) == 2:
                        break
                    await asyncio.sleep(0.01)
                assert len(received) == 2
                for body in received:
                    assert len(body["data"]) == 1 and body["warnings"] == expected(t, LORA, NEGATIVE)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
