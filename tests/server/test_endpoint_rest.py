"""The REST endpoint on a real ComfyUI (the session server: no key, loopback only) with the tiny SD1.5."""

import base64
import io
import json
import time

import pytest
from PIL import Image

from imageinference.server.client import EndpointClient, image_task, new_uuid
from imageinference.server.config import BASE_PATH

MODEL = "test:sd15@1"
PROGRESS_STEPS = 30


@pytest.fixture(scope="module")
def client(server):
    return EndpointClient(server.url)


def png_data_uri(w=128, h=128, color=(200, 30, 30)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_a_sync_task_answers_every_result_with_its_seed_and_a_served_image(client, server):
    task = image_task(MODEL, numberResults=2, seed=7, outputFormat="PNG")
    status, body = client.post([task])
    assert status == 200, body
    items = body["data"]
    assert [i["seed"] for i in items] == [7, 8] and "errors" not in body
    assert all(i["taskUUID"] == task["taskUUID"] and i["taskType"] == "imageInference" for i in items)
    assert len({i["imageUUID"] for i in items}) == 2
    for item in items:
        assert item["imageURL"] == f"{server.url}{BASE_PATH}/image/{item['imageUUID']}.png"
        code, data = client.get(item["imageURL"])
        assert code == 200 and Image.open(io.BytesIO(data)).size == (128, 128)
        # the very file the Output node wrote into ComfyUI's output folder
        assert data == (server.base_dir / "output" / "imageinference" / f"{item['imageUUID']}.png").read_bytes()


def test_every_task_of_an_array_is_answered_on_its_own_in_order(client):
    bad_size = image_task(MODEL, width=100)
    unknown = new_uuid()
    tasks = [{"taskType": "ping", "ping": True}, bad_size, {"taskType": "modelSearch", "search": "sd15"},
             {"taskType": "getResponse", "taskUUID": unknown}, {"taskType": "videoInference", "taskUUID": new_uuid()},
             "not a task", {"taskType": "imageInference"}]
    status, body = client.post(tasks)
    assert status == 200
    assert body["data"][0] == {"taskType": "ping", "pong": True}
    # other tests of the session add entries to the shared catalog: the model must be among the results
    assert body["data"][1]["taskType"] == "modelSearch"
    assert MODEL in [r["air"] for r in body["data"][1]["results"]]
    codes = [(e["code"], e.get("taskUUID")) for e in body["errors"]]
    assert codes == [("invalidWidth", bad_size["taskUUID"]), ("taskNotFound", unknown),
                     ("invalidTaskType", tasks[4]["taskUUID"]), ("invalidTask", None), ("missingTaskUUID", None)]
    for err in body["errors"]:
        assert {"code", "message", "taskType", "documentation"} <= set(err)
    assert body["errors"][0]["parameter"] == "width" and body["errors"][0]["type"] == "integer"


def test_an_async_task_is_acknowledged_then_polled_to_its_results(client):
    # enough sampling steps that sampling spans many polls (the tiny model: about 6 steps/s on a 2-core CPU)
    task = image_task(MODEL, deliveryMethod="async", numberResults=2, steps=PROGRESS_STEPS, seed=11)
    started = time.monotonic()
    status, body = client.post([task])
    assert status == 200 and body == {"data": [{"taskType": "imageInference", "taskUUID": task["taskUUID"]}]}
    assert time.monotonic() - started < 5
    progress = []
    while True:
        status, poll = client.post([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        assert status == 200, poll
        processing = [i for i in poll["data"] if i["status"] == "processing"]
        if not processing:
            break
        progress.append(processing[0]["progress"])
        time.sleep(0.05)
    assert progress, "the task was never seen processing"
    # ComfyUI's sampler progress reaches getResponse: it rises, stays below 100 while processing
    assert all(0 <= p <= 99 for p in progress) and progress == sorted(progress), progress
    assert max(progress) > 0, progress
    done = [i for i in poll["data"] if i["status"] == "success"]
    assert sorted(i["seed"] for i in done) == [11, 12]
    _s, again = client.post([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
    assert again["data"] == poll["data"]  # cumulative: results stay


def test_a_reused_task_uuid_is_refused(client):
    task = image_task(MODEL)
    assert client.post([task])[0] == 200
    status, body = client.post([task])
    assert status == 400 and body["errors"][0]["code"] == "conflictTaskUUID"
    assert body["errors"][0]["taskUUID"] == task["taskUUID"]


def test_base64_and_data_uri_outputs_and_cost(client):
    b64 = image_task(MODEL, outputType="base64Data", includeCost=True, seed=3)
    uri = image_task(MODEL, outputType="dataURI", outputFormat="WEBP", seed=3)
    status, body = client.post([b64, uri])
    assert status == 200, body
    first, second = body["data"]
    assert first["cost"] == 0 and "imageURL" not in first and "cost" not in second
    a = Image.open(io.BytesIO(base64.b64decode(first["imageBase64Data"])))
    assert (a.format, a.size) == ("JPEG", (128, 128))
    assert second["imageDataURI"].startswith("data:image/webp;base64,")
    b = Image.open(io.BytesIO(base64.b64decode(second["imageDataURI"].split(",", 1)[1])))
    assert (b.format, b.size) == ("WEBP", (128, 128))


def test_an_uploaded_image_is_usable_as_a_seed_image(client):
    status, body = client.post([{"taskType": "imageUpload", "taskUUID": new_uuid(), "image": png_data_uri()}])
    assert status == 200, body
    upload = body["data"][0]
    code, data = client.get(upload["imageURL"])
    assert code == 200 and Image.open(io.BytesIO(data)).getpixel((5, 5)) == (200, 30, 30)
    task = image_task(MODEL, seedImage=upload["imageUUID"], strength=0.5)
    status, body = client.post([task])
    assert status == 200, body
    assert body["data"][0]["taskUUID"] == task["taskUUID"]
    status, body = client.post([image_task(MODEL, seedImage="0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e30")])
    assert status == 400 and body["errors"][0]["code"] == "unknownImage"


def test_url_outputs_expire_with_their_ttl(client, server):
    status, body = client.post([image_task(MODEL, ttl=60, outputType="URL")])
    assert status == 200, body
    url, image_uuid = body["data"][0]["imageURL"], body["data"][0]["imageUUID"]
    assert client.get(url)[0] == 200
    marker = server.base_dir / "output" / "imageinference" / ".expiry" / f"{image_uuid}.jpg"
    assert 55 <= float(marker.read_text()) - time.time() <= 60  # the ttl was recorded
    marker.write_text(repr(time.time() - 1))  # as if 60 s had passed
    code, data = client.get(url)
    assert code == 404 and json.loads(data)["errors"][0]["code"] == "imageNotFound"


def test_requests_that_cannot_be_read_get_one_documented_error(client, server):
    assert client.post_raw(b"{not json")[1]["errors"][0]["code"] == "invalidJson"
    status, body = client.post_raw(b"[]")
    assert status == 400 and body["errors"][0]["code"] == "invalidTask"
    status, body = client.post([{"taskType": "ping"}] * 257)
    assert status == 400 and body["errors"][0]["code"] == "tooManyTasks"
    code, data = client.get(client.url)  # a GET without a WebSocket upgrade
    assert code == 400 and json.loads(data)["errors"][0]["code"] == "invalidRequest"
    api = EndpointClient(server.url + "/api")  # ComfyUI's /api prefix works as for its own routes
    assert api.post([{"taskType": "ping"}]) == (200, {"data": [{"taskType": "ping", "pong": True}]})


def test_webhooks_and_uploads_never_reach_the_local_network_unless_allowed(client):
    hook = image_task(MODEL, webhookURL="http://127.0.0.1:9/hook")
    upload = image_task(MODEL, uploadEndpoint="http://169.254.169.254/latest/meta-data")
    fetch = {"taskType": "imageUpload", "taskUUID": new_uuid(), "image": "http://127.0.0.1:9/x.png"}
    status, body = client.post([hook, upload, fetch])
    assert status == 400
    assert [(e["code"], e["parameter"]) for e in body["errors"]] == [
        ("invalidWebhookURL", "webhookURL"), ("invalidUploadEndpoint", "uploadEndpoint"), ("invalidImage", "image")]
    assert "globally routable" in body["errors"][0]["message"]


def test_a_page_reaching_the_keyless_endpoint_by_dns_rebinding_is_refused(server):
    """From outside: a raw request to the server's loopback port naming a foreign host, as a browser does after
    an attacker's name was rebound to 127.0.0.1."""
    import http.client

    def ask(headers, path=BASE_PATH, method="POST", body=b'[{"taskType": "ping"}]'):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.putrequest(method, path, skip_host=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        status, data = resp.status, resp.read()
        conn.close()
        return status, json.loads(data) if data.startswith(b"{") else data

    status, body = ask({"Host": f"rebind.attacker.example:{server.port}"})
    assert status == 403 and body["errors"][0]["code"] == "loopbackOnly", body
    # a foreign page's Origin under a loopback Host: ComfyUI's own origin check already answers 403
    assert ask({"Host": f"127.0.0.1:{server.port}", "Origin": "http://rebind.attacker.example"})[0] == 403
    status, _body = ask({"Host": f"rebind.attacker.example:{server.port}"},
                        path=f"{BASE_PATH}/image/6c5e0e3c-3d1e-4e6b-9f7a-1b2c3d4e5f60.png", method="GET", body=b"")
    assert status == 403
    assert ask({"Host": f"localhost:{server.port}"}) == (200, {"data": [{"taskType": "ping", "pong": True}]})
