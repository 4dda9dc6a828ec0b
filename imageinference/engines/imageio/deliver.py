"""Turn finished images into the documented response objects (pure).

Every image is stored as `<imageUUID>.<ext>` in the pack's image store (so its UUID can be sent back as an input)
with the canonical request and its own seed in the file's metadata. `outputType` decides what the response
carries: `imageURL` (served by ComfyUI's /view), `imageDataURI` or `imageBase64Data`. `cost` is computed
locally: IMAGEINFERENCE_COST_PER_IMAGE (USD, default 0) times the images returned.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
import uuid
from typing import Any

from PIL import Image

from ...contract.response import IMAGE_FIELD, ImageResult
from .encode import encode_image
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


def deliver(images: list[Image.Image], seeds: list[int | None], task_uuid: str, store: ImageStore, base_url: str,
            output_type: str = "URL", output_format: str = "JPG", output_quality: int = 95,
            ttl: int | None = None, include_cost: bool = False,
            request: dict[str, Any] | None = None, watermark: dict[str, Any] | None = None,
            graph: dict[str, Any] | None = None) -> list[ImageResult]:
    """`watermark`: the watermark drawn on the images, if any (recorded in the metadata, flagged in the response)."""
    results = []
    for i, img in enumerate(images):
        image_uuid = str(uuid.uuid4())
        seed = seeds[i] if i < len(seeds) else None
        metadata: dict[str, Any] = {"request": request, "seed": seed, "imageUUID": image_uuid, "taskUUID": task_uuid}
        if watermark is not None:
            metadata["watermark"] = watermark
        data = encode_image(img, output_format, output_quality, metadata, graph)
        path = store.save(image_uuid, output_format, data, ttl if output_type == "URL" else None)
        if output_type == "URL":
            value = view_url(base_url, path.name)
        else:
            encoded = base64.b64encode(data).decode("ascii")
            value = encoded if output_type == "base64Data" else f"data:{MIME[output_format]};base64,{encoded}"
        fields: dict[str, Any] = {IMAGE_FIELD[output_type]: value}
        if include_cost:
            fields["cost"] = cost_per_image()
        if watermark is not None:
            fields["watermarked"] = True
        results.append(ImageResult(taskUUID=task_uuid, imageUUID=image_uuid, seed=seed, **fields))
    return results

