"""Outgoing requests: webhook POSTs and `uploadEndpoint` PUTs, retried with backoff, never into the local network.

The target's host is resolved once and every address checked by the image fetcher's rules (`imageio.fetch`:
private, loopback and link-local addresses refused unless IMAGEINFERENCE_ALLOW_PRIVATE_URLS is set); the
connection then goes to that checked address (a pinned resolver), so a DNS answer cannot change in between.
Redirects are not followed. Pure (aiohttp, no ComfyUI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..engines.imageio.fetch import FetchError, resolve
from ..engines.imageio.limits import Limits
from .store import DeliveryRecord, StoreRunner

USER_AGENT = "imageinference-nodes"
MAX_URL = 2048


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def url_problem(value: Any) -> str | None:
    """Why `value` cannot be a webhook or upload URL, or None."""
    if not isinstance(value, str):
        return "must be a string URL"
    if len(value) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    try:
        parsed = urllib.parse.urlsplit(value)
        parsed.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "is not a valid URL"
    if parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in value):
        return "must be an http(s) URL with a host"
    return None


async def check_target(url: str, allow_private: bool) -> tuple[str, str, int]:
    """(host, checked address, port) of a target URL; DeliveryError(permanent) when it may not be reached."""
    problem = url_problem(url)
    if problem:
        raise DeliveryError(f"{url[:80]!r} {problem}", permanent=True)
    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        ip = await asyncio.to_thread(resolve, host, port, Limits(allow_private_urls=allow_private))
    except FetchError as exc:
        raise DeliveryError(str(exc), permanent=True) from exc
    return host, ip, port


class _PinnedResolver(AbstractResolver):
    def __init__(self, host: str, ip: str):
        self.host, self.ip = host, ip

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
                      ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"{host} was not checked")
        fam = socket.AF_INET6 if ":" in self.ip else socket.AF_INET
        return [ResolveResult(hostname=host, host=self.ip, port=port, family=fam, proto=0,
                              flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


async def send_once(method: str, url: str, body: bytes, content_type: str, timeout_s: float,
                    allow_private: bool) -> None:
    """One request; DeliveryError unless the target answers 2xx."""
    host, ip, _port = await check_target(url, allow_private)
    connector = aiohttp.TCPConnector(resolver=_PinnedResolver(host, ip), force_close=True, limit=1)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                s.request(method, url, data=body, allow_redirects=False,
                          headers={"Content-Type": content_type, "User-Agent": USER_AGENT}) as resp:
            await resp.content.read(65536)
            if not 200 <= resp.status < 300:
                raise DeliveryError(f"{method} {url[:200]} answered HTTP {resp.status}")
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
        raise DeliveryError(f"{method} {url[:200]} failed: {type(exc).__name__}: {exc}") from exc


def backoff(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, …): base, 2·base, 4·base, … up to cap."""
    return float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))


async def send_with_retries(method: str, url: str, body: bytes, content_type: str, attempts: int, base_s: float,
                            cap_s: float, timeout_s: float, allow_private: bool,
                            sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> str | None:
    """Try up to `attempts` times; None on success, else the last error."""
    error = "not attempted"
    for attempt in range(1, attempts + 1):
        try:
            await send_once(method, url, body, content_type, timeout_s, allow_private)
            return None
        except DeliveryError as exc:
            error = str(exc)
            if exc.permanent:
                return error
        if attempt < attempts:
            await sleep(backoff(attempt, base_s, cap_s))
    return error


class WebhookWorker:
    """Delivers the store's pending webhook POSTs (one per result), durable across restarts."""

    def __init__(self, runner: StoreRunner, attempts: int, base_s: float, cap_s: float, timeout_s: float,
                 allow_private: bool, concurrency: int = 8, clock: Callable[[], float] = time.time):
        self.runner = runner
        self.attempts, self.base_s, self.cap_s, self.timeout_s = attempts, base_s, cap_s, timeout_s
        self.allow_private = allow_private
        self.clock = clock
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._running: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            due = await self.runner.call(lambda s: s.due_deliveries(self.clock(), 100))
            for delivery in due:
                if delivery.id not in self._running:
                    self._running.add(delivery.id)
                    task = asyncio.create_task(self._deliver(delivery))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=0.5)

    async def _deliver(self, d: DeliveryRecord) -> None:
        try:
            async with self._slots:
                try:
                    await send_once("POST", d.url, json.dumps(d.body).encode(), "application/json",
                                    self.timeout_s, self.allow_private)
                    d.status, d.last_error = "done", ""
                except DeliveryError as exc:
                    d.last_error = str(exc)
                    d.attempts += 1
                    if exc.permanent or d.attempts >= self.attempts:
                        d.status = "failed"
                    else:
                        d.next_at = self.clock() + backoff(d.attempts, self.base_s, self.cap_s)
                if d.status == "done":
                    d.attempts += 1
                await self.runner.call(lambda s: s.update_delivery(d))
        finally:
            self._running.discard(d.id)
            self._wake.set()
