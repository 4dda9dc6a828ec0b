"""Lanczos resampling of float images (adapter: torch only): what the detail crops of the face detailer and of
`maskMargin` inpainting are scaled with, both ways.

Plain bicubic interpolation reads 4 source pixels per output pixel whatever the scale, so shrinking a detailed
crop 7x (a 140-pixel face sampled at 1024) skips most of its pixels and aliases. Lanczos-3 with the kernel widened
by the scale factor when shrinking (as Pillow's and both face-detailer peers' resizes do) averages every source
pixel. Unlike Pillow on 8-bit images, this works on the float tensors ComfyUI passes around: nothing is rounded or
truncated to 8 bits on the way.

Each axis is one gather-and-weight pass. The weights follow Pillow's convention (pixel centres at i + 0.5, support
3 * max(scale, 1), taps outside the image dropped and the rest renormalised), so it agrees with Pillow's 32-bit
float ("F" mode) Lanczos to float precision (tested).
"""

from __future__ import annotations

import math

import torch

SUPPORT = 3.0  # Lanczos-3


def _sinc(x: torch.Tensor) -> torch.Tensor:
    px = math.pi * x
    return torch.where(x == 0, torch.ones_like(x), torch.sin(px) / torch.where(x == 0, torch.ones_like(px), px))


def _weights(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights), each (out_size, taps): output pixel i is sum_k weights[i, k] * input[indices[i, k]]."""
    scale = in_size / out_size
    stretch = max(scale, 1.0)  # widen the kernel when shrinking: it then low-passes what it drops
    support = SUPPORT * stretch
    taps = int(math.ceil(support)) * 2 + 1
    centre = (torch.arange(out_size, dtype=torch.float64) + 0.5) * scale
    first = torch.floor(centre - support + 0.5)
    index = first[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    x = (index - centre[:, None] + 0.5) / stretch
    w = torch.where(x.abs() < SUPPORT, _sinc(x) * _sinc(x / SUPPORT), torch.zeros_like(x))
    inside = (index >= 0) & (index < in_size) & (index < torch.floor(centre + support + 0.5)[:, None])
    w = torch.where(inside, w, torch.zeros_like(w))
    w = w / w.sum(dim=1, keepdim=True)
    return index.clamp(0, in_size - 1).long(), w


def _resample(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    index, w = _weights(in_size, out_size)
    moved = x.movedim(dim, -1)  # (..., in)
    gathered = moved[..., index.to(x.device)]  # (..., out, taps)
    out = (gathered * w.to(device=x.device, dtype=x.dtype)).sum(dim=-1)
    return out.movedim(-1, dim)


def lanczos_resize(image: torch.Tensor, width: int, height: int, clamp: bool = True) -> torch.Tensor:
    """A (B, H, W, C) float image scaled to width x height with Lanczos-3; values clamped to [0, 1] (the kernel's
    lobes overshoot at hard edges) unless clamp is False."""
    if image.shape[1] == height and image.shape[2] == width:
        return image
    dtype = image.dtype
    x = image.float() if dtype in (torch.float16, torch.bfloat16) else image
    x = _resample(_resample(x, 2, width), 1, height)
    if clamp:
        x = x.clamp(0, 1)
    return x.to(dtype)
