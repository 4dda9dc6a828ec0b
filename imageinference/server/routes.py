"""The aiohttp handlers of the endpoint: REST (POST), WebSocket (GET upgrade) and stored images. Pure (aiohttp,
no ComfyUI): `install.py` adds them to ComfyUI's PromptServer, the tests can mount them on any aiohttp app.

Bounded everywhere: the body is read up to IMAGEINFERENCE_MAX_BODY_BYTES within IMAGEINFERENCE_BODY_TIMEOUT, a
request holds at most IMAGEINFERENCE_MAX_TASKS_PER_REQUEST tasks, a sync REST request waits at most
IMAGEINFERENCE_SYNC_TIMEOUT, an idle WebSocket is closed after IMAGEINFERENCE_WS_IDLE_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from ..engines.imageio.store import ImageStore
from .auth import bearer, is_loopback, key_matches
from .config import EndpointConfig
from .protocol import EnvelopeError, echo, envelope, http_status, parse_body, request_error, ws_frames
from .service import Caller, TaskService
from .sessions import SessionRegistry
from .uploads import stored_filename

log = logging.getLogger("imageinference.server")
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _reply(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _refusal(exc: EnvelopeError) -> web.Response:
    return _reply({"errors": [exc.error.to_json()]}, exc.status)


def loopback_refusal() -> EnvelopeError:
    return EnvelopeError(403, request_error(
        "loopbackOnly", "no API key is configured, so this endpoint answers loopback clients only; start ComfyUI "
        "with IMAGEINFERENCE_API_KEY set to accept remote clients"))


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused (413) past `limit` bytes and (408) when it does not arrive within `timeout_s`."""
    if request.content_length is not None and request.content_length > limit:
        raise EnvelopeError(413, request_error("payloadTooLarge", f"the body is {request.content_length} bytes; "
                                               f"the limit is {limit} (IMAGEINFERENCE_MAX_BODY_BYTES)"))
    chunks: list[bytes] = []
    size = 0

    async def _read() -> None:
        nonlocal size
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                raise EnvelopeError(413, request_error("payloadTooLarge", f"the body is over the {limit}-byte "
                                                       "limit (IMAGEINFERENCE_MAX_BODY_BYTES)"))
            chunks.append(chunk)

    try:
        await asyncio.wait_for(_read(), timeout_s)
    except asyncio.TimeoutError:
        raise EnvelopeError(408, request_error("requestTimeout",
                                               f"the body did not arrive within {timeout_s:g} s "
                                               "(IMAGEINFERENCE_BODY_TIMEOUT)")) from None
    return b"".join(chunks)


class WsSink:
    """One WebSocket as a session's sink: serialised sends, False once the socket is gone."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws.closed:
            return False
        try:
            async with self._lock:
                await self.ws.send_str(json.dumps(frame, ensure_ascii=False))
            return True
        except (ConnectionError, RuntimeError):
            return False


class Endpoint:
    def __init__(self, service: TaskService, sessions: SessionRegistry, config: EndpointConfig, images: ImageStore):
        self.service, self.sessions, self.config, self.images = service, sessions, config, images

    def _tasks(self, body: bytes | str) -> list[Any]:
        tasks = parse_body(body)
        if len(tasks) > self.config.max_tasks_per_request:
            raise EnvelopeError(400, request_error(
                "tooManyTasks", f"{len(tasks)} tasks in one request; the limit is "
                f"{self.config.max_tasks_per_request} (IMAGEINFERENCE_MAX_TASKS_PER_REQUEST)", "", "object[]"))
        return tasks

    def _caller(self, transport: str, request: web.Request) -> Caller:
        """Authenticated by an `Authorization: Bearer` header, or by no key being configured (loopback only)."""
        key = bearer(request.headers.get("Authorization"))
        ok = self.config.api_key is None or (key is not None and key_matches(self.config.api_key, key))
        return Caller(transport, ok, given_key=key)

    # ------------------------------------------------------------------ REST
    async def post(self, request: web.Request) -> web.Response:
        try:
            if self.config.loopback_only and not is_loopback(request.remote):
                raise loopback_refusal()
            tasks = self._tasks(await read_body(request, self.config.max_body_bytes, self.config.body_timeout_s))
        except EnvelopeError as exc:
            return _refusal(exc)
        caller = self._caller("rest", request)
        answer = await self.service.collect(await self.service.handle_batch(tasks, caller))
        return _reply(envelope(answer.data, answer.errors, answer.warnings), http_status(answer.data, answer.errors))

    # ------------------------------------------------------------------ WebSocket
    async def get(self, request: web.Request) -> web.StreamResponse:
        if self.config.loopback_only and not is_loopback(request.remote):
            return _refusal(loopback_refusal())
        ws = web.WebSocketResponse(max_msg_size=self.config.max_body_bytes, autoping=True)
        if not ws.can_prepare(request).ok:
            return _reply({"errors": [request_error(
                "invalidRequest", "POST a JSON array of tasks here, or open a WebSocket on this path").to_json()]},
                400)
        await ws.prepare(request)
        sink = WsSink(ws)
        caller = self._caller("ws", request)

        async def authenticate(raw: dict[str, Any]) -> dict[str, Any] | None:
            wanted = raw.get("connectionSessionUUID")
            session = await self.sessions.attach(sink, wanted if isinstance(wanted, str) else None,
                                                 lambda sid: {"data": [echo(raw, connectionSessionUUID=sid)]})
            caller.session_id = session.id
            return None  # the reply went out first, before any buffered frame

        async def ensure_session() -> str:
            session = await self.sessions.attach(sink)
            caller.session_id = session.id
            return session.id

        caller.authenticate, caller.ensure_session = authenticate, ensure_session
        try:
            await self._serve(ws, sink, caller)
        finally:
            if caller.session_id:
                self.sessions.detach(caller.session_id, sink)
            if not ws.closed:
                await ws.close()
        return ws

    async def _serve(self, ws: web.WebSocketResponse, sink: WsSink, caller: Caller) -> None:
        while not ws.closed:
            try:
                msg = await ws.receive(timeout=self.config.ws_idle_s)
            except asyncio.TimeoutError:
                await ws.close(code=1000, message=b"idle: no message within the idle timeout")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                tasks = self._tasks(msg.data)
            except EnvelopeError as exc:
                await sink.send({"errors": [exc.error.to_json()]})
                continue
            answer = await self.service.collect(await self.service.handle_batch(tasks, caller))
            for frame in ws_frames(answer.data, answer.errors):
                await sink.send(frame)

    # ------------------------------------------------------------------ images
    async def image(self, request: web.Request) -> web.StreamResponse:
        if self.config.loopback_only and not is_loopback(request.remote):
            return _refusal(loopback_refusal())
        named = stored_filename(request.match_info.get("name", ""))
        path = await asyncio.to_thread(self.images.find, named[0]) if named else None
        if named is None or path is None or path.suffix != "." + named[1]:
            return _reply({"errors": [request_error("imageNotFound", "no such image (or its ttl has passed)")
                                      .to_json()]}, 404)
        return web.FileResponse(path, headers={"Content-Type": MIME[named[1]], "Cache-Control": "no-store"})
