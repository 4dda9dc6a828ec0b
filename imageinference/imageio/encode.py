"""Encode images as JPG / PNG / WEBP with the canonical request embedded, so a file can be re-run.

PNG: a text chunk `imageinference`. JPG and WEBP: EXIF UserComment (tag 0x9286) holding the same JSON.
"""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

METADATA_KEY = "imageinference"
USER_COMMENT = 0x9286
_ASCII = b"ASCII\x00\x00\x00"
PIL_NAMES = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


def encode_image(img: Image.Image, fmt: str, quality: int = 95, metadata: dict[str, Any] | None = None) -> bytes:
    buf = io.BytesIO()
    text = json.dumps(metadata, separators=(",", ":"), ensure_ascii=True) if metadata is not None else None
    if fmt == "PNG":
        info = PngInfo()
        if text is not None:
            info.add_text(METADATA_KEY, text)
        img.save(buf, "PNG", pnginfo=info, compress_level=4)
        return buf.getvalue()
    if fmt == "JPG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")  # JPG has no alpha
    exif = Image.Exif()
    if text is not None:
        exif[USER_COMMENT] = _ASCII + text.encode("ascii")
    img.save(buf, PIL_NAMES[fmt], quality=quality, exif=exif.tobytes())
    return buf.getvalue()


def read_metadata(data: bytes) -> dict[str, Any] | None:
    """The request embedded by `encode_image`, or None."""
    img = Image.open(io.BytesIO(data))
    raw: Any = img.info.get(METADATA_KEY) if img.format == "PNG" else img.getexif().get(USER_COMMENT)
    if isinstance(raw, bytes):
        raw = raw[len(_ASCII):] if raw.startswith(_ASCII) else raw
        raw = raw.decode("ascii", errors="replace")
    if not raw:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None
