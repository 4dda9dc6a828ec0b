"""Encode images as JPG / PNG / WEBP with the canonical request embedded, so a file can be re-run.

PNG: a text chunk `imageinference`. JPG and WEBP: EXIF UserComment (tag 0x9286) holding the same JSON.
The graph that made the image (`prompt`, and the frontend's `workflow`), where known, is written the way core
ComfyUI's SaveImage writes it, so dropping the file on ComfyUI's canvas restores the graph: PNG text chunks named
`prompt` and `workflow`; for WEBP (and JPG) the EXIF strings `prompt:<json>` (tag 0x0110) and `workflow:<json>`
(0x010F, then downwards for further keys).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

METADATA_KEY = "imageinference"
USER_COMMENT = 0x9286
_ASCII = b"ASCII\x00\x00\x00"
PIL_NAMES = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


PROMPT_TAG, FIRST_EXTRA_TAG = 0x0110, 0x010F  # EXIF Model, Make: where core ComfyUI puts the graph


JPG_EXIF_LIMIT = 65_533
"""JPG carries EXIF in one APP1 segment: at most 65,533 bytes (Pillow refuses more)."""


@dataclass
class Encoded:
    data: bytes
    left_out: list[str] = field(default_factory=list)
    """Metadata parts that did not fit the format and were not embedded ("workflow", "prompt", "request")."""


def encode_image(img: Image.Image, fmt: str, quality: int = 95, metadata: dict[str, Any] | None = None,
                 graph: dict[str, Any] | None = None) -> bytes:
    """`graph`: {"prompt": API prompt, plus the frontend's extra_pnginfo such as "workflow"}."""
    return encode_fitted(img, fmt, quality, metadata, graph).data


def encode_fitted(img: Image.Image, fmt: str, quality: int = 95, metadata: dict[str, Any] | None = None,
                  graph: dict[str, Any] | None = None) -> Encoded:
    """encode_image that never fails for the metadata's size: for JPG, whatever does not fit one EXIF block is left
    out whole (graph parts first, the largest first; then the request; the image's seed and UUIDs always stay)
    and named in `left_out`."""
    buf = io.BytesIO()
    graph = {k: v for k, v in (graph or {}).items() if v is not None}
    if fmt == "PNG":
        info = PngInfo()
        if metadata is not None:
            info.add_text(METADATA_KEY, _json(metadata))
        for key, value in graph.items():
            info.add_text(key, json.dumps(value))
        img.save(buf, "PNG", pnginfo=info, compress_level=4)
        return Encoded(buf.getvalue())
    if fmt == "JPG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")  # JPG has no alpha
    left_out: list[str] = []
    exif = _exif(metadata, graph)
    while fmt == "JPG" and len(exif) > JPG_EXIF_LIMIT:
        if graph:
            sizes = {k: len(json.dumps(v)) for k, v in graph.items()}
            key = max(sizes, key=sizes.__getitem__)
            graph = {k: v for k, v in graph.items() if k != key}
        elif metadata is not None and "request" in metadata:
            metadata = {k: v for k, v in metadata.items() if k != "request"}
            key = "request"
        else:
            break  # the seed and UUIDs alone always fit
        left_out.append(key)
        exif = _exif(metadata, graph)
    img.save(buf, PIL_NAMES[fmt], quality=quality, exif=exif)
    return Encoded(buf.getvalue(), left_out)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def _exif(metadata: dict[str, Any] | None, graph: dict[str, Any]) -> bytes:
    exif = Image.Exif()
    if metadata is not None:
        exif[USER_COMMENT] = _ASCII + _json(metadata).encode("ascii")
    if "prompt" in graph:
        exif[PROMPT_TAG] = f"prompt:{json.dumps(graph['prompt'])}"
    for offset, key in enumerate(k for k in graph if k != "prompt"):
        exif[FIRST_EXTRA_TAG - offset] = f"{key}:{json.dumps(graph[key])}"
    return exif.tobytes()


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


def read_graph(data: bytes) -> dict[str, Any]:
    """The graph metadata written by `encode_image` (or core SaveImage): {"prompt": ..., "workflow": ...}."""
    img = Image.open(io.BytesIO(data))
    out: dict[str, Any] = {}
    if img.format == "PNG":
        for key, value in img.info.items():
            if key != METADATA_KEY and isinstance(value, str):
                try:
                    out[str(key)] = json.loads(value)
                except ValueError:
                    continue
        return out
    for tag, value in img.getexif().items():
        if FIRST_EXTRA_TAG - 8 <= tag <= PROMPT_TAG and isinstance(value, str) and ":" in value:
            key, _, body = value.partition(":")
            try:
                out[key] = json.loads(body)
            except ValueError:
                continue
    return out
