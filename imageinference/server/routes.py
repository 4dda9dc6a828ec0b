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
from .auth import bearer, host_of, is_loopback, is_loopback_name, key_matches
from .body import read_body
from .config import EndpointConfig
from .protocol import EnvelopeError, echo, envelope, http_status, parse_body, request_error, ws_frames
from .service import Caller, TaskService
from .sessions import SessionRegistry, frame_text
from .uploads import stored_filename

log = logging.getLogger("imageinference.server")
MIME = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def _reply(body: dict[str, Any], status: int) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _refusal(exc: EnvelopeError) -> web.Response:
    return _reply({"errors": [exc.error.to_json()]}, exc.status)


def loopback_refusal(why: str = "") -> EnvelopeError:
    return EnvelopeError(403, request_error(
        "loopbackOnly", "no API key is configured, so this endpoint answers loopback clients only" + why +
        "; start ComfyUI with IMAGEINFERENCE_API_KEY set to accept remote clients"))


def keyless_refusal(request: web.Request) -> EnvelopeError | None:
    """Without a key: only loopback peers, and only requests that name a loopback host (and, from a browser, come
    from a loopback origin). A web page that rebinds its own name to 127.0.0.1 reaches a loopback peer address,
    but its requests still carry its name in Host (and its Origin): refused here."""
    if not is_loopback(request.remote):
        return loopback_refusal()
    host = request.headers.get("Host")
    if host is not None and not is_loopback_name(host_of(host)):
        return loopback_refusal(f" under a loopback name (127.0.0.1, [::1], localhost), not Host {host[:100]!r}")
    origin = request.headers.get("Origin")
    if origin is not None and not is_loopback_name(host_of(origin, scheme=True)):
        return loopback_refusal(f" from loopback pages, not Origin {origin[:100]!r}")
    return None


class WsSink:
    """One WebSocket as a session's sink: serialised sends, False once the socket is gone."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws
        self._lock = asyncio.Lock()

    async def send(self, text: str) -> bool:
        if self.ws.closed:
            return False
        try:
            async with self._lock:
                await self.ws.send_str(text)
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
            refused = keyless_refusal(request) if self.config.loopback_only else None
            if refused is not None:
                raise refused
            tasks = self._tasks(await read_body(request, self.config.max_body_bytes, self.config.body_timeout_s))
        except EnvelopeError as exc:
            return _refusal(exc)
        caller = self._caller("rest", request)
        answer = await self.service.collect(await self.service.handle_batch(tasks, caller))
        return _reply(envelope(answer.data, answer.errors, answer.warnings), http_status(answer.data, answer.errors))

    # ------------------------------------------------------------------ WebSocket
    async def get(self, request: web.Request) -> web.StreamResponse:
        refused = keyless_refusal(request) if self.config.loopback_only else None
        if refused is not None:
            return _refusal(refused)
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
                await sink.send(frame_text({"errors": [exc.error.to_json()]}))
                continue
            answer = await self.service.collect(await self.service.handle_batch(tasks, caller))
            for frame in ws_frames(answer.data, answer.errors, answer.warnings):
                await sink.send(frame_text(frame))

    # ------------------------------------------------------------------ images
    async def image(self, request: web.Request) -> web.StreamResponse:
        refused = keyless_refusal(request) if self.config.loopback_only else None
        if refused is not None:
            return _refusal(refused)
        named = stored_filename(request.match_info.get("name", ""))
        path = await asyncio.to_thread(self.images.find, named[0]) if named else None
        if named is None or path is None or path.suffix != "." + named[1]:
            return _reply({"errors": [request_error("imageNotFound", "no such image (or its ttl has passed)")
                                      .to_json()]}, 404)
        return web.FileResponse(path, headers={"Content-Type": MIME[named[1]], "Cache-Control": "no-store"})
