"""The frontend routes convert in a worker thread: a slow conversion never stalls ComfyUI's event loop."""

import asyncio
import threading
import time

import aiohttp
from aiohttp import web

from imageinference.server import frontend_routes
from imageinference.server.config import EndpointConfig


def test_a_slow_export_leaves_the_event_loop_free(monkeypatch):
    loop_thread = []

    def slow_export(prompt):
        loop_thread.append(threading.current_thread() is threading.main_thread())
        time.sleep(1.0)  # a big graph's conversion, blocking whatever thread runs it
        return {"request": {}, "notExportable": []}

    monkeypatch.setattr(frontend_routes, "export_graph", slow_export)

    async def scenario():
        routes = web.RouteTableDef()
        frontend_routes.register(routes, EndpointConfig.from_env({}))

        @routes.get("/ping")
        async def ping(_request):
            return web.json_response({"pong": True})

        app = web.Application()
        app.add_routes(routes)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        try:
            async with aiohttp.ClientSession() as http:
                export = asyncio.create_task(http.post(url + frontend_routes.EXPORT_PATH, json={"prompt": {"1": {}}}))
                await asyncio.sleep(0.2)
                started = time.perf_counter()
                async with http.get(url + "/ping") as answer:
                    assert (await answer.json()) == {"pong": True}
                pinged = time.perf_counter() - started
                response = await export
                assert response.status == 200
                return pinged
        finally:
            await runner.cleanup()

    pinged = asyncio.run(scenario())
    assert loop_thread == [False]  # the conversion ran off the event loop's thread
    assert pinged < 0.5  # answered while the export was still converting
