"""The transparent VAE as a ComfyUI VAE (adapter): what `layerDiffuse` means by `vae: runware:120@4`.

A TransparentVAE shares the wrapped VAE's networks and memory management (it is that VAE, with two methods
replaced), so anything that takes a VAE takes it: core VAE Encode / VAE Decode, the Image Inference sampler.
- encode(IMAGE): an RGBA image (4 channels) is encoded with its alpha, an RGB image as opaque, by the transparency
  encoder (vae_io.transparent_encode); the tiled variant is the same computation (the transparency networks see
  the whole image, as in the reference).
- decode(LATENT): RGBA (4 channels), by the transparency decoder with the 8-view median unless `augment` is off.
Width and height must be multiples of 64 (the decoder's six downsamplings); latents of another channel count
than the transparency networks' are refused (LayerDiffuse is for FLUX.1 16-channel latents).
"""

from __future__ import annotations

from typing import Any

import comfy.model_management
import comfy.sd
import comfy.utils
import torch

from ...contract.errors import ContractError
from .decoder import TransparentDecoder, passes
from .encoder import OffsetEncoder
from .sizes import LATENT_SCALE, size_errors
from .vae_io import split_rgba, transparent_decode, transparent_encode

PARAMETER = "layerDiffuse"


def _refuse(message: str) -> ContractError:
    return ContractError.single("unsupportedLayerDiffuse", message, PARAMETER, "boolean")


def check_latent(samples: torch.Tensor, latent_channels: int) -> None:
    """Contract errors for latents the transparent decoder cannot take (dimensions, channels, size)."""
    if samples.ndim != 4:
        raise _refuse(f"the transparent decoder takes image latents (4 dimensions), not {samples.ndim}")
    if samples.shape[1] != latent_channels:
        raise _refuse(f"the transparent decoder takes {latent_channels}-channel FLUX latents; this latent has "
                      f"{samples.shape[1]} channels (layerDiffuse is for FLUX.1-dev family models)")
    errors = size_errors(samples.shape[3] * LATENT_SCALE, samples.shape[2] * LATENT_SCALE)
    if errors:
        raise ContractError(errors)


def check_image(image: torch.Tensor) -> None:
    """Contract errors for images the transparent encoder cannot take (their latent could not be decoded)."""
    if image.ndim != 4 or image.shape[-1] not in (3, 4):
        raise _refuse(f"the transparent encoder takes RGB or RGBA images; got shape {tuple(image.shape)}")
    errors = size_errors(image.shape[2], image.shape[1])
    if errors:
        raise ContractError(errors)


class TransparentVAE(comfy.sd.VAE):
    def __init__(self, vae: Any, decoder: TransparentDecoder, encoder: OffsetEncoder | None, augment: bool = True):
        # not VAE.__init__: this object shares the wrapped VAE's state (networks, patcher, dtypes), not a copy
        self.__dict__.update(vae.__dict__)
        self.wrapped = vae
        self.transparent_decoder = decoder
        self.transparent_encoder = encoder
        self.augment = augment
        if getattr(vae, "latent_channels", decoder.config.latent_channels) != decoder.config.latent_channels:
            raise _refuse(f"the transparent VAE is for {decoder.config.latent_channels}-channel latents; this VAE's "
                          f"latents have {vae.latent_channels} (layerDiffuse is for FLUX.1-dev family models)")

    def encode(self, pixel_samples: torch.Tensor) -> torch.Tensor:
        if self.transparent_encoder is None:
            raise ContractError.single("invalidModelFile", "this transparent VAE file has no transparency encoder "
                                       "(encoder.blocks.*): it can decode, not encode", PARAMETER, "boolean")
        check_image(pixel_samples)
        rgb, alpha = split_rgba(pixel_samples)
        return transparent_encode(self.wrapped, self.transparent_encoder, rgb, alpha)

    def encode_tiled(self, pixel_samples: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.encode(pixel_samples)

    def decode(self, samples_in: torch.Tensor, vae_options: dict[str, Any] | None = None) -> torch.Tensor:
        check_latent(samples_in, self.transparent_decoder.config.latent_channels)
        device, dtype = self.wrapped.device, self.wrapped.vae_dtype  # the reference decodes in the VAE's dtype
        height, width = samples_in.shape[2] * LATENT_SCALE, samples_in.shape[3] * LATENT_SCALE
        # features of 32 channels at full size, a dozen alive at once (skips included), per pass
        comfy.model_management.free_memory(height * width * 32 * 12 * dtype.itemsize, device)
        decoder = self.transparent_decoder
        pbar = comfy.utils.ProgressBar(passes(samples_in.shape[0], self.augment))
        decoder.to(device=device, dtype=dtype)
        try:
            return transparent_decode(self.wrapped, decoder, samples_in, self.augment, device, dtype,
                                      progress=lambda: pbar.update(1))
        finally:
            decoder.to(comfy.model_management.vae_offload_device())

    def decode_tiled(self, samples: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.decode(samples)
