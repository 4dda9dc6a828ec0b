"""LayerDiffuse's transparent VAE around a ComfyUI VAE (adapter): RGBA -> latent and latent -> RGBA, as the
FLUX release's TransparentVAE computes them.

Encode (an RGBA image -> the latent image-to-image starts from):
- the ordinary VAE encodes the colour premultiplied over mid-grey, in the VAE's [-1, 1] range: (rgb * 2 - 1) * a;
- the transparency encoder sees the padded colour and alpha (padding.py, encoder.py);
- latent = posterior mean + posterior std * 300 * offset: the offset moves the latent by that many standard
  deviations of the VAE's own posterior, which is how the latent carries transparency. A ComfyUI LATENT is the
  VAE's own (un-scaled) latent, so this is the LATENT as is (the reference scales it for its pipeline).
An image without alpha is encoded as opaque (alpha 1).

Decode (latent -> RGBA): the ordinary VAE decodes the latent to [-1, 1] and the result is mapped to x * 0.5 + 0.5
*without* clipping, as the reference feeds its decoder (ComfyUI's own decode clips to [0, 1]); the transparency
decoder then predicts RGBA from that and the latent (decoder.py).

The ordinary VAE's networks are called here the way ComfyUI's VAE.encode/decode call them (the model loaded
through ComfyUI's model management, its dtype and device), because the posterior's standard deviation and the
unclipped decode are not outputs of ComfyUI's VAE methods. Everything runs one image at a time, as the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.model_management
import torch

from .decoder import TransparentDecoder, decode_rgba
from .encoder import OFFSET_SCALE, OffsetEncoder
from .padding import pad_colour

LOGVAR_RANGE = (-30.0, 20.0)  # the diagonal Gaussian's clamp (diffusers and ComfyUI alike)


def _load(vae: Any, memory: int) -> None:
    vae.throw_exception_if_invalid()
    comfy.model_management.load_models_gpu([vae.patcher], memory_required=memory,
                                           force_full_load=getattr(vae, "disable_offload", False))


def posterior(vae: Any, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE's posterior for (1, 3, H, W) pixels in [-1, 1], in the VAE's dtype and device."""
    model = vae.first_stage_model
    moments = model.encoder(pixels.to(vae.vae_dtype).to(vae.device))
    if getattr(model, "quant_conv", None) is not None:
        moments = model.quant_conv(moments)
    mean, logvar = torch.chunk(moments, 2, dim=1)
    return mean, torch.exp(0.5 * torch.clamp(logvar, *LOGVAR_RANGE))


def split_rgba(image: torch.Tensor, alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rgb (B,H,W,3), alpha (B,H,W)) from an IMAGE with 3 or 4 channels; an explicit `alpha` wins, and an image
    without one is opaque. Values clipped to [0, 1]."""
    rgb = image[..., :3].float().clamp(0, 1)
    if alpha is None:
        alpha = image[..., 3] if image.shape[-1] >= 4 else torch.ones(image.shape[:3])
    alpha = alpha.float().clamp(0, 1)
    if alpha.shape[0] == 1 and rgb.shape[0] > 1:
        alpha = alpha.expand(rgb.shape[0], -1, -1)
    return rgb, alpha


@torch.no_grad()
def transparent_encode(vae: Any, encoder: OffsetEncoder, rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(B, C, H/8, W/8) LATENT samples from straight colour (B, H, W, 3) and alpha (B, H, W) in [0, 1]."""
    b, h, w = alpha.shape
    _load(vae, vae.memory_used_encode((1, 3, h, w), vae.vae_dtype))
    latents = []
    for i in range(b):
        rgb_i = rgb[i].movedim(-1, 0)[None].contiguous()  # (1, 3, H, W), the reference's layout
        a_i = alpha[i][None, None].contiguous()
        mean, std = posterior(vae, (rgb_i * 2.0 - 1.0) * a_i)
        padded = pad_colour(rgb[i], alpha[i]).movedim(-1, 0)[None]
        encoder.to(device=std.device, dtype=std.dtype)
        offset = encoder(torch.cat([padded, a_i], dim=1).to(std.device, std.dtype)) * OFFSET_SCALE
        latents.append((mean + std * offset).float().to(comfy.model_management.intermediate_device()))
    return torch.cat(latents)


@torch.no_grad()
def unclipped_pixels(vae: Any, latent: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3): the VAE's decode mapped to x * 0.5 + 0.5 and not clipped (what the reference decodes from)."""
    _load(vae, vae.memory_used_decode((1, *latent.shape[1:]), vae.vae_dtype))
    out = []
    for i in range(latent.shape[0]):
        x = vae.first_stage_model.decode(latent[i:i + 1].to(vae.vae_dtype).to(vae.device))
        out.append((x * 0.5 + 0.5).float().to(comfy.model_management.intermediate_device()).movedim(1, -1))
    return torch.cat(out)


def transparent_decode(vae: Any, decoder: TransparentDecoder, latent: torch.Tensor, augment: bool = True,
                       device: torch.device | None = None, dtype: torch.dtype | None = None,
                       progress: Callable[[], None] | None = None) -> torch.Tensor:
    """(B, H, W, 4) RGBA in [0, 1] from LATENT samples (B, C, H/8, W/8)."""
    return decode_rgba(decoder, unclipped_pixels(vae, latent), latent, augment, device, dtype, progress)
