"""Hires fix: first pass smaller, model upscale, resize to the target, VAE encode, second pass (adapter).

`hiresFix: true` means: upscaler runware:504@1 (RealESRGAN x4plus), second-pass steps = the request's steps,
strength 0.5. The first-pass size rule is in sizes.py. Upscaling runs in 512-pixel tiles (32 overlap), and VAE
work switches to tiles above 1024x1024, so memory stays bounded at 2048x2048 and beyond.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import comfy.model_management
import comfy.utils
import torch

DEFAULT_UPSCALER = "runware:504@1"
DEFAULT_STRENGTH = 0.5
TILE, OVERLAP = 512, 32
TILED_VAE_AREA = 1024 * 1024


@dataclass(frozen=True)
class HiresOptions:
    upscaler: Any  # a spandrel ImageModelDescriptor
    air: str
    steps: int | None = None
    strength: float | None = None
    explicit: bool = True  # False for `hiresFix: true`


def native_area(model: Any) -> int:
    name = type(model.model.model_config).__name__
    return 512 * 512 if name.startswith(("SD15", "SD20", "SD21")) else 1024 * 1024


def upscale_image(upscaler: Any, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP) -> torch.Tensor:
    """(B,H,W,C) -> (B,H*s,W*s,C) with the upscaler, tile by tile (progress shown), clamped to [0,1]. The upscaler
    takes RGB; an alpha channel (a transparent VAE's decode, layerDiffuse) is scaled to the same size, bicubic."""
    if image.shape[-1] == 4:
        rgb = upscale_image(upscaler, image[..., :3], tile, overlap)
        alpha = comfy.utils.common_upscale(image[..., 3:].movedim(-1, 1), rgb.shape[2], rgb.shape[1], "bicubic",
                                           "disabled").movedim(1, -1)
        return torch.cat([rgb, alpha.to(rgb).clamp(0.0, 1.0)], dim=-1)
    device = comfy.model_management.get_torch_device()
    upscaler.to(device)
    try:
        x = image.movedim(-1, 1).to(device)
        steps = x.shape[0] * comfy.utils.get_tiled_scale_steps(x.shape[3], x.shape[2], tile_x=tile, tile_y=tile,
                                                               overlap=overlap)
        pbar = comfy.utils.ProgressBar(steps)
        out = comfy.utils.tiled_scale(x, lambda a: upscaler(a), tile_x=tile, tile_y=tile, overlap=overlap,
                                      upscale_amount=upscaler.scale, pbar=pbar)
    finally:
        upscaler.to("cpu")
    return torch.clamp(out.movedim(1, -1), 0.0, 1.0)


def vae_encode(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """An alpha channel is passed on: a transparent VAE encodes it, ComfyUI's VAEs keep the RGB themselves."""
    big = pixels.shape[1] * pixels.shape[2] > TILED_VAE_AREA
    return vae.encode_tiled(pixels) if big else vae.encode(pixels)


def vae_decode(vae: Any, samples: torch.Tensor) -> torch.Tensor:
    big = samples.shape[2] * samples.shape[3] * 64 > TILED_VAE_AREA
    return vae.decode_tiled(samples) if big else vae.decode(samples)
