"""`layerDiffuse` (legacy `advancedFeatures.layerDiffuse`): what the API defines it as, the LayerDiffuse LoRA
(runware:120@2) on the sampler's model and the transparent VAE (runware:120@4) as the sampler's VAE.

The LoRA node is placed directly before the sampler (after any step cache: a LoRA patches weights, which a cache
does not see). The Transparent VAE node wraps the model's VAE and becomes the sampler's VAE, so every image the
sampler decodes is RGBA (the final image, and hires fix's intermediate one) and every image it encodes keeps its
alpha (hires fix's intermediate image; a seed image). A seed image reaches the sampler with its alpha through core's
Join Image with Alpha (an image without alpha is opaque), as the published image-to-image encodes an RGBA image.
Image steps after the sampler (the face detailer) get the RGBA image and the model; they redraw RGB and keep alpha.
Refused here: inpainting and outpainting (their result is a blend with the seed image, not one decoded latent).

Graphs made before the Transparent VAE node (LoRA -> sampler latent -> Transparent VAE Decode) still export.
"""

from __future__ import annotations

from typing import Any

from ...contract.errors import ApiError, ContractError
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

LORA_NODE = 90
DECODE_NODE = 91  # graphs made before the Transparent VAE node: the decode of the sampler's latent
VAE_NODE = 92
SEED_ALPHA_NODE = 93
LORA_CLASS = "ImageInferenceLayerDiffuse"
DECODE_CLASS = "ImageInferenceTransparentDecode"
VAE_CLASS = "ImageInferenceTransparentVAE"
JOIN_ALPHA_CLASS = "JoinImageWithAlpha"  # core: IMAGE + MASK (1 = transparent) -> RGBA
SAMPLER_CLASS = "ImageInferenceSampler"
SEED_NODE = "6"  # the compiler's seed image node (Load Image String: IMAGE, MASK from its transparency)


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if d.get("layerDiffuse") is not True:
        return
    inputs = d.get("inputs") or {}
    if inputs.get("maskImage") is not None or d.get("outpaint") is not None:
        field = "outpaint" if d.get("outpaint") is not None else "inputs.maskImage"
        raise ContractError([ApiError(
            "unsupportedLayerDiffuse", f"layerDiffuse with {field} has no local engine yet: inpainting and "
            "outpainting blend the result into the seed image; use text-to-image or image-to-image",
            "layerDiffuse", "boolean").with_task(d.get("taskUUID"))])
    sampler_id = next(nid for nid, node in g.nodes.items() if node["class_type"] == SAMPLER_CLASS)
    sampler = g.nodes[sampler_id]["inputs"]
    lora = g.add(LORA_NODE, LORA_CLASS, {"model": sampler["model"]})
    sampler["model"] = g.model = g.ref(lora, 0)
    vae = g.add(VAE_NODE, VAE_CLASS, {"vae": sampler["vae"], "augment": True})
    sampler["vae"] = g.ref(vae, 0)
    if sampler.get("seedImage") == g.ref(SEED_NODE, 0):
        join = g.add(SEED_ALPHA_NODE, JOIN_ALPHA_CLASS, {"image": g.ref(SEED_NODE, 0), "alpha": g.ref(SEED_NODE, 1)})
        sampler["seedImage"] = g.ref(join, 0)


def export_lora(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    ctx.req["layerDiffuse"] = True


def export_vae(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    ctx.req["layerDiffuse"] = True
    ctx.node(node["inputs"].get("vae"))  # the model's own VAE (a FLUX request names none): traced, nothing to write
    if node["inputs"].get("augment", True) is False:
        ctx.note(nid, node, "a single-pass transparent decode (augment off) has no request equivalent; the request "
                 "decodes with the 8-pass median")


FEATURE = Feature("layerDiffuse", ("layerDiffuse",), "image", compile_, (
    NodeExport(LORA_CLASS, "model", export_lora, upstream="model"),
    NodeExport(VAE_CLASS, "option", export_vae),
    NodeExport(DECODE_CLASS, "image", export_vae, upstream="latent"),
), order=5)
