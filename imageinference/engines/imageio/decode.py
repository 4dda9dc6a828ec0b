"""Decode an image string (UUID of a stored image, http(s) URL, data URI, bare base64) strictly and within limits.

Only PNG, JPEG and WEBP are opened, the pixel count is checked before any pixel is decoded, and every failure is
the documented error naming the request parameter.
"""

from __future__ import annotations

import base64
import binascii
import io
import struct

from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from ...contract.errors import ContractError, code_for
from ...contract.images import DATA_URI, IMAGE_FORMATS_MESSAGE, image_string_kind
from .fetch import FetchError, fetch_bytes
from .limits import Limits
from .store import ImageStore

# Each accepted format opened by its own plugin class: `Image.open` may be replaced by other libraries at run
# time (ultralytics patches it to retry through an optional HEIF plugin), and only these three formats are allowed.
_PLUGINS: tuple[tuple[bytes, type[ImageFile.ImageFile]], ...] = (
    (b"\x89PNG\r\n\x1a\n", PngImagePlugin.PngImageFile),
    (b"\xff\xd8\xff", JpegImagePlugin.JpegImageFile),
    (b"RIFF", WebPImagePlugin.WebPImageFile),
)
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, Image.DecompressionBombError)


def _error(parameter: str, detail: str) -> ContractError:
    return ContractError.single(code_for("invalid", parameter.split(".")[-1]),
                                f"Invalid value for {parameter}: {detail}", parameter, "string")


def image_bytes(value: str, parameter: str, store: ImageStore | None, limits: Limits) -> bytes:
    kind = image_string_kind(value) if isinstance(value, str) else None
    if kind is None:
        raise _error(parameter, IMAGE_FORMATS_MESSAGE)
    if kind == "uuid":
        path = store.find(value) if store else None
        if path is None:
            raise ContractError.single("unknownImage", f"no stored image has UUID {value} ({parameter})",
                                       parameter, "string")
        if path.stat().st_size > limits.max_bytes:
            raise _error(parameter, f"the stored image is over the {limits.max_bytes}-byte limit")
        return path.read_bytes()
    if kind == "url":
        try:
            return fetch_bytes(value, limits)
        except FetchError as exc:
            raise _error(parameter, str(exc)) from exc
    payload = value
    if kind == "dataURI":
        m = DATA_URI.match(value)
        payload = m.group(2) if m else ""
    if len(payload) * 3 // 4 > limits.max_bytes:
        raise _error(parameter, f"the image is over the {limits.max_bytes}-byte limit")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _error(parameter, f"malformed base64 ({exc})") from exc


def open_image(data: bytes, parameter: str, limits: Limits) -> Image.Image:
    plugin = next((cls for magic, cls in _PLUGINS if data.startswith(magic)), None)
    if plugin is None:
        raise _error(parameter, "not a PNG, JPG or WEBP image")
    try:
        img = plugin(io.BytesIO(data))
    except _DECODE_ERRORS as exc:
        raise _error(parameter, f"not a PNG, JPG or WEBP image ({exc})") from exc
    w, h = img.size
    if w * h > limits.max_pixels:
        raise _error(parameter, f"{w}x{h} is over the {limits.max_pixels}-pixel limit")
    try:
        img.load()
    except _DECODE_ERRORS as exc:
        raise _error(parameter, f"the image data is damaged ({exc})") from exc
    return img


def decode_image_string(value: str, parameter: str, store: ImageStore | None = None,
                        limits: Limits | None = None) -> Image.Image:
    limits = limits or Limits.from_env()
    return open_image(image_bytes(value, parameter, store, limits), parameter, limits)
