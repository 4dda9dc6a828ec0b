"""LayerDiffuse (`layerDiffuse`): the LayerDiffuse LoRA on the model, and the Transparent VAE Decode of the latent."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.layerdiffuse.decoder import TransparentDecoder, decode_rgba, load_decoder
from ...engines.layerdiffuse.sizes import LATENT_SCALE, size_errors
from ...engines.models.catalog import Catalog
from ...engines.models.loader import apply_lora
from ...engines.models.resolve import resolve_file
from .common import CATEGORY, node_id

log = logging.getLogger(__name__)

LORA_AIR = "runware:120@2"
DECODER_AIR = "runware:120@4"
PARAMETER = "layerDiffuse"
_loaded: dict[tuple[str, int, int], TransparentDecoder] = {}  # the last decoder file read (weights, not run state)


def _patched(model: Any) -> dict[str, int]:
    return {k: len(v) for k, v in model.patches.items()}


class LayerDiffuseLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LayerDiffuse"),
            display_name="LayerDiffuse LoRA (imageInference)",
            category=CATEGORY,
            description=(
                f"imageInference `layerDiffuse: true`, model side: applies the LayerDiffuse LoRA ({LORA_AIR}, from "
                "the model catalog) to a FLUX.1-dev family model with ComfyUI's own LoRA loading, so it samples "
                "latents that the Transparent VAE Decode turns into RGBA. Reports LoRA keys that matched nothing."
            ),
            inputs=[io.Model.Input("model", tooltip="A FLUX.1-dev family diffusion model.")],
            outputs=[io.Model.Output(display_name="MODEL"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        entry = Catalog.load().require(LORA_AIR, PARAMETER, ("lora",))
        path = resolve_file(entry, entry.files["model"], PARAMETER)
        patched, _clip, unmatched = apply_lora(model, None, path, 1.0)
        before = _patched(model)
        if not any(n > before.get(k, 0) for k, n in _patched(patched).items()):
            raise ContractError.single(
                "unsupportedLayerDiffuse", f"the LayerDiffuse LoRA ({LORA_AIR}) matched no weight of this model; "
                "layerDiffuse is for FLUX.1-dev family models", PARAMETER, "boolean")
        if unmatched:
            log.warning("LayerDiffuse LoRA: %d keys matched no weight of this model: %s", len(unmatched),
                        ", ".join(unmatched[:5]))
        return io.NodeOutput(patched, json.dumps({"model": LORA_AIR, "unmatchedKeys": unmatched}))


def transparent_decoder() -> TransparentDecoder:
    """The decoder the catalog names for runware:120@4 (a `.pth` is read with weights_only=True; a
    `.safetensors` conversion with the same keys works too), kept between runs while the file is unchanged."""
    entry = Catalog.load().require(DECODER_AIR, PARAMETER, ("vae",))
    path = resolve_file(entry, entry.files["model"], PARAMETER)
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        try:
            decoder = load_decoder(comfy.utils.load_torch_file(path, safe_load=True))
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ContractError.single("invalidModelFile", f"{DECODER_AIR} ('{entry.files['model']}') is not a "
                                       f"LayerDiffuse transparent decoder: {exc}", PARAMETER, "boolean") from exc
        _loaded.clear()
        _loaded[key] = decoder
    return _loaded[key]


def check_latent(samples: torch.Tensor, latent_channels: int) -> None:
    """Contract errors for latents the transparent decoder cannot take (channels, size)."""
    if samples.ndim != 4:
        raise ContractError.single("unsupportedLayerDiffuse", f"the transparent decoder takes image latents "
                                   f"(4 dimensions), not {samples.ndim}", PARAMETER, "boolean")
    if samples.shape[1] != latent_channels:
        raise ContractError.single(
            "unsupportedLayerDiffuse", f"the transparent decoder takes {latent_channels}-channel FLUX latents; this "
            f"latent has {samples.shape[1]} channels (layerDiffuse is for FLUX.1-dev family models)", PARAMETER,
            "boolean")
    errors = size_errors(samples.shape[3] * LATENT_SCALE, samples.shape[2] * LATENT_SCALE)
    if errors:
        raise ContractError(errors)


class TransparentVAEDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TransparentDecode"),
            display_name="Transparent VAE Decode (imageInference)",
            category=CATEGORY,
            description=(
                f"imageInference `layerDiffuse: true`, image side: decodes a FLUX latent sampled with the LayerDiffuse "
                f"LoRA into RGBA with the transparent VAE ({DECODER_AIR}, from the model catalog): the VAE decodes RGB, "
                "the transparency decoder predicts RGBA from that image and the latent. Width and height must be "
                "multiples of 64. Save as PNG or WEBP to keep the alpha (JPG has none)."
            ),
            inputs=[
                io.Latent.Input("latent", tooltip="The sampled FLUX latent (a ComfyUI LATENT, already un-scaled)."),
                io.Vae.Input("vae", tooltip="The model's own FLUX VAE (decodes the RGB the decoder starts from)."),
                io.Boolean.Input("augment", default=True,
                                 tooltip="Median of 8 flipped/rotated passes (the reference decoding); off: one "
                                         "pass, 8x faster, slightly noisier edges."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.Mask.Output(display_name="MASK")],
        )

    @classmethod
    def execute(cls, latent, vae, augment: bool = True) -> io.NodeOutput:
        samples = latent["samples"]
        decoder = transparent_decoder()
        check_latent(samples, decoder.config.latent_channels)
        pixels = vae.decode(samples)
        if pixels.ndim == 5:  # VAEs that decode video-shaped batches
            pixels = pixels.reshape(-1, *pixels.shape[-3:])
        device = comfy.model_management.vae_device()
        dtype = comfy.model_management.vae_dtype(device, [torch.bfloat16, torch.float16])
        height, width = pixels.shape[1:3]
        # features of 32 channels at full size, a dozen alive at once (skips included), per pass
        comfy.model_management.free_memory(height * width * 32 * 12 * dtype.itemsize, device)
        decoder.to(device=device, dtype=dtype)
        try:
            rgba = decode_rgba(decoder, pixels, samples, augment, device, dtype)
        finally:
            decoder.to(comfy.model_management.vae_offload_device())
        return io.NodeOutput(rgba, 1.0 - rgba[..., 3])
