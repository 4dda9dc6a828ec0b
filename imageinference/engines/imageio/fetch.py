"""Fetch an image URL without becoming a proxy into the local network.

The host is resolved once and every address must be globally routable (`is_global`: private, loopback,
link-local, shared (100.64.0.0/10), reserved, multicast and documentation ranges are refused, and so are IPv6
forms that carry an IPv4 address inside (mapped, 6to4, Teredo, NAT64) unless that address is global too), unless
the user allows other addresses. The connection goes to that checked address, so a DNS answer cannot change
between the check and the request. Redirects are followed by hand (each hop checked again), the body is read only
up to the size limit, and the whole fetch (every hop, headers and body) has one deadline: a server that drips
bytes slowly cannot hold the worker.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse

from .limits import Limits


class FetchError(ValueError):
    pass


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address routes to: mapped, 6to4, Teredo (server and client) and NAT64 forms."""
    found: list[ipaddress.IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    if addr in NAT64:
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def is_public_address(ip: str) -> bool:
    """True only for a globally routable address (and, for IPv6, one whose embedded IPv4 is global too)."""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded:
            return all(a.is_global and not a.is_multicast for a in embedded)
    return addr.is_global and not addr.is_multicast


def _check_address(ip: str, limits: Limits) -> None:
    if not limits.allow_private_urls and not is_public_address(ip):
        raise FetchError(f"refusing to fetch from {ip}: only globally routable addresses are allowed (private, "
                         "loopback, link-local and shared ranges are not; set IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1 "
                         "to allow them)")


def resolve(host: str, port: int, limits: Limits) -> str:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    for ip in addresses:
        _check_address(ip, limits)  # every answer, so no record can point inside
    return addresses[0]


class _Deadline:
    """Closes the connection in flight when the fetch's time is up, whatever phase it is in."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FetchError(f"the fetch took longer than {self.seconds:g} s")
        return left

    def watch(self, sock: socket.socket) -> socket.socket:
        """The socket of the hop in flight (the response keeps reading from it after the connection object
        lets go of it)."""
        with self._lock:
            self._sock = sock
            if self.expired:
                sock.close()
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float, deadline: _Deadline):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = self._deadline.watch(socket.create_connection((self._ip, self.port), self.timeout))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float, deadline: _Deadline):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        sock = self._deadline.watch(socket.create_connection((self._ip, self.port), self.timeout))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_bytes(url: str, limits: Limits | None = None) -> bytes:
    limits = limits or Limits.from_env()
    deadline = _Deadline(limits.fetch_deadline_s)
    try:
        return _fetch(url, limits, deadline)
    finally:
        deadline.cancel()


def _read_body(resp: http.client.HTTPResponse, url: str, limits: Limits) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = resp.read1(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limits.max_bytes:
            raise FetchError(f"image at {url} is over the {limits.max_bytes}-byte limit")
        chunks.append(chunk)


def _fetch(url: str, limits: Limits, deadline: _Deadline) -> bytes:
    for _hop in range(limits.max_redirects + 1):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FetchError(f"only http(s) URLs can be fetched, not {url[:80]!r}")
        try:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchError(f"bad port in {url[:80]!r}") from exc
        ip = resolve(parsed.hostname, port, limits)
        cls = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
        conn = cls(parsed.hostname, ip, port, min(limits.fetch_timeout_s, deadline.remaining()), deadline)
        path = parsed.path or "/"
        if parsed.query:
            path += "?" + parsed.query
        try:
            conn.request("GET", path, headers={"User-Agent": "imageinference-nodes", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(f"redirect without Location from {url}")
                url = urllib.parse.urljoin(url, location)
                continue
            if resp.status != 200:
                raise FetchError(f"GET {url} answered HTTP {resp.status}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > limits.max_bytes:
                raise FetchError(f"image at {url} is {length} bytes, over the {limits.max_bytes}-byte limit")
            body = _read_body(resp, url, limits)
            deadline.remaining()  # a body cut short by the deadline is not an image
            return body
        except (OSError, http.client.HTTPException) as exc:
            if deadline.expired:
                raise FetchError(f"the fetch of {url} took longer than {deadline.seconds:g} s") from exc
            raise FetchError(f"cannot fetch {url}: {exc}") from exc
        finally:
            conn.close()
    raise FetchError(f"too many redirects fetching {url}")
