"""The frontend extension's routes (server/frontend_routes.py) read the whole body with the endpoint's own reader,
limit and timeout: a request file that arrives in many chunks is read to its end; too large is 413, too slow 408.
Over real HTTP on a bare aiohttp app (the conversions themselves need ComfyUI: tests/server)."""

import asyncio
import json

from aiohttp import web

from imageinference.server.config import EndpointConfig
from imageinference.server.frontend_routes import COMPILE_PATH, EXPORT_PATH, register


async def serve(config):
    routes = web.RouteTableDef()
    register(routes, config)
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def dripped(port, path, body, chunk=4096, pause=0.01, declared=None):
    """POST `body` in small chunks with pauses, as a large upload arrives; (status, JSON answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared or len(body)}\r\nConnection: close\r\n\r\n").encode()
    writer.write(head)
    try:
        for i in range(0, len(body), chunk):
            writer.write(body[i:i + chunk])
            await writer.drain()
            await asyncio.sleep(pause)
    except ConnectionError:
        pass
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    payload = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 30)
    writer.close()
    await writer.wait_closed()
    return int(lines[0].split(" ", 2)[1]), json.loads(payload)


def test_a_body_in_many_chunks_is_read_to_its_end():
    async def scenario():
        runner, port = await serve(EndpointConfig())
        try:
            # valid JSON only when read whole: 200 KB in 50 chunks; the conversion then refuses it on its merits
            body = json.dumps([{"taskType": "ping", "pad": "x" * 200_000}]).encode()
            status, answer = await dripped(port, COMPILE_PATH, body)
            assert status == 400 and [e["code"] for e in answer["errors"]] == ["invalidTask"], answer
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_the_endpoints_limit_and_timeout_apply():
    async def scenario():
        runner, port = await serve(EndpointConfig(max_body_bytes=50_000, body_timeout_s=0.5))
        try:
            status, answer = await dripped(port, COMPILE_PATH, b"[" + b" " * 60_000 + b"]")
            assert status == 413 and answer["errors"][0]["code"] == "payloadTooLarge"
            assert "IMAGEINFERENCE_MAX_BODY_BYTES" in answer["errors"][0]["message"]
            status, answer = await dripped(port, EXPORT_PATH, b"[" + b" " * 200, chunk=10, pause=0.05,
                                           declared=20_000)
            assert status == 408 and answer["errors"][0]["code"] == "requestTimeout"
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
