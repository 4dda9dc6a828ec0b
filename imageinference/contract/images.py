"""Form of image strings: a UUID v4, an http(s) URL, a data URI or bare base64 of a PNG, JPG or WEBP.

Only the form is checked here (cheaply: the first bytes of base64 are decoded to recognise the format);
fetching and full decoding happen when a request runs.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

UUID_V4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", re.IGNORECASE)
UUID_ANY = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
DATA_URI = re.compile(r"^data:image/(png|jpeg|jpg|webp);base64,(.*)$", re.IGNORECASE | re.DOTALL)
_B64 = re.compile(r"^[A-Za-z0-9+/\r\n]+={0,2}$")
IMAGE_FORMATS_MESSAGE = (
    "must be a UUID v4 string of an existing image, a data URI string, a base64 encoded image, or a publicly "
    "accessible URL. Supported formats are: PNG, JPG, and WEBP"
)


def sniff_format(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def _base64_head_format(data: str) -> str | None:
    data = data.strip()
    if len(data) < 16 or not _B64.match(data[:4096]):
        return None
    try:
        head = base64.b64decode(data[:16], validate=True)
    except (binascii.Error, ValueError):
        return None
    return sniff_format(head)


def image_string_kind(value: str) -> str | None:
    """'uuid' | 'url' | 'dataURI' | 'base64', or None when the string is none of them."""
    if UUID_V4.match(value):
        return "uuid"
    if value[:5].lower() == "data:":
        m = DATA_URI.match(value)
        return "dataURI" if m and _base64_head_format(m.group(2)) else None
    if value[:8].lower().startswith(("http://", "https://")):
        parsed = urllib.parse.urlparse(value)
        return "url" if parsed.scheme in ("http", "https") and parsed.netloc and " " not in value else None
    return "base64" if _base64_head_format(value) else None


def is_http_url(value: str) -> bool:
    parsed = urllib.parse.urlparse(value)
    return parsed.scheme in ("http", "https") and bool(parsed.netloc) and " " not in value
