"""Models fetched on the request path (IMAGEINFERENCE_AUTO_PULL=1) and from the frontend's pull route, on a real
ComfyUI: a request names a LoRA by a Civitai AIR that is not local; a loopback stand-in for Civitai (its recorded
response shapes: testing/model_mirror.py), configured as a mirror, serves the tiny SD1.5 LoRA."""

import asyncio
import hashlib
import json
import time
import urllib.error
import urllib.request

import aiohttp
import pytest

from imageinference.interop.compiler import compile_request
from imageinference.server.client import EndpointClient, image_task
from imageinference.server.localrun import TINY_CATALOG, TINY_MODEL, endpoint_server
from imageinference.testing.model_mirror import Mirror, MirrorServer, Served, storage_key

KEY = "pull-key-" + "0123456789abcdef" * 2
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def lora_bytes(tiny_models_root):
    return (tiny_models_root / "loras" / "tiny_sd15_lora.safetensors").read_bytes()


@pytest.fixture(scope="module")
def civitai():
    state = Mirror()
    with MirrorServer(state) as api, MirrorServer(state) as storage:
        state.storage_base = storage.url
        yield api, storage


@pytest.fixture(scope="module")
def srv(tiny_models_root, tmp_path_factory, civitai):
    api, storage = civitai
    base = tmp_path_factory.mktemp("autopull")
    catalog = base / "catalog.json"
    catalog.write_text(json.dumps({"version": 1, "models": TINY_CATALOG}))
    env = {"IMAGEINFERENCE_AUTO_PULL": "1", "IMAGEINFERENCE_API_KEY": KEY, "IMAGEINFERENCE_CIVITAI_URL": api.url,
           "IMAGEINFERENCE_MODEL_HOSTS": storage.host, "IMAGEINFERENCE_CATALOG": str(catalog)}
    with endpoint_server(base, tiny_models_root, env) as srv:
        srv.catalog = catalog
        yield srv


@pytest.fixture(scope="module")
def client(srv):
    return EndpointClient(srv.url, api_key=KEY)


def serve_lora(api, version, lora, name, **kwargs):
    return api.add_civitai(version, 9001, Served(lora, name, **kwargs), model_type="LORA")


def lora_task(version, **fields):
    return image_task(TINY_MODEL, lora=[{"model": f"civitai:9001@{version}", "weight": 0.5}], seed=3, **fields)


def test_a_request_fetches_its_missing_lora_first_with_progress_in_get_response(srv, client, civitai, lora_bytes):
    api, _ = civitai
    serve_lora(api, 9002, lora_bytes, "pixel_style_v1.safetensors", throttle_bps=2 * MiB)
    task = lora_task(9002, deliveryMethod="async")
    status, body = client.post([task])
    assert status == 200 and not body.get("errors"), body
    seen, started = [], time.monotonic()
    while time.monotonic() - started < 300:
        _, poll = client.post([{"taskType": "getResponse", "taskUUID": task["taskUUID"]}])
        processing = [i["progress"] for i in poll["data"] if i.get("status") == "processing"]
        if not processing:
            break
        seen.append(processing[0])
        time.sleep(0.1)
    assert [i["status"] for i in poll["data"]] == ["success"] and "errors" not in poll, poll
    # the download is the first half of the result's way: progress rose through it, never backwards
    during = [p for p in seen if 0 < p < 50]
    assert len(set(during)) >= 3, seen
    assert seen == sorted(seen)
    placed = srv.models_dir / "loras" / "pixel_style_v1.safetensors"
    assert hashlib.sha256(placed.read_bytes()).hexdigest() == hashlib.sha256(lora_bytes).hexdigest()
    entry = json.loads(srv.catalog.read_text())["models"]["civitai:9001@9002"]
    assert entry["kind"] == "lora" and entry["architecture"] == "sd-1-5"
    assert entry["files"] == {"model": "loras/pixel_style_v1.safetensors"}
    assert api.mirror.body_bytes(storage_key(9002)) == len(lora_bytes)
    assert "civitai:9001@9002: loras/pixel_style_v1.safetensors verified and in place" in srv.log_tail(400)


def test_comfyuis_progress_bar_shows_the_download_on_the_node(srv, civitai, lora_bytes):
    api, _ = civitai
    serve_lora(api, 9003, lora_bytes, "ink_style.safetensors", throttle_bps=4 * MiB)
    _, prompt = compile_request(lora_task(9003))
    [lora_node] = [n for n, v in prompt.items() if v["class_type"] == "ImageInferenceLoraStack"]

    async def run():
        async with aiohttp.ClientSession() as session, session.ws_connect(f"{srv.url}/ws?clientId=pull-test") as ws:
            prompt_id, errors = srv.submit(prompt, client_id="pull-test")
            assert prompt_id, errors
            events = []
            while True:
                msg = await ws.receive(timeout=300)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                event = json.loads(msg.data)
                events.append(event)
                if event["type"] in ("execution_success", "execution_error"):
                    return event["type"], events

    outcome, events = asyncio.run(run())
    assert outcome == "execution_success"
    bars = [e["data"] for e in events if e["type"] == "progress" and e["data"]["node"] == lora_node]
    assert len(bars) >= 3 and bars[-1]["value"] == bars[-1]["max"] == len(lora_bytes)
    # the pack's download message reaches the prompt's client too (the endpoint counts it into getResponse)
    downloads = [e["data"] for e in events if e["type"] == "imageinference.download"]
    assert downloads and downloads[-1]["air"] == "civitai:9001@9003" and downloads[-1]["node"] == lora_node
    assert downloads[-1]["file"] == "loras/ink_style.safetensors" and downloads[-1]["value"] == len(lora_bytes)


def test_a_failed_download_is_the_tasks_documented_error_and_leaves_nothing(srv, client, civitai, lora_bytes):
    api, _ = civitai
    status, body = client.post([lora_task(9999)])
    [error] = body["errors"]
    assert (error["code"], error["parameter"]) == ("unknownModel", "lora.0.model")
    assert "Civitai has no published model version 9999" in error["message"]
    payload = serve_lora(api, 9004, lora_bytes, "tampered.safetensors")
    payload["files"][-1]["hashes"]["SHA256"] = "0" * 64
    status, body = client.post([lora_task(9004)])
    [error] = body["errors"]
    assert (error["code"], error["parameter"]) == ("modelHashMismatch", "lora.0.model")
    loras = srv.models_dir / "loras"
    assert not [p.name for p in loras.iterdir() if "tampered" in p.name and not p.name.endswith("-lock")]
    assert "civitai:9001@9004" not in json.loads(srv.catalog.read_text())["models"]


def route(srv, method, query="", body=None, key=KEY):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(f"{srv.url}/imageinference/models/pull{query}", method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_the_pull_route_needs_the_key_and_pulls_once_beside_a_request_for_the_same_air(srv, client, civitai,
                                                                                        lora_bytes):
    api, _ = civitai
    assert route(srv, "POST", body={"air": "civitai:9001@9005"}, key=None)[1]["errors"][0]["code"] == \
        "missingApiKey"
    assert route(srv, "POST", body={"air": "civitai:9001@9005"}, key="wrong")[0] == 401
    status, body = route(srv, "POST", body={"air": "not an air"})
    assert status == 400 and body["errors"][0]["code"] == "invalidAir"
    serve_lora(api, 9005, lora_bytes, "watercolor.safetensors", throttle_bps=2 * MiB)
    status, body = route(srv, "POST", body={"air": "civitai:9001@9005"})
    assert status == 202 and body["status"] == "running"
    time.sleep(0.5)  # the route's pull is under way when a request for the same AIR arrives
    task = lora_task(9005)
    status, answer = client.post([task])
    assert status == 200 and [i["taskUUID"] for i in answer["data"]] == [task["taskUUID"]], answer
    for _ in range(300):
        status, state = route(srv, "GET", "?air=civitai:9001@9005")
        if state["status"] != "running":
            break
        time.sleep(0.2)
    assert state["status"] == "done" and state["error"] is None, state
    assert state["done"] == state["total"] == len(lora_bytes)
    assert api.mirror.body_bytes(storage_key(9005)) == len(lora_bytes)  # one download for the two
    assert (srv.models_dir / "loras" / "watercolor.safetensors").read_bytes() == lora_bytes
