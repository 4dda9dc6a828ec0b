"""Webhook and upload deliveries over real HTTP to a local receiver: retries, backoff, refused private targets."""

import asyncio
import json

import pytest
from aiohttp import web

from imageinference.server.delivery import (
    WebhookWorker,
    backoff,
    check_target,
    send_once,
    send_with_retries,
    url_problem,
)
from imageinference.server.sqlite_store import SqliteTaskStore
from imageinference.server.store import StoreRunner, TaskRecord

A = "6c5e0e3c-3d1e-4e6b-9f7a-1b2c3d4e5f60"


class Receiver:
    """A local HTTP server that fails the first `fail` requests with 503, then answers 200."""

    def __init__(self, fail=0):
        self.fail = fail
        self.requests = []

    async def handle(self, request):
        self.requests.append((request.method, request.path, request.headers.get("Content-Type"),
                              await request.read()))
        if len(self.requests) <= self.fail:
            return web.Response(status=503)
        if request.path == "/redirect":
            raise web.HTTPFound("http://127.0.0.1:1/elsewhere")
        return web.Response(text="ok")

    async def __aenter__(self):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


@pytest.mark.parametrize("value, ok", [("https://h.example/hook?token=1", True), ("http://h.example:8080/x", True),
                                       ("ftp://h.example/x", False), ("https:///x", False), (5, False),
                                       ("http://h.example:99999/", False), ("http://h .example/", False),
                                       ("https://h.example/" + "a" * 3000, True),
                                       ("https://h.example/" + "a" * 9000, False)])
def test_url_form(value, ok):
    assert (url_problem(value) is None) is ok


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_put_carries_the_raw_bytes_and_a_post_retries_until_2xx():
    async def scenario():
        async with Receiver() as rx:
            await send_once("PUT", rx.url + "/up", b"\x89PNG...", "image/png", 5, allow_private=True)
            assert rx.requests == [("PUT", "/up", "image/png", b"\x89PNG...")]
        async with Receiver(fail=2) as rx:
            sleeps = []

            async def sleep(s):
                sleeps.append(s)

            err = await send_with_retries("POST", rx.url + "/hook", b"{}", "application/json", 5, 0.5, 10, 5,
                                          True, sleep)
            assert err is None and len(rx.requests) == 3 and sleeps == [0.5, 1.0]
        async with Receiver(fail=100) as rx:
            err = await send_with_retries("POST", rx.url + "/hook", b"{}", "application/json", 3, 0.01, 0.01, 5,
                                          True)
            assert "503" in err and len(rx.requests) == 3
        async with Receiver() as rx:  # a redirect is not followed (it could point anywhere)
            err = await send_with_retries("POST", rx.url + "/redirect", b"{}", "application/json", 1, 0.01, 0.01,
                                          5, True)
            assert "302" in err and len(rx.requests) == 1

    asyncio.run(scenario())


def test_private_targets_are_refused_without_a_request_and_without_retries():
    async def scenario():
        async with Receiver() as rx:
            err = await send_with_retries("POST", rx.url + "/hook", b"{}", "application/json", 5, 0.01, 0.01, 5,
                                          allow_private=False)
            assert "globally routable" in err and rx.requests == []
        for url in ("http://10.0.0.1/x", "http://169.254.169.254/latest", "http://[::1]/x", "http://0.0.0.0/"):
            with pytest.raises(Exception) as info:
                await check_target(url, allow_private=False)
            assert getattr(info.value, "permanent", False)

    asyncio.run(scenario())


def test_the_webhook_worker_delivers_durably_with_retries(tmp_path):
    async def scenario():
        store = SqliteTaskStore(tmp_path / "t.sqlite")
        store.create_task(TaskRecord(A, "imageInference", created=1, updated=1))
        runner = StoreRunner(store)
        async with Receiver(fail=1) as rx, Receiver(fail=100) as down:
            bodies = [{"data": [{"taskUUID": A, "imageUUID": str(i)}]} for i in range(3)]
            for body in bodies:
                store.add_delivery(A, rx.url + "/hook", body, 0.0)
            store.add_delivery(A, "ftp://h.example/hook", {"data": []}, 0.0)  # never deliverable: no retries
            store.add_delivery(A, down.url + "/hook", {"errors": [{"code": "x"}]}, 0.0)  # always 503
            worker = WebhookWorker(runner, attempts=3, base_s=0.05, cap_s=0.05, timeout_s=5, allow_private=True)
            task = asyncio.create_task(worker.run())
            for _ in range(100):
                if all(d.status != "pending" for d in store.deliveries(A)):
                    break
                await asyncio.sleep(0.1)
            task.cancel()
            by_url = {d.url: [] for d in store.deliveries(A)}
            for d in store.deliveries(A):
                by_url[d.url].append(d)
            assert [d.status for d in by_url[rx.url + "/hook"]] == ["done"] * 3
            assert sum(d.attempts for d in by_url[rx.url + "/hook"]) == 4  # one 503, then retried
            (ftp,) = by_url["ftp://h.example/hook"]
            assert (ftp.status, ftp.attempts) == ("failed", 1)
            (failed,) = by_url[down.url + "/hook"]
            assert (failed.status, failed.attempts) == ("failed", 3) and "503" in failed.last_error
            received = sorted(json.loads(r[3])["data"][0]["imageUUID"] for r in rx.requests[1:])
            assert received == ["0", "1", "2"] and len(down.requests) == 3
        runner.close()

    asyncio.run(scenario())
