"""Who may use the endpoint: the configured API key, or loopback clients when no key is configured. Pure."""

from __future__ import annotations

import hmac
import ipaddress
import urllib.parse
from typing import Any

from ..contract.errors import ApiError
from .protocol import identity

GET_A_KEY = "set the key the server was started with (IMAGEINFERENCE_API_KEY)"


def bearer(header: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def key_matches(configured: str | None, given: Any) -> bool:
    """With no key configured every key matches (the endpoint is then loopback-only)."""
    if configured is None:
        return True
    return isinstance(given, str) and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                         configured.encode("utf-8"))


def is_loopback(peer: str | None) -> bool:
    if not peer:
        return False
    try:
        addr = ipaddress.ip_address(peer.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def host_of(value: str, scheme: bool = False) -> str | None:
    """The host name of a Host header (`name[:port]`, `[v6][:port]`) or, with `scheme`, of an Origin URL."""
    try:
        parsed = urllib.parse.urlsplit(value.strip() if scheme else "//" + value.strip())
        parsed.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        return None
    if scheme and parsed.scheme not in ("http", "https"):
        return None  # "null" (sandboxed pages, file://) and anything else: no loopback origin
    return parsed.hostname


def is_loopback_name(host: str | None) -> bool:
    """A name that means this machine whatever DNS says: a loopback address literal, `localhost` or a
    `*.localhost` name (RFC 6761). Not any name that happens to resolve to 127.0.0.1: that is what DNS
    rebinding makes of an attacker's name."""
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return is_loopback(host)


def auth_error(raw: Any, given: Any) -> ApiError:
    """The documented authentication error for a task (or the request) carrying `given` as its key."""
    _task_type, task_uuid = identity(raw)
    if given is None or given == "":
        return ApiError("missingApiKey", f"an API key is required: send 'Authorization: Bearer <key>' or an "
                        f"authentication task first ({GET_A_KEY})", "apiKey", "string", None, task_uuid,
                        "authentication")
    return ApiError("invalidApiKey", f"Invalid API key ({GET_A_KEY})", "apiKey", "string", None, task_uuid,
                    "authentication")


def check_authentication_task(raw: dict[str, Any], configured: str | None) -> ApiError | None:
    key = raw.get("apiKey")
    if configured is None:
        return None
    if not key_matches(configured, key):
        return auth_error(raw, key)
    return None
