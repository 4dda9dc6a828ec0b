"""Turn finished images into the documented response objects (pure).

Every image is stored as `<imageUUID>.<ext>` in the pack's image store (so its UUID can be sent back as an input)
with the canonical request and its own seed in the file's metadata (inline input images named by the UUID of a
stored copy, metadata.py; what does not fit the format is named in `Delivered.left_out`). `outputType` decides
what the response carries: `imageURL` (served by ComfyUI's /view), `imageDataURI` or `imageBase64Data`. `cost` is
computed locally: IMAGEINFERENCE_COST_PER_IMAGE (USD, default 0) times the images returned.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ...contract.response import IMAGE_FIELD, ImageResult
from .encode import encode_fitted
from .metadata import ImageDetacher
from .store import ImageStore

MIME = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
STORE_SUBFOLDER = "imageinference"


def cost_per_image() -> float:
    try:
        return max(0.0, float(os.environ.get("IMAGEINFERENCE_COST_PER_IMAGE", "0")))
    except ValueError:
        return 0.0


def view_url(base_url: str, filename: str) -> str:
    query = urllib.parse.urlencode({"filename": filename, "subfolder": STORE_SUBFOLDER, "type": "output"})
    return f"{base_url.rstrip('/')}/view?{query}"


@dataclass
class Delivered:
    results: list[ImageResult]
    left_out: list[str] = field(default_factory=list)
    """Metadata parts that did not fit the output format (encode.Encoded.left_out), for a response warning."""


def deliver(images: list[Image.Image], seeds: list[int | None], task_uuid: str, store: ImageStore, base_url: str,
            output_type: str = "URL", output_format: str = "JPG", output_quality: int = 95,
            ttl: int | None = None, include_cost: bool = False,
            request: dict[str, Any] | None = None, watermark: dict[str, Any] | None = None,
            graph: dict[str, Any] | None = None) -> Delivered:
    """`watermark`: the watermark drawn on the images, if any (recorded in the metadata, flagged in the response).

    Inline images in `request` and `graph` are kept once, in the store, and named by UUID in the files
    (metadata.py)."""
    keep_for = ttl if output_type == "URL" else None
    detacher = ImageDetacher(lambda image_uuid, fmt, data: keep_input(store, image_uuid, fmt, data, keep_for))
    request = detacher.value(request) if request is not None else None
    graph = detacher.value(graph) if graph is not None else None
    results, left_out = [], []
    for i, img in enumerate(images):
        image_uuid = str(uuid.uuid4())
        seed = seeds[i] if i < len(seeds) else None
        metadata: dict[str, Any] = {"request": request, "seed": seed, "imageUUID": image_uuid, "taskUUID": task_uuid}
        if watermark is not None:
            metadata["watermark"] = watermark
        encoded = encode_fitted(img, output_format, output_quality, metadata, graph)
        left_out += [part for part in encoded.left_out if part not in left_out]
        path = store.save(image_uuid, output_format, encoded.data, keep_for)
        if output_type == "URL":
            value = view_url(base_url, path.name)
        else:
            encoded_text = base64.b64encode(encoded.data).decode("ascii")
            value = encoded_text if output_type == "base64Data" else f"data:{MIME[output_format]};base64,{encoded_text}"
        fields: dict[str, Any] = {IMAGE_FIELD[output_type]: value}
        if include_cost:
            fields["cost"] = cost_per_image()
        if watermark is not None:
            fields["watermarked"] = True
        results.append(ImageResult(taskUUID=task_uuid, imageUUID=image_uuid, seed=seed, **fields))
    return Delivered(results, left_out)


def keep_input(store: ImageStore, image_uuid: str, fmt: str, data: bytes, ttl: int | None) -> None:
    """A copy of an input image the saved files name by UUID; kept as long as the images that name it."""
    if store.find(image_uuid) is None:
        store.save(image_uuid, fmt, data, ttl)
