"""Reach a URL someone else gave us without becoming a proxy into the local network: one parser, one address
rule and one deadline for image fetches and for the endpoint's webhook and upload targets.

- `parse_url`: the only reading of an untrusted URL (http or https, a host, a valid port, no spaces, at most
  MAX_URL characters).
- `is_public_address` / `check_address`: only globally routable addresses, unless the user allows private ones
  (IMAGEINFERENCE_ALLOW_PRIVATE_URLS, read by `limits.allow_private_urls` and nowhere else). Private, loopback,
  link-local, shared (100.64.0.0/10), reserved, multicast and documentation ranges are refused, and so are IPv6
  forms that carry an IPv4 address inside (mapped, translated, IPv4-compatible, 6to4, Teredo, the well-known
  NAT64 prefix) unless that address is global too; the local-use NAT64 prefix 64:ff9b:1::/48 is never global.
- `resolve`: every DNS answer is checked, and the lookup itself runs under the caller's deadline (a resolver that
  never answers cannot hold the caller past it). The connection then goes to the checked address, so a DNS answer
  cannot change between the check and the request.

Image fetches follow redirects by hand (each hop checked again), read the body only up to the size limit, and the
whole fetch (every lookup, hop, header and body byte) has one deadline: a server that drips bytes slowly cannot
hold the worker.
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
from dataclasses import dataclass
from typing import Any

from .limits import Limits


class FetchError(ValueError):
    pass


class RefusedAddress(FetchError):
    """The target resolves to an address that may not be reached (it stays refused, so nothing retries it)."""


MAX_URL = 8192
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local use, never globally routable
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d, still routed to a.b.c.d by some stacks
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT ::ffff:0:a.b.c.d
MAX_LOOKUPS = 16
"""DNS lookups in flight at once; a lookup that outlives its deadline keeps its thread until the resolver gives
up, so the number of such threads is bounded."""


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def parse_url(url: Any) -> Target:
    """The one reading of an untrusted http(s) URL; FetchError saying what is wrong with it."""
    if not isinstance(url, str):
        raise FetchError("must be a string URL")
    if len(url) > MAX_URL:
        raise FetchError(f"must be at most {MAX_URL} characters")
    if any(c.isspace() for c in url):
        raise FetchError(f"must not contain spaces ({url[:80]!r})")
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        raise FetchError(f"is not a valid URL ({url[:80]!r})") from None
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise FetchError(f"must be an http(s) URL with a host, not {url[:80]!r}")
    path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
    return Target(parsed.scheme, parsed.hostname, port or (443 if parsed.scheme == "https" else 80), path)


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address routes to: mapped, translated, IPv4-compatible, 6to4, Teredo (server and
    client) and well-known NAT64 forms."""
    found: list[ipaddress.IPv4Address] = []
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr in IPV4_TRANSLATED or addr in NAT64:
        found.append(low32)
    if addr in IPV4_COMPATIBLE and int(addr) > 1:  # :: and ::1 are themselves (unspecified, loopback)
        found.append(low32)
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)
    return found


def is_public_address(ip: str) -> bool:
    """True only for a globally routable address (and, for IPv6, one whose embedded IPv4 is global too)."""
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        if addr in NAT64_LOCAL:
            return False
        embedded = _embedded_ipv4(addr)
        if embedded:
            return all(a.is_global and not a.is_multicast for a in embedded)
    return addr.is_global and not addr.is_multicast


def check_address(ip: str, allow_private: bool) -> None:
    if not allow_private and not is_public_address(ip):
        raise RefusedAddress(f"refusing to connect to {ip}: only globally routable addresses are allowed (private, "
                         "loopback, link-local and shared ranges are not; set IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1 "
                         "to allow them)")


class Deadline:
    """One time limit for a whole operation, lookups included."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise FetchError(f"took longer than {self.seconds:g} s")
        return left


_lookups = threading.BoundedSemaphore(MAX_LOOKUPS)


def _getaddrinfo(host: str, port: int, deadline: Deadline) -> list[Any]:
    """socket.getaddrinfo, given up at the deadline (the blocking call goes on in its own daemon thread)."""
    if not _lookups.acquire(timeout=deadline.remaining()):
        raise FetchError(f"cannot resolve {host}: {MAX_LOOKUPS} lookups are already waiting for their resolver")
    box: dict[str, Any] = {}
    done = threading.Event()

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc
        finally:
            done.set()
            _lookups.release()

    threading.Thread(target=lookup, name="imageinference-dns", daemon=True).start()
    if not done.wait(max(0.0, deadline.end - time.monotonic())):
        raise FetchError(f"resolving {host} took longer than {deadline.seconds:g} s")
    if "error" in box:
        raise FetchError(f"cannot resolve {host}: {box['error']}")
    return list(box["infos"])


def resolve(host: str, port: int, allow_private: bool, deadline: Deadline) -> str:
    """The address to connect to: every DNS answer checked, the lookup within the deadline."""
    try:
        literal = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [str(literal)]
    else:
        addresses = sorted({str(info[4][0]) for info in _getaddrinfo(host, port, deadline)})
    if not addresses:
        raise FetchError(f"cannot resolve {host}")
    for ip in addresses:
        check_address(ip, allow_private)  # every answer, so no record can point inside
    return addresses[0]


class _SocketDeadline(Deadline):
    """A deadline that also closes the connection in flight when the time is up, whatever phase it is in."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

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
    def __init__(self, host: str, ip: str, port: int, timeout: float, deadline: _SocketDeadline):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = self._deadline.watch(socket.create_connection((self._ip, self.port), self.timeout))


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float, deadline: _SocketDeadline):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        sock = self._deadline.watch(socket.create_connection((self._ip, self.port), self.timeout))
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_bytes(url: str, limits: Limits | None = None) -> bytes:
    limits = limits or Limits.from_env()
    deadline = _SocketDeadline(limits.fetch_deadline_s)
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


def _fetch(url: str, limits: Limits, deadline: _SocketDeadline) -> bytes:
    for _hop in range(limits.max_redirects + 1):
        try:
            target = parse_url(url)
            ip = resolve(target.host, target.port, limits.allow_private_urls, deadline)
        except FetchError as exc:
            raise FetchError(f"cannot fetch {url[:200]}: {exc}") from None
        cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        conn = cls(target.host, ip, target.port, min(limits.fetch_timeout_s, deadline.remaining()), deadline)
        try:
            conn.request("GET", target.path, headers={"User-Agent": "imageinference-nodes", "Accept": "image/*"})
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
