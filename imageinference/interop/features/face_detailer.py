"""`ultralytics` (the face detailer) on the request path (pure).

Compile: the Face Detailer node (id 70) after the sampler (so after hires fix), on the request's model and VAE,
with the sampler's seeds, the request's scheduler and the default detector (runware:35@1). Its prompts are the
request's Prompt node outputs, except where `ultralytics.positivePrompt` / `negativePrompt` is given: those are
encoded by a second Prompt node (id 71) with the request's promptWeighting and clipSkip. ControlNets are not
applied to the detail pass (their guide images show the whole picture, not a face).

Export: the detailer's widgets are `ultralytics`; a detail prompt linked to another Prompt node (or CLIPTextEncode)
than the image's own is `ultralytics.positivePrompt` / `negativePrompt`. What a request cannot say is listed as
not exportable: another detector than runware:35@1, a region option (contextPadding, maxUpscale, maxRegions,
min/maxRegionSize, seedPerRegion) other than its default, another model, VAE, scheduler or seeds than the image's.
"""

from __future__ import annotations

from typing import Any

from ...engines.detailer.fields import DEFAULT_DETECTOR, NODE_CLASS, PROMPTS, REGION_OPTIONS, SETTINGS
from ...engines.samplers.schedulers import SCHEDULER_NAMES, lookup
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport, node_exports

NODE_ID = 70
PROMPT_ID = 71
DETECTIONS_OUTPUT = 2  # the node's outputs: IMAGE, masks, detections
PROMPT_CLASS = "ImageInferencePrompt"
SAMPLER_CLASS = "ImageInferenceSampler"
TEXT_NODES = (PROMPT_CLASS, "CLIPTextEncode")


def _first(g: GraphBuilder, class_type: str) -> str:
    return min((nid for nid, n in g.nodes.items() if n["class_type"] == class_type), key=int)


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    u = d.get("ultralytics")
    if u is None:
        return
    prompt_id = _first(g, PROMPT_CLASS)
    conditioning = {"positive": g.ref(prompt_id, 0), "negative": g.ref(prompt_id, 1)}
    if any(u.get(name) for _which, name, _out in PROMPTS):
        main = g.nodes[prompt_id]["inputs"]
        g.add(PROMPT_ID, PROMPT_CLASS, {
            "clip": main["clip"], "positivePrompt": u.get("positivePrompt", ""),
            "negativePrompt": u.get("negativePrompt", ""), "promptWeighting": main["promptWeighting"],
            "clipSkip": main["clipSkip"]})
        for which, name, out in PROMPTS:
            if u.get(name):
                conditioning[which] = g.ref(PROMPT_ID, out)
    sampler_id = _first(g, SAMPLER_CLASS)
    g.add(NODE_ID, NODE_CLASS, {
        "image": g.image, "model": g.model, "vae": g.vae, **conditioning, "detector": DEFAULT_DETECTOR,
        **{k: u[k] for k in SETTINGS}, "scheduler": d["scheduler"], "seed": 0, "seeds": g.ref(sampler_id, 1),
        **{k: default for k, (default, _lo, _hi) in REGION_OPTIONS.items()}})  # every widget, as the frontend sends
    g.image = g.ref(NODE_ID, 0)


# ---------------------------------------------------------------- export


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


def _image_source(ctx: ExportContext, ref: Any) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    """The node that sampled the image under `ref`: (id, node, the VAEDecode before it for core samplers)."""
    chain = node_exports()
    for _ in range(32):
        found = ctx.node(ref)
        if found is None:
            return None
        nid, node = found
        ct = node["class_type"]
        if ct == SAMPLER_CLASS:
            return nid, node, None
        if ct == "VAEDecode":
            sampler = ctx.node(node["inputs"].get("samples"))
            if sampler and sampler[1]["class_type"] in ("KSampler", "KSamplerAdvanced"):
                return sampler[0], sampler[1], node
            return None
        feature = chain.get(ct)
        if feature is None or feature.chain != "image" or not feature.upstream:
            return None
        ref = node["inputs"].get(feature.upstream)
    return None


def _text_node(ctx: ExportContext, ref: Any, which: str) -> str | None:
    """The id of the text-encoding node at the start of a conditioning chain (through ControlNets and the like)."""
    for _ in range(64):
        found = ctx.node(ref)
        if found is None:
            return None
        nid, node = found
        if node["class_type"] in TEXT_NODES:
            return nid
        inputs = node["inputs"]
        ref = next((inputs[k] for k in (which, "conditioning", "upstream") if _is_link(inputs.get(k))), None)
    return None


def _prompts(ctx: ExportContext, nid: str, node: dict[str, Any], sampler: dict[str, Any] | None,
             out: dict[str, Any]) -> None:
    inputs = node["inputs"]
    for which, name, index in PROMPTS:
        ref = inputs.get(which)
        found = ctx.node(ref)
        if found is None:
            continue
        pid, pnode = found
        main_id = _text_node(ctx, sampler["inputs"].get(which), which) if sampler else None
        if pid == main_id:
            if int(ref[1]) != index and pnode["class_type"] == PROMPT_CLASS:
                ctx.note(nid, node, f"the detail pass' {which} prompt is the image's other prompt")
            continue
        if pnode["class_type"] == PROMPT_CLASS:
            text = str(pnode["inputs"].get("positivePrompt" if int(ref[1]) == 0 else "negativePrompt", ""))
            main = ctx.node([main_id, 0]) if main_id else None
            if main and main[1]["class_type"] == PROMPT_CLASS and any(
                    pnode["inputs"].get(k) != main[1]["inputs"].get(k) for k in ("promptWeighting", "clipSkip")):
                ctx.note(pid, pnode, "the detail prompt is encoded with another promptWeighting or clipSkip than the "
                         "image's prompt")
        elif pnode["class_type"] == "CLIPTextEncode":
            text = str(pnode["inputs"].get("text", ""))
        else:
            ctx.note(nid, node, f"the detail pass' {which} conditioning is made in a way the request cannot express")
            continue
        if text:
            out[name] = text
        else:
            ctx.note(nid, node, f"an empty detail {which} prompt: a request's empty ultralytics.{name} falls back to "
                     "the image's prompt")


def _checks(ctx: ExportContext, nid: str, node: dict[str, Any],
            source: tuple[str, dict[str, Any], dict[str, Any] | None] | None) -> None:
    inputs = node["inputs"]
    if inputs.get("detector") != DEFAULT_DETECTOR:
        ctx.note(nid, node, f"detector {inputs.get('detector')!r}: a request always detects with {DEFAULT_DETECTOR} "
                 "(face_yolov8n)")
    for name, (default, _low, _high) in REGION_OPTIONS.items():
        if name in inputs and inputs[name] != default:
            ctx.note(nid, node, f"{name} {inputs[name]!r}: a request has no such field and always gets {default!r}")
    if source is None:
        ctx.note(nid, node, "the image it details is not made by a sampler the exporter knows, so its model, "
                 "scheduler and seeds cannot be checked against the request's")
        return
    sid, snode, decode = source
    si = snode["inputs"]
    scheduler = str(inputs.get("scheduler"))
    if snode["class_type"] == SAMPLER_CLASS:
        same_vae = inputs.get("vae") == si.get("vae")
        same_scheduler = scheduler == si.get("scheduler")
        seeds = inputs.get("seeds")
        same_seeds = (_is_link(seeds) and str(seeds[0]) == sid and int(seeds[1]) == 1) or (
            not _is_link(seeds) and int(si.get("seed", -1)) == int(inputs.get("seed", 0)))
    else:
        same_vae = decode is not None and inputs.get("vae") == decode["inputs"].get("vae")
        pair = (si.get("sampler_name"), si.get("scheduler"))
        same_scheduler = scheduler in SCHEDULER_NAMES and any(
            lookup(scheduler).resolve(family) == pair for family in ("eps", "flow"))
        same_seeds = not _is_link(inputs.get("seeds")) and int(inputs.get("seed", 0)) == int(
            si.get("seed", si.get("noise_seed", -1)))
    if inputs.get("model") != si.get("model"):
        ctx.note(nid, node, "the detail pass uses another model than the image; a request has one model")
    if not same_vae:
        ctx.note(nid, node, "the detail pass uses another VAE than the image; a request has one VAE")
    if not same_scheduler:
        ctx.note(nid, node, f"the detail pass' scheduler '{scheduler}' is not the image's; a request has one "
                 "scheduler")
    if not same_seeds:
        ctx.note(nid, node, "the detail pass' seeds are not the image's (link the sampler's seeds output)")


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    inputs = node["inputs"]
    out: dict[str, Any] = {k: inputs[k] for k in SETTINGS if k in inputs}
    source = _image_source(ctx, inputs.get("image"))
    _prompts(ctx, nid, node, source[1] if source else None, out)
    _checks(ctx, nid, node, source)
    ctx.req["ultralytics"] = out


FEATURE = Feature("faceDetailer", ("ultralytics",), "image", compile_,
                  (NodeExport(NODE_CLASS, "image", export, upstream="image"),), order=10)


def compile_output(d: dict[str, Any], g: GraphBuilder) -> None:
    """Output stage: the detailer's `detections` into the Output node, which warns about images with no face."""
    if d.get("ultralytics") is not None and str(NODE_ID) in g.nodes:
        g.sampler["detections"] = g.ref(NODE_ID, DETECTIONS_OUTPUT)


OUTPUT_FEATURE = Feature("faceDetailerWarnings", (), "output", compile_output)
"""Registered by a module of its own (one FEATURE per module): `from .face_detailer import OUTPUT_FEATURE as
FEATURE`. The link carries no request field, so nothing exports it."""
