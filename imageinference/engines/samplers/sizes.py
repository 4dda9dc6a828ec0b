"""Image sizes the passes use (pure)."""

from __future__ import annotations

import math

NATIVE_AREA = {"eps": 512 * 512, "flow": 1024 * 1024}
"""Training area of a family: SD1.x ~512x512; SDXL, FLUX and SD3 ~1024x1024 (SDXL is eps but 1024: pass 'sdxl')."""


def first_pass_size(width: int, height: int, native_area: int) -> tuple[int, int]:
    """Hires fix: the first pass keeps the target's aspect at the smaller of the model's native area and a quarter
    of the target area (half the sides), in multiples of 64, at least 64."""
    area = min(native_area, width * height / 4)
    scale = math.sqrt(area / (width * height))
    return max(64, int(width * scale) // 64 * 64), max(64, int(height * scale) // 64 * 64)
