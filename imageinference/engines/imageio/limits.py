"""Limits for untrusted image inputs, overridable by environment variables (documented in the README)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

ALLOW_PRIVATE_ENV = "IMAGEINFERENCE_ALLOW_PRIVATE_URLS"


def allow_private_urls(env: Mapping[str, str] | None = None) -> bool:
    """The one reading of IMAGEINFERENCE_ALLOW_PRIVATE_URLS, for image fetches and the endpoint's webhook and
    upload targets alike."""
    value = (os.environ if env is None else env).get(ALLOW_PRIVATE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    fetch_timeout_s: float = 15.0  # one socket operation
    fetch_deadline_s: float = 30.0  # the whole fetch, redirects and body included
    max_redirects: int = 3
    allow_private_urls: bool = False

    @classmethod
    def from_env(cls) -> Limits:
        return cls(
            max_bytes=_env_int("IMAGEINFERENCE_MAX_IMAGE_BYTES", cls.max_bytes),
            max_pixels=_env_int("IMAGEINFERENCE_MAX_IMAGE_PIXELS", cls.max_pixels),
            fetch_timeout_s=float(_env_int("IMAGEINFERENCE_FETCH_TIMEOUT", int(cls.fetch_timeout_s))),
            fetch_deadline_s=float(_env_int("IMAGEINFERENCE_FETCH_DEADLINE", int(cls.fetch_deadline_s))),
            allow_private_urls=allow_private_urls(),
        )
