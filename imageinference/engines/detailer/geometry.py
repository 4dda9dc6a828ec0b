"""Face-detailer geometry (pure): which detections are detailed, the square crop around a face, the working size.

Rules (documented in docs/face-detailer.md):
- A detection counts when its score is above `confidence` (ultralytics' own comparison) and its box covers at least
  one pixel of the image. Boxes at most minRegionSize pixels wide or high, or more than maxRegionSize (0: no limit),
  are ignored. Of the rest, at most maxRegions are detailed: the largest boxes (area; ties: higher score, then top
  to bottom, left to right). They are detailed one after the other, highest score first (ties: top to bottom, then
  left to right), each crop taken from the image as the previous faces left it; region i uses seed + i.
- A box covers the whole pixels it touches: [floor(x0), ceil(x1)).
- `maskPadding` is in pixels of the image: the face's region (its box, or its segment for `-seg` detectors) grows
  by that many pixels on every side. `maskBlur` feathers the grown region's edge over that many pixels on each side
  of it, so nothing farther than maskPadding + maskBlur from the region changes.
- The crop is the smallest square that holds the box grown by maskPadding + maskBlur + contextPadding, and is at
  least inpaintSize / maxUpscale pixels wide; centred on the box and moved inside the image; where the image is
  smaller than that square, the crop is the image's full width or height.
- The crop is scaled so its longer side is `inpaintSize` (rounded to a multiple of 8), or maxUpscale times its size
  where that is smaller (an image too small for a crop of inpaintSize / maxUpscale), sampled there, and scaled back
  to the crop's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MULTIPLE = 8  # latent pixels: the VAEs of SD1.x/SDXL/SD3/FLUX downsample by 8


@dataclass(frozen=True)
class Box:
    """A detector's box in image pixels (floats), x0 <= x1, y0 <= y1."""

    x0: float
    y0: float
    x1: float
    y1: float


@dataclass(frozen=True)
class Rect:
    """Whole pixels [x0, x1) x [y0, y1) of an image."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def grown(self, n: int, width: int, height: int) -> Rect:
        """Grown by n pixels on every side, clamped to a width x height image."""
        return Rect(max(0, self.x0 - n), max(0, self.y0 - n), min(width, self.x1 + n), min(height, self.y1 + n))

    def contains(self, other: Rect) -> bool:
        return self.x0 <= other.x0 and self.y0 <= other.y0 and other.x1 <= self.x1 and other.y1 <= self.y1

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


@dataclass(frozen=True)
class Detection:
    box: Box
    score: float
    index: int  # position in the detector's output (which segment mask belongs to it)


def pixel_rect(box: Box, width: int, height: int) -> Rect | None:
    """The whole pixels a box touches, clamped to the image; None when it covers no pixel of it."""
    x0, y0 = max(0, math.floor(box.x0)), max(0, math.floor(box.y0))
    x1, y1 = min(width, math.ceil(box.x1)), min(height, math.ceil(box.y1))
    if x1 <= x0 or y1 <= y0:
        return None
    return Rect(x0, y0, x1, y1)


@dataclass(frozen=True)
class Selection:
    regions: list[Detection]  # in the order they are detailed
    found: int  # detections above confidence that cover a pixel
    small: int = 0  # ignored: at most minRegionSize wide or high
    large: int = 0  # ignored: more than maxRegionSize wide or high
    limit: int = 0  # left out: beyond maxRegions


def _area(d: Detection) -> float:
    return max(0.0, d.box.x1 - d.box.x0) * max(0.0, d.box.y1 - d.box.y0)


def select(detections: Iterable[Detection], confidence: float, width: int, height: int, max_regions: int | None = None,
           min_size: float = 0, max_size: float = 0) -> Selection:
    """The detections that are detailed, in the order they are detailed, and what was left out and why."""
    found = [d for d in detections if d.score > confidence and pixel_rect(d.box, width, height) is not None]
    small = [d for d in found if min(d.box.x1 - d.box.x0, d.box.y1 - d.box.y0) <= min_size]
    large = [d for d in found if d not in small and 0 < max_size < max(d.box.x1 - d.box.x0, d.box.y1 - d.box.y0)]
    sized = [d for d in found if d not in small and d not in large]
    limit = len(sized) if max_regions is None else max(0, max_regions)
    largest = sorted(sized, key=lambda d: (-_area(d), -d.score, d.box.y0, d.box.x0, d.index))[:limit]
    ordered = sorted(largest, key=lambda d: (-d.score, d.box.y0, d.box.x0, d.index))
    return Selection(ordered, len(found), len(small), len(large), len(sized) - len(ordered))


def kept(detections: Iterable[Detection], confidence: float, width: int, height: int) -> list[Detection]:
    """Every detection above confidence that covers a pixel, in the order they are detailed (no size limits)."""
    return select(detections, confidence, width, height, min_size=-1).regions


def square_crop(rect: Rect, margin: int, width: int, height: int, min_side: int = 0) -> Rect:
    """The smallest square holding `rect` grown by `margin` and at least `min_side` wide, centred on it and moved
    inside the image (the image's full width or height where the image is smaller than the square)."""
    gx0, gy0, gx1, gy1 = rect.x0 - margin, rect.y0 - margin, rect.x1 + margin, rect.y1 + margin
    side = max(gx1 - gx0, gy1 - gy0, min_side)
    sx, sy = min(side, width), min(side, height)
    x0 = min(max(0, gx0 - (sx - (gx1 - gx0)) // 2), width - sx)
    y0 = min(max(0, gy0 - (sy - (gy1 - gy0)) // 2), height - sy)
    return Rect(x0, y0, x0 + sx, y0 + sy)


def snap(v: float) -> int:
    """v rounded to a multiple of 8 (halves up), at least 8."""
    return max(MULTIPLE, int(v / MULTIPLE + 0.5) * MULTIPLE)


def min_crop_side(inpaint_size: int, max_upscale: float) -> int:
    """The smallest crop that reaches inpaintSize without being scaled more than max_upscale."""
    return math.ceil(inpaint_size / max_upscale - 1e-9)


def working_size(width: int, height: int, inpaint_size: int, max_upscale: float = math.inf) -> tuple[int, int]:
    """A crop's size scaled so its longer side is inpaintSize, or max_upscale times its longer side where that is
    smaller; both sides multiples of 8 (halves round up, at least 8)."""
    longer = max(width, height)
    target = min(float(inpaint_size), longer * max_upscale)
    if width >= height:
        return snap(target), snap(height * target / width)
    return snap(width * target / height), snap(target)


def feather_kernel(mask_blur: int) -> tuple[int, float] | None:
    """(kernel size, sigma) of the Gaussian that feathers a mask's edge over mask_blur pixels each side: the kernel
    reaches exactly mask_blur pixels, sigma is a third of it; None for no feathering."""
    if mask_blur <= 0:
        return None
    return 2 * mask_blur + 1, mask_blur / 3.0
