"""A ComfyUI started with IMAGEINFERENCE_API_KEY (listening on every interface), small limits, private targets
allowed: every task needs the key; webhooks and uploadEndpoint PUTs reach local test receivers, with retries."""

import base64
import io
import json
import os
import time

import pytest
from PIL import Image
from server_helpers import HttpReceiver, local_address

from imageinference.server.client import EndpointClient, WsClient, image_task, new_uuid, run
from imageinference.server.localrun import endpoint_server

MODEL = "test:sd15@1"
KEY = "k-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def keyed(tiny_models_root, tmp_path_factory):
    env = {"IMAGEINFERENCE_API_KEY": KEY, "IMAGEINFERENCE_ALLOW_PRIVATE_URLS": "1",
           "IMAGEINFERENCE_MAX_BODY_BYTES": "1000000", "IMAGEINFERENCE_WS_IDLE_SECONDS": "3",
           "IMAGEINFERENCE_WEBHOOK_BACKOFF": "0.2", "IMAGEINFERENCE_MAX_IMAGE_BYTES": "100000"}
    with endpoint_server(tmp_path_factory.mktemp("keyed"), tiny_models_root, env,
                         ["--listen", "0.0.0.0"]) as srv:
        yield srv


def test_the_start_line_says_key_protected(keyed):
    log = keyed.log_path.read_text(errors="replace")
    assert "imageInference endpoint on /imageinference/v1" in log and "key-protected" in log


def test_every_task_needs_the_key(keyed):
    none = EndpointClient(keyed.url)
    tasks = [image_task(MODEL), {"taskType": "getResponse", "taskUUID": new_uuid()}]
    status, body = none.post(tasks)
    assert status == 401 and "data" not in body
    assert [(e["code"], e["taskUUID"], e["taskType"]) for e in body["errors"]] == [
        ("missingApiKey", t["taskUUID"], t["taskType"]) for t in tasks]
    wrong = EndpointClient(keyed.url, "wrong")
    status, body = wrong.post([image_task(MODEL)])
    assert status == 401 and body["errors"][0]["code"] == "invalidApiKey"
    status, body = EndpointClient(keyed.url, KEY).post([{"taskType": "modelSearch"}])
    assert status == 200 and body["data"][0]["totalResults"] >= 1
    # an authentication task first authenticates the tasks after it, not those before it
    search = {"taskType": "modelSearch", "taskUUID": new_uuid()}
    status, body = none.post([search, {"taskType": "authentication", "apiKey": KEY}, dict(search, taskUUID=new_uuid())])
    assert status == 200
    assert [e["code"] for e in body["errors"]] == ["missingApiKey"] and body["errors"][0]["taskUUID"] == search["taskUUID"]
    assert [i["taskType"] for i in body["data"]] == ["authentication", "modelSearch"]
    status, body = none.post([{"taskType": "authentication", "apiKey": "nope"}, search])
    assert status == 401 and [e["code"] for e in body["errors"]] == ["invalidApiKey", "missingApiKey"]


def test_pings_need_no_key_and_tasks_are_refused_without_one(keyed):
    status, body = EndpointClient(keyed.url).post([{"taskType": "ping", "ping": True}, image_task(MODEL)])
    assert status == 200 and body["data"] == [{"taskType": "ping", "pong": True}]
    assert body["errors"][0]["code"] == "missingApiKey"


def test_websocket_authentication_with_the_key(keyed):
    client = EndpointClient(keyed.url)

    async def scenario():
        ws = await WsClient.connect(client)
        try:
            task = image_task(MODEL)
            await ws.send([task])
            frame = await ws.recv()
            assert frame["errors"][0]["code"] == "missingApiKey" and frame["errors"][0]["taskUUID"] == task["taskUUID"]
            bad = await ws.authenticate("wrong key")
            assert bad["errors"][0] == {**bad["errors"][0], "code": "invalidApiKey", "parameter": "apiKey",
                                        "taskType": "authentication"}
            good = await ws.authenticate(KEY)
            assert good["data"][0]["connectionSessionUUID"]
            await ws.send([{"taskType": "modelSearch", "taskUUID": new_uuid()}])
            assert (await ws.recv())["data"][0]["taskType"] == "modelSearch"
        finally:
            await ws.close()
        # a header key authenticates the socket too
        ws = await WsClient.connect(client, headers={"Authorization": f"Bearer {KEY}"})
        try:
            await ws.send([{"taskType": "modelSearch", "taskUUID": new_uuid()}])
            assert "data" in await ws.recv()
        finally:
            await ws.close()

    run(scenario())


def test_an_idle_socket_is_closed(keyed):
    async def scenario():
        ws = await WsClient.connect(EndpointClient(keyed.url))
        try:
            started = time.monotonic()
            msg = await ws.ws.receive(timeout=30)
            return msg.type.name, time.monotonic() - started
        finally:
            await ws.close()

    kind, after = run(scenario())
    assert kind in ("CLOSE", "CLOSED", "CLOSING") and 2.5 <= after <= 10


def test_body_and_image_size_limits(keyed):
    client = EndpointClient(keyed.url, KEY)
    status, body = client.post([{"taskType": "ping", "pad": "x" * 1_100_000}])
    assert status == 413 and body["errors"][0]["code"] == "payloadTooLarge"
    buf = io.BytesIO()
    Image.frombytes("RGB", (256, 256), os.urandom(256 * 256 * 3)).save(buf, "PNG")  # noise: incompressible
    assert len(buf.getvalue()) > 100_000
    status, body = client.post([{"taskType": "imageUpload", "taskUUID": new_uuid(),
                                 "image": base64.b64encode(buf.getvalue()).decode()}])
    assert status == 400 and body["errors"][0]["code"] == "invalidImage" and "limit" in body["errors"][0]["message"]


def test_a_webhook_gets_one_post_per_result_retried_until_accepted(keyed):
    client = EndpointClient(keyed.url, KEY)
    rx = HttpReceiver(fail=1)
    try:
        # a negative prompt at CFGScale 1 is ignored: each POST carries that warning, as REST sync would
        task = image_task(MODEL, numberResults=2, seed=3, webhookURL=rx.base + "/hook?token=t1",
                          negativePrompt="blurry", CFGScale=1)
        status, body = client.post([task])
        assert status == 200 and body == {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}
        done = client.wait_for(task["taskUUID"], expected=2)
        requests = rx.wait(3)
        assert len(requests) == 3 and all(r[:3] == ("POST", "/hook?token=t1", "application/json") for r in requests)
        delivered = [json.loads(r[3])["data"][0] for r in requests[1:]]  # the first answer was a 500: resent
        expected = [{k: v for k, v in i.items() if k != "status"} for i in done["data"]]
        assert sorted(delivered, key=lambda i: i["seed"]) == sorted(expected, key=lambda i: i["seed"])
        for request in requests:
            assert [w["code"] for w in json.loads(request[3])["warnings"]] == ["ignoredNegativePrompt"]
        assert [w["code"] for w in done["warnings"]] == ["ignoredNegativePrompt"]
    finally:
        rx.close()


def test_upload_endpoint_gets_the_raw_image_bytes(keyed):
    client = EndpointClient(keyed.url, KEY)
    rx = HttpReceiver()
    try:
        task = image_task(MODEL, outputFormat="PNG", uploadEndpoint=rx.base + "/bucket/object.png?sig=abc")
        status, body = client.post([task])
        assert status == 200, body
        (item,) = body["data"]
        (request,) = rx.requests  # the PUT happened before the result was answered
        assert request[:3] == ("PUT", "/bucket/object.png?sig=abc", "image/png")
        code, data = client.get(item["imageURL"])
        assert code == 200 and request[3] == data
    finally:
        rx.close()


def test_a_failing_upload_endpoint_is_the_results_error(keyed):
    rx = HttpReceiver(fail=100)
    try:
        task = image_task(MODEL, uploadEndpoint=rx.base + "/put")
        status, body = EndpointClient(keyed.url, KEY).post([task])
        assert status == 400 and body["errors"][0]["code"] == "uploadFailed"
        assert len(rx.requests) == 6  # IMAGEINFERENCE_WEBHOOK_ATTEMPTS (default 6)
    finally:
        rx.close()


def test_remote_clients_are_served_when_a_key_is_configured(keyed):
    ip = local_address()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    status, body = EndpointClient(f"http://{ip}:{keyed.port}", KEY).post([{"taskType": "ping"}])
    assert status == 200 and body["data"][0]["pong"] is True
