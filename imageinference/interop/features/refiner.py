"""`refiner` (SDXL) <-> the refiner's loader, its Prompt node and the Refiner node linked into the sampler (pure).

The refiner has its own text encoder, so the request's prompts are encoded twice: by the base model's CLIP (the
core Prompt node) and by the refiner's (a second Prompt node with the same inputs, after an Embeddings node when
the request has embeddings). Node ids: loader 100, Prompt 101, Refiner 102, Embeddings 103. On export, the
refiner's prompts and embeddings must be the base's (a request has one of each); anything else is listed as not
exportable.
"""

from __future__ import annotations

import json
from typing import Any

from ...engines.models.catalog import TYPED_IN, chosen_air
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport
from .embeddings import CLASS as EMBEDDINGS
from .embeddings import node_inputs as embeddings_inputs

LOADER, PROMPT, NODE, EMBEDDINGS_NODE = 100, 101, 102, 103
CLASS = "ImageInferenceRefiner"
PROMPT_CLASS = "ImageInferencePrompt"
PROMPT_FIELDS = (("positivePrompt", ""), ("negativePrompt", ""), ("promptWeighting", "none"), ("clipSkip", -1))
START_FIELDS = ("startStep", "startStepPercentage")


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    r = d.get("refiner")
    if not r:
        return
    g.add(LOADER, "ImageInferenceModelLoader", {"model": TYPED_IN, "air": r["model"], "vae": ""})
    clip = g.ref(LOADER, 1)
    if d.get("embeddings"):
        g.add(EMBEDDINGS_NODE, EMBEDDINGS, embeddings_inputs(d, clip))
        clip = g.ref(EMBEDDINGS_NODE, 0)
    base_prompt = next(n for n in g.nodes.values() if n["class_type"] == PROMPT_CLASS)
    g.add(PROMPT, PROMPT_CLASS, dict(base_prompt["inputs"], clip=clip))
    g.add(NODE, CLASS, {"model": g.ref(LOADER, 0), "positive": g.ref(PROMPT, 0), "negative": g.ref(PROMPT, 1),
                        **{k: r.get(k, -1) for k in START_FIELDS}})
    g.sampler["refiner"] = g.ref(NODE, 0)


def _model_air(ctx: ExportContext, ref: Any) -> str | None:
    found = ctx.node(ref)
    if found is None:
        return None
    lid, loader = found
    i = loader["inputs"]
    if loader["class_type"] == "ImageInferenceModelLoader":
        if (i.get("vae") or "").strip():
            ctx.note(lid, loader, "a VAE for the refiner has no request field (the base model's VAE decodes)")
        return chosen_air(i.get("model"), i.get("air"))
    if loader["class_type"] == "CheckpointLoaderSimple":
        return ctx.air_for_file("checkpoints", str(i.get("ckpt_name")), lid, loader)
    ctx.note(lid, loader, "loads the refiner in a way the request cannot express")
    return None


def _prompts(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    """Visit the refiner's Prompt node and its CLIP chain; note where they differ from the base's."""
    seen: set[str] = set()
    for side in ("positive", "negative"):
        found = ctx.node(node["inputs"].get(side))
        if found is None or found[0] in seen:
            continue
        pid, prompt = found
        seen.add(pid)
        if prompt["class_type"] != PROMPT_CLASS:
            ctx.note(pid, prompt, "encodes the refiner's prompt in a way the request cannot express")
            continue
        base = {"positivePrompt": ctx.req.get("positivePrompt", ""), "negativePrompt": ctx.req.get("negativePrompt", ""),
                "promptWeighting": ctx.req.get("promptWeighting", "none"), "clipSkip": ctx.req.get("clipSkip", -1)}
        own = {k: prompt["inputs"].get(k, default) for k, default in PROMPT_FIELDS}
        if int(own["clipSkip"]) < 0:
            own["clipSkip"] = -1
        if own != base:
            ctx.note(pid, prompt, "the refiner's prompts differ from the base model's; a request has one prompt")
        clip = ctx.node(prompt["inputs"].get("clip"))
        while clip is not None and clip[1]["class_type"] == EMBEDDINGS:
            cid, emb = clip
            try:
                mine = json.loads(emb["inputs"].get("embeddings") or "[]")
            except json.JSONDecodeError:
                mine = None
            if mine != ctx.req.get("embeddings", []):
                ctx.note(cid, emb, "the refiner's embeddings differ from the base model's; a request has one list")
            clip = ctx.node(emb["inputs"].get("clip"))


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    i = node["inputs"]
    air = _model_air(ctx, i.get("model"))
    if not air:
        ctx.note(nid, node, "the refiner model has no AIR")
        return
    refiner: dict[str, Any] = {"model": air}
    refiner.update({k: int(i[k]) for k in START_FIELDS if int(i.get(k, -1)) >= 0})
    ctx.req["refiner"] = refiner
    _prompts(ctx, nid, node)


FEATURE = Feature("refiner", ("refiner",), "sampler", compile_, (NodeExport(CLASS, "option", export),))
