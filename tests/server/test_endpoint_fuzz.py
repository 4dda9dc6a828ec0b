"""Property-based fuzzing of the endpoint over real HTTP and WebSocket (session server): random bodies, wrong
types, huge numbers, deep nesting. Never a 5xx, never a hung connection, always the documented envelope."""

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageinference.server.client import EndpointClient, WsClient, run
from imageinference.server.localrun import endpoint_server
from imageinference.server.protocol import TASK_TYPES

STATUSES = {200, 400, 401, 403, 404, 408, 413, 429}
UUIDS = st.uuids().map(str)
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
           | st.floats(allow_nan=False) | st.text(max_size=30).filter(lambda s: "http" not in s))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=12), inner, max_size=4), max_leaves=25)
FIELDS = ("model", "positivePrompt", "width", "height", "steps", "numberResults", "seed", "CFGScale", "scheduler",
          "outputType", "outputFormat", "deliveryMethod", "image", "search", "limit", "offset", "apiKey",
          "connectionSessionUUID", "lora", "controlNet", "inputs", "seedImage", "ttl", "webhookURL")
TASKS = st.fixed_dictionaries(
    {"taskType": st.sampled_from(TASK_TYPES) | st.text(max_size=10) | VALUES, "taskUUID": UUIDS | VALUES},
    optional={f: VALUES for f in FIELDS})
BODIES = (st.lists(TASKS, min_size=0, max_size=6).map(json.dumps)
          | VALUES.map(json.dumps)
          | st.integers(min_value=1, max_value=200_000).map(lambda n: "[" * n + "]" * n)
          | st.integers(min_value=1, max_value=5000).map(lambda n: '[{"taskType": "ping", "x": ' + "9" * n + "}]")
          | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))


def check_envelope(body):
    assert isinstance(body, dict) and ("data" in body or "errors" in body), body
    for item in body.get("data", []):
        assert isinstance(item, dict) and isinstance(item.get("taskType"), str)
    for err in body.get("errors", []):
        assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str)
        assert "taskType" in err and "documentation" in err


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(BODIES)
def test_http_fuzz_never_a_5xx_nor_a_hang(server, body):
    client = EndpointClient(server.url)
    status, answer = client.post_raw(body.encode("utf-8", "surrogatepass"), timeout_s=60)  # a hang fails here
    assert status in STATUSES, (status, answer)
    check_envelope(answer)


BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def short_body_timeout(tiny_models_root, tmp_path_factory):
    """A ComfyUI whose endpoint waits IMAGEINFERENCE_BODY_TIMEOUT (2 s) for a request body."""
    with endpoint_server(tmp_path_factory.mktemp("body-timeout"), tiny_models_root,
                         {"IMAGEINFERENCE_BODY_TIMEOUT": str(BODY_TIMEOUT_S)}) as srv:
        yield srv


def read_answer(sock):
    """(status, JSON body) of one HTTP/1.1 answer read from the socket; (None, None) if closed without one."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        if not chunk:
            assert not raw, raw
            return None, None
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of the answer"
        body += chunk
    return int(lines[0].split(" ", 2)[1]), json.loads(body)


def test_a_client_that_never_finishes_its_body_is_cut_off(short_body_timeout):
    """A declared body that does not arrive: the client gets 408 `requestTimeout` at the body timeout (never a
    hang); other clients are served meanwhile."""
    srv = short_body_timeout
    with socket.create_connection(("127.0.0.1", srv.port), timeout=BODY_TIMEOUT_S + 20) as slow:
        started = time.monotonic()
        slow.sendall(b"POST /imageinference/v1 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n[")
        status, body = EndpointClient(srv.url).post([{"taskType": "ping"}], timeout_s=10)  # others are served
        assert status == 200
        status, body = read_answer(slow)  # a socket timeout (a hang) fails here
        elapsed = time.monotonic() - started
    assert status == 408, body
    (error,) = body["errors"]
    assert error["code"] == "requestTimeout" and "IMAGEINFERENCE_BODY_TIMEOUT" in error["message"]
    assert {"message", "taskType", "documentation"} <= set(error)
    assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 10, elapsed


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(BODIES, min_size=1, max_size=3))
def test_websocket_fuzz_every_message_is_answered(server, messages):
    async def scenario():
        ws = await WsClient.connect(EndpointClient(server.url))
        try:
            for message in messages:
                await ws.ws.send_str(message)
                await ws.ws.send_str('[{"taskType": "ping", "taskUUID": "00000000-0000-4000-8000-000000000000"}]')
                while True:  # every frame is an envelope; the ping's pong comes after the message's answers
                    frame = await ws.recv(60)
                    check_envelope(frame)
                    if any(i.get("taskUUID") == "00000000-0000-4000-8000-000000000000"
                           for i in frame.get("data", [])):
                        break
        finally:
            await ws.close()

    run(scenario())
