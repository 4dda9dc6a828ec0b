"""Draw a watermark as a layer and composite it over images (Pillow and numpy; no torch, no ComfyUI).

Layout (scaled to the image, so a mark looks the same at every size; `base` = the image's shorter side):
- text: Pillow's bundled font at `base` x 0.045 px (at least 8), shrunk until the mark fits inside the margins;
  image: scaled so its longer side is `base` x 0.2 px, aspect kept. Both sit in a box with padding around them
  (0.35 x the font size, 0.08 x the image's longer side), filled with `bgColor` when one is given;
- a single mark is placed at `displayPosition` with a margin of `base` x 0.02 px (at least 2) from the edges;
- `tiled`: the mark is repeated over the whole image in a brick grid rotated by -45 degrees in image
  coordinates (y pointing down), so the text runs from bottom-left up to top-right; `displayPosition` does not
  apply;
- `opacity` scales the mark's alpha (its box included); `fontColor` colours the text (default white).
Compositing is "over" in straight alpha: RGB images stay RGB, RGBA images (transparent generations) get the mark
over their own alpha. Pixels where the mark's alpha is 0 are copied, so they are unchanged bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .spec import WatermarkSpec

TEXT_SCALE = 0.045
IMAGE_SCALE = 0.2
MARGIN_SCALE = 0.02
TEXT_PAD = 0.35
IMAGE_PAD = 0.08
TILE_ANGLE = 45  # Pillow turns counter-clockwise on screen: -45 degrees with y pointing down
MIN_FONT = 6


@dataclass(frozen=True)
class MarkLayer:
    """The mark over a width x height image: straight-alpha colour and alpha (opacity applied)."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray  # (H, W) float32 in [0, 1]; 0 where the image is left untouched
    box: tuple[int, int, int, int] | None  # (x0, y0, x1, y1) of a single mark, clipped; None when tiled

    @property
    def covered(self) -> np.ndarray:
        return self.alpha > 0


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _text_tile(text: str, size: int, spec: WatermarkSpec) -> Image.Image:
    font = _font(size)
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    pad = max(1, round(size * TEXT_PAD))
    w, h = right - left + 2 * pad, bottom - top + 2 * pad
    coverage = Image.new("L", (w, h), 0)
    ImageDraw.Draw(coverage).text((pad - left, pad - top), text, fill=255, font=font)
    tile = Image.new("RGBA", (w, h), (*spec.font_rgb, 0))
    tile.putalpha(coverage)
    return _on_background(tile, spec)


def _image_tile(mark: Image.Image, base: int, spec: WatermarkSpec) -> Image.Image:
    mark = mark.convert("RGBA")
    long_side = max(8, round(base * IMAGE_SCALE))
    scale = long_side / max(mark.size)
    size = (max(1, round(mark.width * scale)), max(1, round(mark.height * scale)))
    # resize premultiplied, so transparent pixels do not bleed their colour into the edges
    scaled = mark.convert("RGBa").resize(size, Image.Resampling.LANCZOS).convert("RGBA")
    pad = max(1, round(long_side * IMAGE_PAD))
    tile = Image.new("RGBA", (size[0] + 2 * pad, size[1] + 2 * pad), (0, 0, 0, 0))
    tile.paste(scaled, (pad, pad))
    return _on_background(tile, spec)


def _on_background(tile: Image.Image, spec: WatermarkSpec) -> Image.Image:
    bg = spec.bg_rgb
    if bg is None:
        return tile
    return Image.alpha_composite(Image.new("RGBA", tile.size, (*bg, 255)), tile)


def mark_tile(width: int, height: int, spec: WatermarkSpec, mark: Image.Image | None = None) -> Image.Image:
    """One mark (RGBA, straight alpha, opacity not applied yet) sized for a width x height image."""
    base = min(width, height)
    if spec.image is not None or spec.text is None:
        if mark is None:
            raise ValueError("an image watermark needs the decoded mark image")
        return _image_tile(mark, base, spec)
    size = max(8, round(base * TEXT_SCALE))
    tile = _text_tile(spec.text, size, spec)
    room = max(1, width - 2 * _margin(width, height))
    while tile.width > room and size > MIN_FONT:
        size = max(MIN_FONT, min(size - 1, math.floor(size * room / tile.width)))
        tile = _text_tile(spec.text, size, spec)
    return tile


def _margin(width: int, height: int) -> int:
    return max(2, round(min(width, height) * MARGIN_SCALE))


def position(width: int, height: int, tile_w: int, tile_h: int, where: str) -> tuple[int, int]:
    """Top-left corner of a tile_w x tile_h mark at one of the 9 display positions."""
    m = _margin(width, height)
    vertical, horizontal = where.split("-")
    x = {"left": m, "center": (width - tile_w) // 2, "right": width - tile_w - m}[horizontal]
    y = {"top": m, "center": (height - tile_h) // 2, "bottom": height - tile_h - m}[vertical]
    return x, y


def _tiled(width: int, height: int, tile: Image.Image) -> Image.Image:
    tw, th = tile.size
    side = math.ceil(math.hypot(width, height)) + 2 * max(tw, th)
    step_x, step_y = tw + max(tw // 2, 8), th * 3
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    for row, y in enumerate(range(0, side, step_y)):
        for x in range(-step_x + (step_x // 2) * (row % 2), side, step_x):
            canvas.paste(tile, (x, y))
    turned = canvas.convert("RGBa").rotate(TILE_ANGLE, Image.Resampling.BILINEAR).convert("RGBA")
    left, top = (side - width) // 2, (side - height) // 2
    return turned.crop((left, top, left + width, top + height))


def render_layer(width: int, height: int, spec: WatermarkSpec, mark: Image.Image | None = None) -> MarkLayer:
    tile = mark_tile(width, height, spec, mark)
    box: tuple[int, int, int, int] | None
    if spec.tiled:
        layer = _tiled(width, height, tile)
        box = None
    else:
        layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        x, y = position(width, height, tile.width, tile.height, spec.display_position)
        layer.paste(tile, (x, y))
        box = (max(0, x), max(0, y), min(width, x + tile.width), min(height, y + tile.height))
    arr = np.asarray(layer, dtype=np.float32) / 255.0
    alpha = arr[..., 3] * np.float32(spec.opacity)
    return MarkLayer(np.ascontiguousarray(arr[..., :3]), alpha.astype(np.float32), box)


def composite(pixels: np.ndarray, layer: MarkLayer) -> np.ndarray:
    """The mark over one (H, W, 3|4) float image in [0, 1]; uncovered pixels are copied unchanged."""
    if pixels.shape[:2] != layer.alpha.shape:
        raise ValueError(f"the image is {pixels.shape[1]}x{pixels.shape[0]}, the mark layer "
                         f"{layer.alpha.shape[1]}x{layer.alpha.shape[0]}")
    out = pixels.copy()
    cover = layer.covered
    if not cover.any():
        return out
    a = layer.alpha[cover][:, None].astype(pixels.dtype)
    src = layer.rgb[cover].astype(pixels.dtype)
    dst = pixels[cover]
    if pixels.shape[-1] == 3:
        out[cover] = dst * (1 - a) + src * a
        return out
    dst_a = dst[:, 3:4]
    out_a = a + dst_a * (1 - a)  # > 0 wherever the mark covers
    rgb = (src * a + dst[:, :3] * dst_a * (1 - a)) / out_a
    out[cover] = np.concatenate([rgb, out_a], axis=1)
    return out


def apply_watermark(pixels: np.ndarray, spec: WatermarkSpec, mark: Image.Image | None = None) -> np.ndarray:
    """A batch (B, H, W, C) or one (H, W, C) float image with the watermark drawn on every image."""
    single = pixels.ndim == 3
    batch = pixels[None] if single else pixels
    layer = render_layer(batch.shape[2], batch.shape[1], spec, mark)
    out = np.stack([composite(img, layer) for img in batch])
    return out[0] if single else out
