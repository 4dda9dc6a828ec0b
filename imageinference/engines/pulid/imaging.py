"""Image steps of the ID encoder (torch only): affine warps onto face templates, the vision tower's input."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .align import invert
from .eva_clip import OPENAI_MEAN, OPENAI_STD

LONG_SIDE = 1024


def warp(image: torch.Tensor, matrix: np.ndarray, size: int, border: tuple[float, float, float]) -> torch.Tensor:
    """(H, W, 3) float image warped by the 2x3 `matrix` (source pixel -> output pixel) into a size x size output,
    bilinear, pixel centres at integers, outside filled with `border` (OpenCV's warpAffine with a constant
    border)."""
    h, w = image.shape[:2]
    inv = torch.tensor(invert(matrix), dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    grid = torch.stack((2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1), dim=-1)[None].float()
    src = image.permute(2, 0, 1)[None].float()
    sampled = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    inside = F.grid_sample(torch.ones_like(src[:, :1]), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True)
    fill = torch.tensor(border, dtype=torch.float32).view(1, 3, 1, 1)
    return (sampled + (1 - inside) * fill)[0].permute(1, 2, 0)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def limit_long_side(image: torch.Tensor, long_side: int = LONG_SIDE) -> torch.Tensor:
    h, w = image.shape[:2]
    if max(h, w) <= long_side:
        return image
    scale = long_side / max(h, w)
    out = F.interpolate(image.permute(2, 0, 1)[None], size=(round(h * scale), round(w * scale)), mode="area")
    return out[0].permute(1, 2, 0)


def vision_input(picture: torch.Tensor, size: int) -> torch.Tensor:
    """The (1, 3, S, S) picture of the face (face_parsing.features_only) -> the tower's (1, 3, size, size) input:
    resized (bicubic, antialiased, as torchvision's resize of a tensor) and normalised with CLIP's mean/std."""
    resized = F.interpolate(picture.float(), size=(size, size), mode="bicubic", align_corners=False, antialias=True)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    return (resized - mean) / std
