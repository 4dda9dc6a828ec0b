"""Inputs of the size users send: photo-like images (1024 px, JPEG or PNG, as base64 / data URI / file bytes),
full-length prompts and large frontend workflows. The models in the tests are tiny; the inputs are not.

A "photo" here is smooth shapes, gradients and sensor-like noise, so JPEG and PNG compress it as they compress a
camera picture (a 1024x1024 JPEG at quality 90 is a few hundred KB, a PNG a few MB), unlike a flat test card.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def photo(size: int = 1024, seed: int = 0, faces: int = 0) -> Image.Image:
    """A photo-like RGB image; `faces` draws that many light ovals with dark eyes (what a face detector of the
    tests may fire on)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([0.5 + 0.4 * np.sin(6.0 * x + rng.uniform(0, 6)), 0.4 + 0.3 * np.cos(4.0 * y + rng.uniform(0, 6)),
                     0.3 + 0.3 * x * y], axis=-1)
    img = Image.fromarray((base * 255).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(24):
        x0, y0 = rng.integers(0, size, 2)
        r = int(rng.integers(size // 20, size // 5))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    for i in range(faces):
        cx, cy, r = size * (i + 1) // (faces + 1), size // 2, size // (4 * max(faces, 1))
        draw.ellipse((cx - r, cy - int(r * 1.3), cx + r, cy + int(r * 1.3)), fill=(224, 184, 160))
        for ex in (-r // 3, r // 3):
            draw.ellipse((cx + ex - r // 8, cy - r // 3 - r // 10, cx + ex + r // 8, cy - r // 3 + r // 10), fill=(30, 20, 20))
    img = img.filter(ImageFilter.GaussianBlur(size / 400))
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray((np.asarray(img, dtype=np.float32) + noise).clip(0, 255).astype(np.uint8))


def mask(size: int = 1024, seed: int = 0) -> Image.Image:
    """A hand-drawn-looking inpainting mask: white blobs on black, soft edges."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = rng.integers(size // 8, size * 7 // 8, 2)
        r = int(rng.integers(size // 16, size // 6))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=255)
    return img.filter(ImageFilter.GaussianBlur(size / 200))


def encoded(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": quality} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


def as_base64(img: Image.Image, fmt: str = "JPEG") -> str:
    return base64.b64encode(encoded(img, fmt)).decode("ascii")


def as_data_uri(img: Image.Image, fmt: str = "JPEG") -> str:
    return f"data:{MIME[fmt]};base64,{as_base64(img, fmt)}"


def long_prompt(chars: int, seed: int = 0) -> str:
    """A prompt of exactly `chars` characters in the words people write (the API allows up to 3,000)."""
    words = ["a", "cinematic", "photograph", "of", "a", "glasshouse", "rooftop", "supper", "club", "at", "dusk,", "warm", "string", "lights,", "long", "table,", "linen,", "candles,", "city", "skyline,", "soft", "bokeh,", "35mm,", "golden", "hour,", "detailed", "textures,", "reflections,", "guests", "laughing,", "high", "dynamic", "range,", "volumetric", "light,", "film", "grain,", "shallow", "depth", "of", "field"]
    rng = np.random.default_rng(seed)
    out = ""
    while len(out) < chars:
        out += ("" if not out else " ") + words[int(rng.integers(len(words)))]
    return out[:chars].rstrip() + "." * (chars - len(out[:chars].rstrip()))


def large_workflow(target_bytes: int = 2_000_000, seed: int = 0, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A frontend workflow of about `target_bytes` of JSON, in the frontend's format (version 0.4): `base` (a real
    workflow, e.g. one of workflows/*.json) grown with the notes a user's graph gathers, each with a long text."""
    rng = np.random.default_rng(seed)
    workflow: dict[str, Any] = json.loads(json.dumps(base)) if base else {
        "last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [], "config": {},
        "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}
    nodes: list[dict[str, Any]] = workflow["nodes"]
    nid = max([int(n["id"]) for n in nodes] + [0])
    size = len(json.dumps(workflow))
    while size < target_bytes:
        nid += 1
        node = {"id": nid, "type": "Note", "pos": [float(rng.integers(0, 20_000)), float(rng.integers(0, 20_000))],
                "size": [400, 200], "flags": {}, "order": nid, "mode": 0, "inputs": [], "outputs": [],
                "properties": {}, "widgets_values": [long_prompt(int(rng.integers(600, 2_500)), seed=nid)],
                "color": "#432", "bgcolor": "#653"}
        nodes.append(node)
        size += len(json.dumps(node)) + 2
    workflow["last_node_id"] = nid
    return workflow
