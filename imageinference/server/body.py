"""Reading a request body whole: up to IMAGEINFERENCE_MAX_BODY_BYTES, within IMAGEINFERENCE_BODY_TIMEOUT. Pure
(aiohttp, no ComfyUI).

The one body reader of every route of the pack (the endpoint and the frontend extension's routes): a body that
arrives in many chunks is read to its end, a larger one is refused (413) and a slow one cut off (408), however
slowly its bytes keep coming.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from .protocol import EnvelopeError, request_error


async def read_body(request: web.Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused (413) past `limit` bytes and (408) when it does not arrive within `timeout_s`."""
    if request.content_length is not None and request.content_length > limit:
        raise EnvelopeError(413, request_error("payloadTooLarge", f"the body is {request.content_length} bytes; "
                                               f"the limit is {limit} (IMAGEINFERENCE_MAX_BODY_BYTES)"))
    chunks: list[bytes] = []
    size = 0

    async def _read() -> None:
        nonlocal size
        while True:
            chunk = await request.content.read(65536)
            if not chunk:
                return
            size += len(chunk)
            if size > limit:
                raise EnvelopeError(413, request_error("payloadTooLarge", f"the body is over the {limit}-byte "
                                                       "limit (IMAGEINFERENCE_MAX_BODY_BYTES)"))
            chunks.append(chunk)

    try:
        await asyncio.wait_for(_read(), timeout_s)
    except asyncio.TimeoutError:
        raise EnvelopeError(408, request_error("requestTimeout",
                                               f"the body did not arrive within {timeout_s:g} s "
                                               "(IMAGEINFERENCE_BODY_TIMEOUT)")) from None
    return b"".join(chunks)
