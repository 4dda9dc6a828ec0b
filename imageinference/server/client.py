"""A small client of the endpoint (REST over urllib, WebSocket over aiohttp), for scripts, tests and the benchmark.

Programs written for the hosted API can use the official SDKs instead (see the README); this client exists to
speak the wire protocol plainly, including what SDKs never send (malformed bodies, reused taskUUIDs, …).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import aiohttp

from .config import BASE_PATH

Json = dict[str, Any]


def new_uuid() -> str:
    return str(uuid.uuid4())


def image_task(model: str, **fields: Any) -> Json:
    task: Json = {"taskType": "imageInference", "taskUUID": new_uuid(), "model": model,
                  "positivePrompt": "a lighthouse at dusk", "width": 128, "height": 128, "steps": 1}
    task.update(fields)
    return task


class EndpointClient:
    def __init__(self, server_url: str, api_key: str | None = None, timeout_s: float = 600.0):
        self.server_url = server_url.rstrip("/")
        self.url = self.server_url + BASE_PATH
        self.ws_url = "ws" + self.url[len("http"):]
        self.api_key = api_key
        self.timeout_s = timeout_s

    def headers(self) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def post_raw(self, body: bytes, headers: dict[str, str] | None = None,
                 timeout_s: float | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers=self.headers() if headers is None else headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode("utf-8", "replace")

    def post(self, tasks: Any, headers: dict[str, str] | None = None,
             timeout_s: float | None = None) -> tuple[int, Any]:
        return self.post_raw(json.dumps(tasks).encode(), headers, timeout_s)

    def get(self, url: str, timeout_s: float = 30.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_for(self, task_uuid: str, expected: int = 1, timeout_s: float = 600.0,
                 delay_s: float = 0.2) -> Json:
        """Poll getResponse until the task has `expected` terminal items (successes and errors)."""
        deadline = time.monotonic() + timeout_s
        body: Any = None
        while time.monotonic() < deadline:
            _status, body = self.post([{"taskType": "getResponse", "taskUUID": task_uuid}])
            done = [i for i in body.get("data", []) if i.get("status") == "success"] + body.get("errors", [])
            if len(done) >= expected and not any(i.get("status") == "processing" for i in body.get("data", [])):
                return dict(body)
            time.sleep(delay_s)
        raise TimeoutError(f"task {task_uuid} not finished within {timeout_s:.0f} s: {body}")


class WsClient:
    """One WebSocket to the endpoint; frames are JSON objects."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session, self.ws = session, ws

    @classmethod
    async def connect(cls, client: EndpointClient, headers: dict[str, str] | None = None) -> WsClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(client.ws_url, headers=headers or {}, max_msg_size=0, autoping=True)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def send(self, tasks: Any) -> None:
        await self.ws.send_str(json.dumps(tasks))

    async def recv(self, timeout_s: float = 60.0) -> Json:
        msg = await self.ws.receive(timeout=timeout_s)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"the socket gave {msg.type.name} ({msg.data!r}, {msg.extra!r})")
        frame = json.loads(msg.data)
        if not isinstance(frame, dict):
            raise ValueError(f"a frame is a JSON object, got {frame!r}")
        return frame

    async def authenticate(self, api_key: str = "local", session_uuid: str | None = None) -> Json:
        task: Json = {"taskType": "authentication", "apiKey": api_key}
        if session_uuid:
            task["connectionSessionUUID"] = session_uuid
        await self.send([task])
        return await self.recv()

    async def collect(self, task_uuid: str, count: int, timeout_s: float = 600.0) -> list[Json]:
        """Frames until `count` items or errors of `task_uuid` arrived (other frames are dropped)."""
        items: list[Json] = []
        deadline = time.monotonic() + timeout_s
        while len(items) < count:
            frame = await self.recv(max(0.1, deadline - time.monotonic()))
            items += [i for i in frame.get("data", []) + frame.get("errors", []) if i.get("taskUUID") == task_uuid]
        return items

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()


def run(coro: Any) -> Any:
    """asyncio.run for callers without a loop (tests, scripts)."""
    return asyncio.run(coro)
