"""The WebSocket endpoint on a real ComfyUI (the session server): authentication, ping, results as they complete,
async over the socket, and session resume after a reconnect."""

import asyncio
import time

import pytest

from imageinference.server.client import EndpointClient, WsClient, image_task, new_uuid, run

MODEL = "test:sd15@1"


@pytest.fixture(scope="module")
def client(server):
    return EndpointClient(server.url)


def test_authentication_answers_a_session_and_ping_answers_pong(client):
    async def scenario():
        ws = await WsClient.connect(client)
        try:
            reply = await ws.authenticate("any key works without IMAGEINFERENCE_API_KEY")
            (item,) = reply["data"]
            assert item["taskType"] == "authentication" and "taskUUID" not in item
            assert len(item["connectionSessionUUID"]) == 36
            await ws.send([{"taskType": "ping", "ping": True}])
            assert await ws.recv() == {"data": [{"taskType": "ping", "pong": True}]}
            await ws.ws.send_str("{broken")
            frame = await ws.recv()
            assert frame["errors"][0]["code"] == "invalidJson"
            await ws.send([{"taskType": "ping"}, {"taskType": "getResponse", "taskUUID": new_uuid()}])
            data, errors = await ws.recv(), await ws.recv()  # data and errors never share a frame
            assert data == {"data": [{"taskType": "ping", "pong": True}]}
            assert errors["errors"][0]["code"] == "taskNotFound"
        finally:
            await ws.close()

    run(scenario())


def test_results_arrive_one_frame_each_as_they_complete(client):
    async def scenario():
        ws = await WsClient.connect(client)
        try:
            await ws.authenticate()
            task = image_task(MODEL, numberResults=3, seed=5)
            await ws.send([task])
            frames, arrived = [], []
            while sum(len(f.get("data", [])) for f in frames) < 3:
                frames.append(await ws.recv(300))
                arrived.append(time.monotonic())
            assert all(len(f["data"]) == 1 and "errors" not in f for f in frames) and len(frames) == 3
            assert sorted(f["data"][0]["seed"] for f in frames) == [5, 6, 7]
            assert all(f["data"][0]["taskUUID"] == task["taskUUID"] for f in frames)
            return arrived
        finally:
            await ws.close()

    arrived = run(scenario())
    assert arrived[2] - arrived[0] > 0.05  # not one burst at the end: each result when it was finished


def test_async_tasks_over_the_socket_are_acknowledged_and_polled(client):
    async def scenario():
        ws = await WsClient.connect(client)
        try:
            await ws.authenticate()
            task = image_task(MODEL, deliveryMethod="async")
            await ws.send([task])
            assert await ws.recv() == {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}
            for _ in range(600):
                await ws.send([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
                frame = await ws.recv()
                if frame["data"][0]["status"] == "success":
                    return frame["data"][0]
                await asyncio.sleep(0.2)
            raise AssertionError("never finished")
        finally:
            await ws.close()

    item = run(scenario())
    assert item["imageURL"] and item["taskUUID"]


def test_a_client_that_reconnects_with_its_session_gets_what_it_missed(client):
    async def scenario():
        ws = await WsClient.connect(client)
        session = (await ws.authenticate())["data"][0]["connectionSessionUUID"]
        task = image_task(MODEL, numberResults=2, seed=21)
        await ws.send([task])
        await ws.close()  # gone before any result
        # both results finish while the client is away
        client.wait_for(task["taskUUID"], expected=2)
        ws = await WsClient.connect(client)
        try:
            reply = await ws.authenticate(session_uuid=session)
            assert reply["data"][0]["connectionSessionUUID"] == session
            items = await ws.collect(task["taskUUID"], 2, timeout_s=10)
            assert sorted(i["seed"] for i in items) == [21, 22]
            # a client without the session UUID gets a new session and nothing of the old one
            other = await WsClient.connect(client)
            fresh = (await other.authenticate())["data"][0]["connectionSessionUUID"]
            assert fresh != session
            await other.send([{"taskType": "ping"}])
            assert await other.recv() == {"data": [{"taskType": "ping", "pong": True}]}
            await other.close()
        finally:
            await ws.close()

    run(scenario())


def test_tasks_without_authentication_run_when_no_key_is_configured(client):
    async def scenario():
        ws = await WsClient.connect(client)
        try:
            task = image_task(MODEL)
            await ws.send([task])
            (item,) = await ws.collect(task["taskUUID"], 1, timeout_s=300)
            assert item["imageURL"]
        finally:
            await ws.close()

    run(scenario())
