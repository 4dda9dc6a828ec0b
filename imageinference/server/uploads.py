"""`imageUpload`: store an image and answer its `imageUUID`, usable as any image input of later tasks. Pure.

The image string is read like any image input (data URI, base64, http(s) URL through the SSRF-safe fetcher, or
the UUID of an image already stored), checked to be a PNG, JPG or WEBP within the size limits, and stored as it
came (no re-encoding) under a new UUID. Blocking (file and network I/O): callers run it off the event loop.
"""

from __future__ import annotations

import uuid
from typing import Any

from ..contract.errors import ApiError, ContractError
from ..contract.images import sniff_format
from ..engines.imageio.decode import image_bytes, open_image
from ..engines.imageio.limits import Limits
from ..engines.imageio.store import EXTENSIONS, ImageStore
from .config import IMAGE_PATH
from .protocol import echo, identity, task_error


def image_url(base_url: str, filename: str) -> str:
    """Where this server serves a stored image (honouring its ttl)."""
    return f"{base_url.rstrip('/')}{IMAGE_PATH}/{filename}"


def upload_image(raw: dict[str, Any], store: ImageStore, base_url: str,
                 limits: Limits) -> tuple[dict[str, Any] | None, list[ApiError]]:
    value = raw.get("image")
    if value is None:
        return None, [task_error(raw, "missingImage", "'image' is required", "image", "string")]
    if not isinstance(value, str):
        return None, [task_error(raw, "invalidImage", "'image' must be a string (data URI, base64, URL or the "
                                 "UUID of a stored image)", "image", "string")]
    try:
        data = image_bytes(value, "image", store, limits)
        open_image(data, "image", limits).close()
    except ContractError as exc:
        _task_type, task_uuid = identity(raw)
        return None, [ApiError(e.code, e.message, e.parameter, e.type, e.allowed_values, task_uuid, "imageUpload")
                      for e in exc.errors]
    fmt = sniff_format(data[:16])
    if fmt is None:  # open_image accepted it, so this is a format sniff_format does not know
        return None, [task_error(raw, "invalidImage", "only PNG, JPG and WEBP images can be uploaded", "image",
                                 "string")]
    image_uuid = str(uuid.uuid4())
    path = store.save(image_uuid, fmt, data)
    return echo(raw, imageUUID=image_uuid, imageURL=image_url(base_url, path.name)), []


def stored_filename(name: str) -> tuple[str, str] | None:
    """(uuid, extension) of a `<uuid>.<ext>` file name the image route may serve, else None."""
    stem, dot, ext = name.partition(".")
    if not dot or ext not in EXTENSIONS.values() or len(stem) != 36:
        return None
    return stem, ext
