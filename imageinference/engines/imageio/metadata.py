"""What a saved image carries, made to fit: inline images referenced by UUID, and the parts that do not fit named.

A request with an ordinary photo holds that photo's base64 several times over (the Load Image String node's input,
the Output node's `request`, the frontend's workflow), which no EXIF block can hold (JPG's is capped at 64 KB) and
which would make every PNG megabytes larger. So, before an image is encoded, every inline image string (a data URI
or bare base64 of a PNG, JPG or WEBP) in the request and the graph is replaced by the UUID of a stored copy of
that image, the same UUID for the same bytes, so the metadata names each input once and a re-run on this server
finds it (an image UUID is a valid input anywhere the request takes an image). Strings that hold JSON (the Output
node's `request` widget) are walked too. What still does not fit (encode.py decides) is left out whole and named,
so the response can say so instead of failing after sampling.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from ...contract.images import DATA_URI, image_string_kind, sniff_format

INLINE_MIN_CHARS = 1024
"""Inline images shorter than this (a few hundred bytes: a tiny mask) stay inline; they cost less than a lookup."""

Store = Callable[[str, str, bytes], None]
"""store(image_uuid, format, bytes): keep a copy of an inline image under its UUID (a no-op if already kept)."""


def content_uuid(data: bytes) -> str:
    """A UUID v4-shaped name derived from the bytes, so one image is stored (and referenced) once."""
    return str(uuid.UUID(bytes=hashlib.sha256(data).digest()[:16], version=4))


def _inline_bytes(value: str) -> tuple[bytes, str] | None:
    if len(value) < INLINE_MIN_CHARS or image_string_kind(value) not in ("dataURI", "base64"):
        return None
    m = DATA_URI.match(value)
    body = m.group(2) if m else value
    try:
        data = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    fmt = sniff_format(data[:16])
    return (data, fmt) if fmt else None


class ImageDetacher:
    """Replaces inline images by the UUIDs of stored copies; remembers each string so it is decoded once."""

    def __init__(self, store: Store):
        self.store = store
        self.seen: dict[str, str] = {}

    def string(self, value: str) -> str:
        if value in self.seen:
            return self.seen[value]
        replaced = value
        inline = _inline_bytes(value)
        if inline is not None:
            data, fmt = inline
            replaced = content_uuid(data)
            self.store(replaced, fmt, data)
        elif len(value) >= INLINE_MIN_CHARS and value.lstrip()[:1] in ("{", "["):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, (dict, list)):
                replaced = json.dumps(self.value(parsed))
        self.seen[value] = replaced
        return replaced

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value
