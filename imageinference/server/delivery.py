"""Outgoing requests: webhook POSTs and `uploadEndpoint` PUTs, retried with backoff, never into the local network.

A target is read by the image fetcher's one URL parser and address rule (`imageio.fetch`: private, loopback and
link-local addresses refused unless IMAGEINFERENCE_ALLOW_PRIVATE_URLS is set); each attempt has one deadline
(IMAGEINFERENCE_WEBHOOK_TIMEOUT) that covers the DNS lookup, the connection and the answer; the connection goes to
the checked address (a pinned resolver), so a DNS answer cannot change in between. Redirects are not followed.
Pure (aiohttp, no ComfyUI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from ..engines.imageio.fetch import Deadline, FetchError, RefusedAddress, parse_url, resolve
from .store import DeliveryRecord, StoreRunner

USER_AGENT = "imageinference-nodes"


class DeliveryError(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def url_problem(value: Any) -> str | None:
    """Why `value` cannot be a webhook or upload URL, or None."""
    try:
        parse_url(value)
    except FetchError as exc:
        return str(exc)
    return None


async def check_target(url: str, allow_private: bool, deadline: Deadline | None = None) -> tuple[str, str, int]:
    """(host, checked address, port) of a target URL, resolved within the deadline; DeliveryError (permanent when
    the target may never be reached) otherwise."""
    try:
        target = parse_url(url)
    except FetchError as exc:
        raise DeliveryError(f"{str(url)[:80]!r} {exc}", permanent=True) from None
    deadline = deadline or Deadline(15.0)
    try:
        ip = await asyncio.to_thread(resolve, target.host, target.port, allow_private, deadline)
    except FetchError as exc:  # a refused address stays refused; a resolver that failed may recover
        raise DeliveryError(str(exc), permanent=isinstance(exc, RefusedAddress)) from exc
    return target.host, ip, target.port


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
    """One request, lookup included, within `timeout_s`; DeliveryError unless the target answers 2xx."""
    deadline = Deadline(timeout_s)
    host, ip, _port = await check_target(url, allow_private, deadline)
    try:
        remaining = deadline.remaining()
    except FetchError as exc:
        raise DeliveryError(f"{method} {url[:200]} failed: {exc}") from None
    connector = aiohttp.TCPConnector(resolver=_PinnedResolver(host, ip), force_close=True, limit=1)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=remaining)) as s, \
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
