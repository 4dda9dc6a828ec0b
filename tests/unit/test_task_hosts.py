"""Without an API key the endpoint answers loopback clients only, and only requests that name a loopback host: a
web page that rebinds its own DNS name to 127.0.0.1 (DNS rebinding) reaches a loopback peer address, but its
requests carry its name in Host (and its page in Origin). Over real HTTP on the endpoint's routes."""

import asyncio

import pytest
from unit_helpers import EndpointApp

from imageinference.server.auth import host_of, is_loopback_name
from imageinference.server.config import EndpointConfig

PING = [{"taskType": "ping"}]


@pytest.mark.parametrize("header, name, loop", [
    ("127.0.0.1:8188", "127.0.0.1", True), ("localhost:8188", "localhost", True), ("LOCALHOST", "localhost", True),
    ("[::1]:8188", "::1", True), ("app.localhost", "app.localhost", True), ("127.1.2.3", "127.1.2.3", True),
    ("rebind.attacker.example:8188", "rebind.attacker.example", False), ("192.168.1.5:8188", "192.168.1.5", False),
    ("localhost.attacker.example", "localhost.attacker.example", False), ("[::1", None, False)])
def test_loopback_names(header, name, loop):
    assert host_of(header) == name and is_loopback_name(host_of(header)) is loop


@pytest.mark.parametrize("origin, loop", [("http://127.0.0.1:8188", True), ("http://localhost:3000", True),
                                          ("https://rebind.attacker.example", False), ("null", False),
                                          ("file://", False), ("http://[::1]:8188", True)])
def test_loopback_origins(origin, loop):
    assert is_loopback_name(host_of(origin, scheme=True)) is loop


def test_keyless_endpoint_refuses_foreign_hosts_and_origins(tmp_path):
    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig()) as app:
            assert await app.post(PING) == (200, {"data": [{"taskType": "ping", "pong": True}]})
            assert (await app.post(PING, {"Host": f"localhost:{app.port}"}))[0] == 200
            assert (await app.post(PING, {"Origin": f"http://127.0.0.1:{app.port}"}))[0] == 200
            for headers in ({"Host": f"rebind.attacker.example:{app.port}"},
                            {"Origin": "https://rebind.attacker.example"}, {"Origin": "null"}):
                status, body = await app.post(PING, headers)
                assert status == 403 and body["errors"][0]["code"] == "loopbackOnly", headers
            status, body = await app.post(PING, {"Host": "rebind.attacker.example"})
            assert "not Host 'rebind.attacker.example'" in body["errors"][0]["message"]
            # the WebSocket and the image route too
            async with app.session.get(app.url, headers={"Host": "rebind.attacker.example", "Upgrade": "websocket",
                                                         "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
                assert resp.status == 403
            image = f"{app.url}/image/6c5e0e3c-3d1e-4e6b-9f7a-1b2c3d4e5f60.png"
            async with app.session.get(image, headers={"Host": "rebind.attacker.example"}) as resp:
                assert resp.status == 403
            async with app.session.get(image) as resp:
                assert resp.status == 404  # answered (no such image) under a loopback name

    asyncio.run(scenario())


def test_with_a_key_any_host_is_answered(tmp_path):
    async def scenario():
        async with EndpointApp(tmp_path, EndpointConfig(api_key="k" * 32)) as app:
            status, body = await app.post(PING, {"Host": "images.example.com", "Origin": "https://app.example.com"})
            assert status == 200 and body["data"][0]["pong"] is True

    asyncio.run(scenario())
