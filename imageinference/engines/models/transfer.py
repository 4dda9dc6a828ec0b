"""HTTP for model downloads: Civitai's API and download endpoint, and any other allowed URL source. Pure.

Every hop (redirects included) must be an allowed host (`Settings.check_url`) and, unless it is a configured
mirror, resolve to globally routable addresses only (the address rule of `imageio/fetch.py`); the connection goes to
the checked address. `CIVITAI_TOKEN` goes, as an `Authorization: Bearer` header, to the Civitai API host only: never
to the storage a download redirects to (a presigned URL carries its own signature) and never into a URL or a log.
A download appends to a `.part` file and resumes with a `Range` request after a dropped connection; it never reads
past the size the source states.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ... import __version__
from ..imageio.fetch import is_public_address
from .sources import Settings, SourceError, redact

Progress = Callable[[int, "int | None"], None]
"""(bytes done, bytes expected or None), called as a download advances."""
USER_AGENT = f"imageinference-nodes/{__version__} (ComfyUI model pull)"  # Civitai's firewall refuses empty agents
MAX_REDIRECTS = 5
MAX_JSON = 8 * 1024 * 1024
CHUNK = 1024 * 1024
RETRIES = 4
NO_SIZE_LIMIT = 64 * 1024**3  # a source that states no size is still bounded


class TransferError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Pinned(http.client.HTTPConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def checked_address(host: str, port: int, mirror: bool, settings: Settings) -> str:
    """The address to connect to. Every DNS answer for a public model host must pass the image fetches' rule
    (`is_public_address`), so an allowed name cannot be pointed inside the network; a configured mirror may be
    anywhere, since the user chose it (as IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1 allows any host)."""
    try:
        addresses = sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except (OSError, UnicodeError) as exc:
        raise TransferError(f"cannot resolve {host}: {exc}") from None
    if not addresses:
        raise TransferError(f"cannot resolve {host}")
    if not mirror and not settings.allow_private:
        for ip in addresses:
            if not is_public_address(ip):
                raise TransferError(f"refusing to fetch from {host} ({ip}): only globally routable addresses are "
                                    "allowed for public model hosts (configure a mirror, or set "
                                    "IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1)")
    return addresses[0]


def open_stream(url: str, settings: Settings, offset: int = 0, accept: str = "*/*"
                ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
    """(connection, response, final URL) of a GET that follows redirects, each hop checked; the caller closes."""
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            mirror = settings.check_url(url)
        except SourceError as exc:
            raise TransferError(str(exc)) from None
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        cls = _PinnedTLS if parts.scheme == "https" else _Pinned
        conn = cls(host, checked_address(host, port, mirror, settings), port, settings.timeout_s)
        headers = {"User-Agent": USER_AGENT, "Accept": accept, "Accept-Encoding": "identity"}
        if settings.civitai_token and settings.is_civitai_api(url):
            headers["Authorization"] = f"Bearer {settings.civitai_token}"
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            conn.request("GET", urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, "")), headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException):
            conn.close()
            raise
        if resp.status in (301, 302, 303, 307, 308):
            location = resp.getheader("Location")
            conn.close()
            if not location:
                raise TransferError(f"redirect without a Location from {redact(url)}")
            url = urllib.parse.urljoin(url, location)
            continue
        return conn, resp, url
    raise TransferError(f"more than {MAX_REDIRECTS} redirects from {redact(url)}")


def _refusal(status: int, url: str, settings: Settings) -> TransferError:
    if status in (401, 403) and settings.is_civitai_api(url):
        hint = ("this model needs a logged-in Civitai account: set CIVITAI_TOKEN to an API key from your Civitai "
                "account settings" if not settings.civitai_token else "Civitai refused CIVITAI_TOKEN for this model")
        return TransferError(f"{redact(url)} answered HTTP {status}: {hint}", status)
    return TransferError(f"{redact(url)} answered HTTP {status}", status)


def get_json(url: str, settings: Settings) -> Any:
    """A JSON document (Civitai's API), at most 8 MiB; TransferError with the HTTP status otherwise."""
    try:
        conn, resp, final = open_stream(url, settings, accept="application/json")
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"cannot reach {redact(url)}: {exc}") from None
    try:
        if resp.status != 200:
            raise _refusal(resp.status, final, settings)
        body = resp.read(MAX_JSON + 1)
        if len(body) > MAX_JSON:
            raise TransferError(f"{redact(url)} answered more than {MAX_JSON} bytes")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise TransferError(f"{redact(url)} did not answer JSON: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise TransferError(f"reading {redact(url)} failed: {exc}") from None
    finally:
        conn.close()


def _body_start(resp: http.client.HTTPResponse, offset: int) -> int:
    """Where the body of a response to a `Range: bytes=<offset>-` request starts in the file."""
    if resp.status == 200:
        return 0
    content_range = resp.getheader("Content-Range") or ""
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        raise TransferError(f"a partial answer without a usable Content-Range ({content_range!r})") from None


def download(url: str, part: Path, settings: Settings, size: int | None, tolerance: int = 0,
             progress: Progress | None = None) -> None:
    """Fetch `url` into `part`, resuming from what `part` already holds; bounded by the stated size."""
    limit = size + tolerance if size else NO_SIZE_LIMIT
    failures = 0
    while True:
        offset = part.stat().st_size if part.exists() else 0
        if offset > limit:
            part.unlink()
            offset = 0
        try:
            outcome = _fetch_once(url, part, offset, limit, size, tolerance, settings, progress)
            if outcome == "done":
                return
            if outcome == "advanced":
                failures = 0  # bytes arrived before the connection ended: resume at once
                continue
            problem = "the connection ended before any byte arrived"
        except (OSError, http.client.HTTPException) as exc:
            problem = str(exc) or type(exc).__name__
        failures += 1
        if failures > RETRIES:
            raise TransferError(f"the download from {redact(url)} keeps failing ({problem}); what arrived is kept "
                                "and the next pull resumes it")
        time.sleep(min(0.25 * 2**failures, 8.0))


def _fetch_once(url: str, part: Path, offset: int, limit: int, size: int | None, tolerance: int,
                settings: Settings, progress: Progress | None) -> str:
    """One GET: "done" when the file is complete, "advanced" or "stalled" when the connection ended early."""
    conn, resp, final = open_stream(url, settings, offset)
    try:
        if resp.status == 416 and offset:
            if size is not None and abs(offset - size) <= tolerance:
                return "done"  # the part already holds the whole file
            part.unlink()
            return "advanced"
        if resp.status not in (200, 206):
            raise _refusal(resp.status, final, settings)
        if (resp.getheader("Content-Type") or "").lower().startswith("text/html"):
            raise TransferError(f"{redact(final)} answered a web page, not a file (a log-in page? models that need "
                                "an account need CIVITAI_TOKEN)", resp.status)
        start = _body_start(resp, offset)  # 0 for a 200: a server that ignores Range sends the whole file
        if resp.status == 206 and start != offset:
            part.unlink(missing_ok=True)
            return "advanced"  # a range we did not ask for: start over
        length = resp.getheader("Content-Length")
        expected = start + int(length) if length and length.isdigit() else None
        if expected is not None and expected > limit:
            part.unlink(missing_ok=True)
            raise TransferError(f"{redact(final)} sends {expected} bytes; the source states {size}")
        done = start
        with open(part, "ab" if start else "wb") as fh:
            while True:
                chunk = resp.read1(CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if done > limit:
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise TransferError(f"{redact(final)} sends more than the {size} bytes the source states")
                fh.write(chunk)
                if progress is not None:
                    progress(done, size or expected)
        if expected is not None and done < expected:
            return "advanced" if done > start else "stalled"
        return "done"
    finally:
        conn.close()
