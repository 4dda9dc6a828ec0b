"""`lora` <-> the LoRA Stack node, first on the model path (pure). Core's LoraLoader exports too.

The stack patches model and text encoder together, so it runs before every other model feature (they must see
the LoRA'd blocks) and before the clip stage (embeddings). Node id 2.
"""

from __future__ import annotations

import json
from typing import Any

from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 2
CLASS = "ImageInferenceLoraStack"


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if not d.get("lora"):
        return
    g.add(NODE, CLASS, {"model": g.model, "clip": g.clip, "lora": json.dumps(d["lora"])})
    g.model, g.clip = g.ref(NODE, 0), g.ref(NODE, 1)


def export_stack(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    # traced from the sampler upwards: entries found later sit earlier in the stack
    ctx.req["lora"] = json.loads(node["inputs"].get("lora") or "[]") + ctx.req.get("lora", [])


def export_core(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    inputs = node["inputs"]
    if inputs.get("strength_model") != inputs.get("strength_clip"):
        ctx.note(nid, node, "different model and CLIP strengths; `lora.weight` is one number")
    air = ctx.air_for_file("loras", str(inputs.get("lora_name")), nid, node)
    if air:
        ctx.req["lora"] = [{"model": air, "weight": inputs.get("strength_model", 1.0)}] + ctx.req.get("lora", [])


FEATURE = Feature("lora", ("lora",), "model", compile_, (
    NodeExport(CLASS, "model", export_stack, upstream="model"),
    NodeExport("LoraLoader", "model", export_core, upstream="model"),
), order=0)
