"""Fetch an image URL without becoming a proxy into the local network.

The host is resolved once, every address is checked (private, loopback, link-local, reserved, multicast and
unspecified ranges are refused unless the user allows them), and the connection goes to that checked address,
so a DNS answer cannot change between the check and the request. Redirects are followed by hand (each hop
checked again), and the body is read only up to the size limit.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.parse

from .limits import Limits


class FetchError(ValueError):
    pass


def _check_address(ip: str, limits: Limits) -> None:
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    bad = (addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved or addr.is_multicast
           or addr.is_unspecified)
    if bad and not limits.allow_private_urls:
        raise FetchError(f"refusing to fetch from {addr}: private, loopback and link-local addresses are not "
                         "allowed (set IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1 to allow them)")


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


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def fetch_bytes(url: str, limits: Limits | None = None) -> bytes:
    limits = limits or Limits.from_env()
    for _hop in range(limits.max_redirects + 1):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise FetchError(f"only http(s) URLs can be fetched, not {url[:80]!r}")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        ip = resolve(parsed.hostname, port, limits)
        cls = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
        conn = cls(parsed.hostname, ip, port, limits.fetch_timeout_s)
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
            body = resp.read(limits.max_bytes + 1)
            if len(body) > limits.max_bytes:
                raise FetchError(f"image at {url} is over the {limits.max_bytes}-byte limit")
            return body
        except (OSError, http.client.HTTPException) as exc:
            raise FetchError(f"cannot fetch {url}: {exc}") from exc
        finally:
            conn.close()
    raise FetchError(f"too many redirects fetching {url}")
