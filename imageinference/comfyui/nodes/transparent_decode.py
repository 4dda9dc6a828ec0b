"""LayerDiffuse (`layerDiffuse`): the LayerDiffuse LoRA on the model; the transparent VAE (runware:120@4) as a VAE
for any node that takes one, and as Transparent VAE Encode / Decode nodes."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import comfy.utils
import torch
from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.layerdiffuse.decoder import TransparentDecoder, load_decoder
from ...engines.layerdiffuse.encoder import OffsetEncoder, encoder_weights, load_encoder
from ...engines.layerdiffuse.transparent_vae import TransparentVAE, check_latent
from ...engines.models.catalog import Catalog
from ...engines.models.loader import apply_lora
from ...engines.models.resolve import resolve_file
from .common import CATEGORY, node_id

log = logging.getLogger(__name__)

LORA_AIR = "runware:120@2"
DECODER_AIR = "runware:120@4"
PARAMETER = "layerDiffuse"
CONVERT = "python -m imageinference.engines.layerdiffuse.convert TransparentVAE.pth TransparentVAE.safetensors"
_loaded: dict[tuple[str, int, int], tuple[TransparentDecoder, OffsetEncoder | None]] = {}  # the last file read


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


def transparent_networks() -> tuple[TransparentDecoder, OffsetEncoder | None]:
    """The decoder and encoder in the file the catalog names for runware:120@4, kept between runs while the file
    is unchanged. Read from .safetensors only (the published TransparentVAE.pth is a pickle: convert it once)."""
    entry = Catalog.load().require(DECODER_AIR, PARAMETER, ("vae",))
    path = resolve_file(entry, entry.files["model"], PARAMETER)
    if not path.lower().endswith(".safetensors"):
        raise ContractError.single(
            "invalidModelFile", f"{DECODER_AIR} ('{entry.files['model']}') is read from .safetensors only; convert "
            f"the published pickle once with `{CONVERT}` and point the catalog at the result", PARAMETER, "boolean")
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _loaded:
        try:
            sd = comfy.utils.load_torch_file(path, safe_load=True)
            decoder = load_decoder(sd)
            encoder = load_encoder(sd) if encoder_weights(sd) else None
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise ContractError.single("invalidModelFile", f"{DECODER_AIR} ('{entry.files['model']}') is not a "
                                       f"LayerDiffuse transparent VAE: {exc}", PARAMETER, "boolean") from exc
        if encoder is None:
            log.warning("%s ('%s') has no transparency encoder: it decodes, but cannot encode RGBA images",
                        DECODER_AIR, entry.files["model"])
        _loaded.clear()
        _loaded[key] = (decoder, encoder)
    return _loaded[key]


def transparent_vae(vae: Any, augment: bool = True) -> TransparentVAE:
    decoder, encoder = transparent_networks()
    return TransparentVAE(vae, decoder, encoder, augment)


AUGMENT_TOOLTIP = ("Median of 8 flipped/rotated decoder passes (the reference decoding); off: one pass, 8x faster, "
                   "slightly noisier edges.")


class TransparentVAENode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TransparentVAE"),
            display_name="Transparent VAE (imageInference)",
            category=CATEGORY,
            description=(
                f"imageInference `layerDiffuse: true`, VAE side: the model's FLUX VAE with the transparent VAE "
                f"({DECODER_AIR}, from the model catalog) around it, usable wherever a VAE is. It encodes RGBA images "
                "(4 channels; RGB counts as opaque) into latents that carry the alpha, and decodes latents into RGBA, "
                "as the published TransparentVAE. Use it with the LayerDiffuse LoRA; width and height in multiples "
                "of 64. Save as PNG or WEBP to keep the alpha."
            ),
            inputs=[io.Vae.Input("vae", tooltip="The model's own FLUX VAE."),
                    io.Boolean.Input("augment", default=True, tooltip=AUGMENT_TOOLTIP)],
            outputs=[io.Vae.Output(display_name="VAE")],
        )

    @classmethod
    def execute(cls, vae, augment: bool = True) -> io.NodeOutput:
        return io.NodeOutput(transparent_vae(vae, augment))


class TransparentVAEEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TransparentEncode"),
            display_name="Transparent VAE Encode (imageInference)",
            category=CATEGORY,
            description=(
                f"imageInference `layerDiffuse: true` with a seed image: encodes an RGBA image into a FLUX latent "
                f"that carries its alpha, with the transparent VAE ({DECODER_AIR}): the FLUX VAE encodes the colour "
                "over grey, the transparency encoder adds an offset from the colour and alpha. The alpha is the "
                "image's 4th channel, or 1 - mask when a MASK is connected (Load Image's convention: 1 = "
                "transparent); without either the image is opaque. Width and height must be multiples of 64."
            ),
            inputs=[
                io.Image.Input("image", tooltip="An RGB or RGBA image."),
                io.Vae.Input("vae", tooltip="The model's own FLUX VAE."),
                io.Mask.Input("mask", optional=True, tooltip="Transparency as a MASK (1 = transparent), e.g. Load "
                                                             "Image's; replaces the image's own alpha."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def execute(cls, image, vae, mask=None) -> io.NodeOutput:
        if mask is not None:
            m = mask.reshape(-1, *mask.shape[-2:])
            if tuple(m.shape[-2:]) != tuple(image.shape[1:3]):
                raise ContractError.single("invalidMaskImage", f"the mask is {m.shape[-1]}x{m.shape[-2]} but the "
                                           f"image is {image.shape[2]}x{image.shape[1]}", PARAMETER, "boolean")
            image = torch.cat([image[..., :3], (1.0 - m[..., None]).expand(image.shape[0], -1, -1, -1)], dim=-1)
        return io.NodeOutput({"samples": transparent_vae(vae).encode(image)})


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
                io.Boolean.Input("augment", default=True, tooltip=AUGMENT_TOOLTIP),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.Mask.Output(display_name="MASK")],
        )

    @classmethod
    def execute(cls, latent, vae, augment: bool = True) -> io.NodeOutput:
        samples = latent["samples"]
        decoder, _encoder = transparent_networks()
        check_latent(samples, decoder.config.latent_channels)
        rgba = transparent_vae(vae, augment).decode(samples)
        return io.NodeOutput(rgba, 1.0 - rgba[..., 3])
