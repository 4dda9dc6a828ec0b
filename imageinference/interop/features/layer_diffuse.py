"""`layerDiffuse` (legacy `advancedFeatures.layerDiffuse`): the LayerDiffuse LoRA on the sampler's model and the
Transparent VAE Decode of the sampler's latent, whose RGBA image goes on to the output node.

The LoRA node is placed directly before the sampler (after any step cache: a LoRA patches weights, which a cache
does not see); the decode node reads the sampler's third output, the sampled latent of the final pass. Image steps
after it (the face detailer) get the RGBA image and the same model; they redraw RGB and keep the alpha.
Refused here: inpainting and outpainting (their result is a blend with the seed image, not one decoded latent).
"""

from __future__ import annotations

from typing import Any

from ...contract.errors import ApiError, ContractError
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

LORA_NODE = 90
DECODE_NODE = 91
LORA_CLASS = "ImageInferenceLayerDiffuse"
DECODE_CLASS = "ImageInferenceTransparentDecode"
SAMPLER_CLASS = "ImageInferenceSampler"
LATENT_OUTPUT = 2  # the sampler's `latent` output


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
    decode = g.add(DECODE_NODE, DECODE_CLASS, {"latent": g.ref(sampler_id, LATENT_OUTPUT), "vae": sampler["vae"],
                                               "augment": True})
    g.image = g.ref(decode, 0)


def export_lora(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    ctx.req["layerDiffuse"] = True


def export_decode(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    ctx.req["layerDiffuse"] = True
    ctx.node(node["inputs"].get("vae"))  # the model's own VAE (a FLUX request names none): traced, nothing to write
    if node["inputs"].get("augment", True) is False:
        ctx.note(nid, node, "a single-pass transparent decode (augment off) has no request equivalent; the request "
                 "decodes with the 8-pass median")


FEATURE = Feature("layerDiffuse", ("layerDiffuse",), "image", compile_, (
    NodeExport(LORA_CLASS, "model", export_lora, upstream="model"),
    NodeExport(DECODE_CLASS, "image", export_decode, upstream="latent"),
), order=5)
