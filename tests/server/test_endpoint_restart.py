"""Durability: after ComfyUI restarts, finished results are still there and unfinished tasks answer an error
(and tell their webhook), never silence. Also: with no key, clients that are not on loopback are refused."""

import time

import pytest
from server_helpers import HttpReceiver, local_address

from imageinference.server.client import EndpointClient, WsClient, image_task, run
from imageinference.server.localrun import prepare

MODEL = "test:sd15@1"


@pytest.fixture(scope="module")
def restartable(tiny_models_root, tmp_path_factory):
    srv = prepare(tmp_path_factory.mktemp("restart"), tiny_models_root, {"IMAGEINFERENCE_ALLOW_PRIVATE_URLS": "1"},
                  ["--listen", "0.0.0.0"])
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_results_survive_a_restart_and_unfinished_tasks_answer_an_error(restartable):
    client = EndpointClient(restartable.url)
    rx = HttpReceiver()
    finished = image_task(MODEL, seed=1)
    status, before = client.post([finished])
    assert status == 200, before
    slow = [image_task(MODEL, deliveryMethod="async", steps=40, numberResults=2, seed=10 + i, webhookURL=rx.url)
            for i in range(3)]
    status, acks = client.post(slow)
    assert status == 200 and len(acks["data"]) == 3
    time.sleep(1.0)
    restartable.stop()  # mid-generation
    restartable.start()
    try:
        _s, after = client.post([{"taskType": "getResponse", "taskUUID": finished["taskUUID"]}])
        assert [{k: v for k, v in i.items() if k != "status"} for i in after["data"]] == before["data"]
        assert client.get(before["data"][0]["imageURL"])[0] == 200
        lost = 0
        for task in slow:
            _s, body = client.post([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
            data, errors = body.get("data", []), body.get("errors", [])
            assert not [i for i in data if i["status"] == "processing"]
            assert len(data) + len(errors) == 2
            assert all(e["code"] == "serverRestarted" and e["status"] == "error" for e in errors)
            lost += len(errors)
        assert lost >= 2  # the last task cannot have started within a second
        deadline = time.monotonic() + 30
        while sum("errors" in b for b in rx.bodies) < lost and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sum(b["errors"][0]["code"] == "serverRestarted" for b in rx.bodies if "errors" in b) == lost
        again = image_task(MODEL, seed=1)
        status, body = client.post([again, dict(finished)])  # new work runs; a stored taskUUID stays taken
        assert status == 200 and body["data"][0]["taskUUID"] == again["taskUUID"]
        assert body["errors"][0]["code"] == "conflictTaskUUID"
    finally:
        rx.close()


def test_without_a_key_only_loopback_clients_are_answered(restartable):

    log = restartable.log_path.read_text(errors="replace")
    assert "NO API KEY: answering loopback clients only" in log
    ip = local_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    remote = EndpointClient(f"http://{ip}:{restartable.port}")
    status, body = remote.post([{"taskType": "ping"}])
    assert status == 403 and body["errors"][0]["code"] == "loopbackOnly"
    assert remote.get(remote.url)[0] == 403  # no WebSocket either

    async def ws_refused():
        try:
            ws = await WsClient.connect(remote)
        except Exception as exc:
            return str(exc)
        await ws.close()
        return "connected"

    assert "403" in run(ws_refused())


def test_a_prompt_removed_from_comfyuis_queue_ends_its_task_with_an_error(restartable):
    client = EndpointClient(restartable.url)
    first = image_task(MODEL, deliveryMethod="async", steps=30, seed=77)
    second = image_task(MODEL, deliveryMethod="async", seed=78)
    assert client.post([first, second])[0] == 200
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the first one is sampling, so only the second is still queued
        _s, body = client.post([{"taskType": "getResponse", "taskUUID": first["taskUUID"]}])
        if body["data"][0].get("progress", 0) > 0:
            break
        time.sleep(0.2)
    restartable.post_json("/queue", {"clear": True})  # ComfyUI's own "clear queue"
    body = client.wait_for(second["taskUUID"], timeout_s=120)
    assert [e["code"] for e in body["errors"]] == ["inferenceCancelled"]
    assert client.wait_for(first["taskUUID"], timeout_s=600)["data"][0]["status"] == "success"
