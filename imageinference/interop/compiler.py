"""Canonical `imageInference` request -> ComfyUI API prompt built from this pack's nodes (pure).

Node ids are fixed per role, so compiled graphs are stable and readable. Features whose engines this pack does
not have yet are refused with `unsupported<Field>` errors rather than silently dropped.
"""

from __future__ import annotations

import json
from typing import Any

from ..contract.errors import ApiError, ContractError, code_for
from ..contract.validate import validate_task
from ..engines.cache.fields import CACHE_FIELDS
from ..engines.models.catalog import TYPED_IN
from .graph import GraphBuilder
from .registry import handled_fields, run_stage

NOT_YET = {
    "photoMaker": "PhotoMaker",
    "acePlusPlus": "ACE++", "safety": "content safety checks", "resolution": "`resolution` sizing",
    "settings": "model settings", "providerSettings": "provider settings",
    "acceleration": "acceleration presets", "upscaleFactor": "top-level upscaleFactor",
}
DELIVERY = ("webhookURL", "uploadEndpoint")
"""Delivery, not a graph concept: the imageInference endpoint (/imageinference/v1) removes them before compiling
and delivers itself; anything else that compiles a request with them is told so."""

NODE = {"loader": "1", "prompt": "3", "sampler": "4", "output": "5", "seed": "6", "mask": "7"}
"""The core's node ids; each feature of interop/features/ names its own."""
SWITCHES = (*CACHE_FIELDS, "deepCache")


def unsupported(d: dict[str, Any]) -> list[ApiError]:
    errors = []
    handled = handled_fields()
    for field, what in NOT_YET.items():
        value = d.get(field)
        if field in handled:
            continue
        if value is None or value is False or (field == "safety" and not value.get("checkContent")
                                               and value.get("mode") in (None, "none")):
            continue
        errors.append(ApiError(code_for("unsupported", field),
                               f"{what} ('{field}') has no local engine in this pack yet", field))
    for field in DELIVERY:
        if d.get(field) is not None:
            errors.append(ApiError(code_for("unsupported", field), f"'{field}' is delivery, which the imageInference "
                                   "endpoint (/imageinference/v1 on ComfyUI's port) does; a graph or the `run` command "
                                   "cannot deliver", field))
    acc = d.get("acceleratorOptions") or {}
    chosen = [k for k in SWITCHES if acc.get(k)]
    if len(chosen) > 1:
        errors.append(ApiError("conflictingAcceleratorOptions", f"choose one step cache; the request enables "
                               f"{', '.join(chosen)}", f"acceleratorOptions.{chosen[1]}"))
    for dim in ("width", "height"):
        if d.get(dim) is None:
            errors.append(ApiError(code_for("missing", dim), f"'{dim}' is needed to run locally: sizing from "
                                   "reference images has no local engine yet", dim, "integer"))
    inputs = d.get("inputs") or {}
    if inputs.get("referenceImages"):
        errors.append(ApiError("unsupportedReferenceImages", "reference images have no local engine yet",
                               "inputs.referenceImages"))
    return errors


def compile_request(raw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(canonical request, API prompt). Raises ContractError for invalid or not yet supported requests."""
    canonical = validate_task(raw).to_json()
    errors = unsupported(canonical)
    if errors:
        raise ContractError([e.with_task(canonical["taskUUID"]) for e in errors])
    if "acceleratorOptions" in canonical and not any(canonical["acceleratorOptions"].get(k) for k in SWITCHES):
        del canonical["acceleratorOptions"]  # no cache switched on: the options do nothing
    d = canonical
    g = GraphBuilder()
    g.add(NODE["loader"], "ImageInferenceModelLoader", {"model": TYPED_IN, "air": d["model"], "vae": d.get("vae", "")})
    g.model, g.clip, g.vae = g.ref(NODE["loader"], 0), g.ref(NODE["loader"], 1), g.ref(NODE["loader"], 2)
    run_stage("model", d, g)  # LoRA stack first, step caches last
    run_stage("clip", d, g)
    g.add(NODE["prompt"], "ImageInferencePrompt", {
        "clip": g.clip, "positivePrompt": d["positivePrompt"], "negativePrompt": d.get("negativePrompt", ""),
        "promptWeighting": d.get("promptWeighting", "none"), "clipSkip": d.get("clipSkip", -1)})
    g.positive, g.negative = g.ref(NODE["prompt"], 0), g.ref(NODE["prompt"], 1)
    run_stage("conditioning", d, g)  # ControlNets first
    g.sampler = {
        "model": g.model, "vae": g.vae, "positive": g.positive, "negative": g.negative,
        "width": d["width"], "height": d["height"], "seed": d.get("seed", -1), "steps": d["steps"],
        "scheduler": d["scheduler"], "CFGScale": d["CFGScale"], "numberResults": d["numberResults"],
        "strength": d.get("strength", 0.8), "maskMargin": d.get("maskMargin", 0),
        "trueCFGScale": d.get("trueCFGScale", -1.0)}
    inputs = d.get("inputs") or {}
    if inputs.get("seedImage"):
        g.add(NODE["seed"], "ImageInferenceLoadImage", {"image": inputs["seedImage"], "role": "seedImage"})
        g.sampler["seedImage"] = g.ref(NODE["seed"], 0)
    if inputs.get("maskImage"):
        g.add(NODE["mask"], "ImageInferenceLoadImage", {"image": inputs["maskImage"], "role": "maskImage"})
        g.sampler["maskImage"] = g.ref(NODE["mask"], 1)
    run_stage("sampler", d, g)  # outpaint, hires fix, refiner, true CFG
    g.add(NODE["sampler"], "ImageInferenceSampler", g.sampler)
    g.image = g.ref(NODE["sampler"], 0)
    run_stage("image", d, g)
    output = g.add(NODE["output"], "ImageInferenceOutput", {
        "images": g.image, "outputFormat": d["outputFormat"], "outputQuality": d["outputQuality"],
        "outputType": d["outputType"], "ttl": d.get("ttl", 0), "includeCost": d["includeCost"],
        "seeds": g.ref(NODE["sampler"], 1), "warnings": g.ref(NODE["sampler"], 3), "taskUUID": d["taskUUID"],
        "request": json.dumps(canonical)})
    g.sampler = g.nodes[output]["inputs"]  # the output stage edits the output node's inputs
    run_stage("output", d, g)
    return canonical, g.nodes
