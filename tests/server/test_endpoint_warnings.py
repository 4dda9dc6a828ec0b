"""Warnings reach every client of the endpoint on a real ComfyUI (the session server): a negative prompt at
CFGScale 1 is accepted and ignored (`ignoredNegativePrompt`, the contract's own warning given by the Output node);
REST sync, async + getResponse and WebSocket frames each answer it, once per task. (Webhooks: test_endpoint_keyed.)"""

import pytest

from imageinference.server.client import EndpointClient, WsClient, image_task, run

MODEL = "test:sd15@1"


def ignored_negative(**fields):
    return image_task(MODEL, negativePrompt="blurry, low quality", CFGScale=1, numberResults=2, **fields)


def codes(warnings, task):
    assert all(w["taskUUID"] == task["taskUUID"] for w in warnings), warnings
    return [w["code"] for w in warnings]


@pytest.fixture(scope="module")
def client(server):
    return EndpointClient(server.url)


def test_rest_sync_answers_the_warning_once(client):
    task = ignored_negative(seed=31)
    status, body = client.post([task])
    assert status == 200 and len(body["data"]) == 2, body
    assert codes(body["warnings"], task) == ["ignoredNegativePrompt"]  # two results, one warning
    assert body["warnings"][0]["parameter"] == "negativePrompt"
    status, plain = client.post([image_task(MODEL, seed=31)])
    assert status == 200 and "warnings" not in plain


def test_get_response_answers_the_same_warning(client):
    task = ignored_negative(seed=32, deliveryMethod="async")
    status, ack = client.post([task])
    assert status == 200 and ack["data"][0]["taskUUID"] == task["taskUUID"]
    done = client.wait_for(task["taskUUID"], expected=2)
    assert codes(done["warnings"], task) == ["ignoredNegativePrompt"]


def test_websocket_frames_carry_the_warning(client):
    async def scenario():
        ws = await WsClient.connect(client)
        try:
            await ws.authenticate()
            task = ignored_negative(seed=33)
            await ws.send([task])
            frames = [await ws.recv(300) for _ in range(2)]
            return task, frames
        finally:
            await ws.close()

    task, frames = run(scenario())
    assert [len(f["data"]) for f in frames] == [1, 1]
    assert all(codes(f["warnings"], task) == ["ignoredNegativePrompt"] for f in frames)
