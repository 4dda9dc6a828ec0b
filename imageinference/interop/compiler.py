"""Canonical `imageInference` request -> ComfyUI API prompt built from this pack's nodes (pure).

Node ids are fixed per role, so compiled graphs are stable and readable. Features whose engines this pack does
not have yet are refused with `unsupported<Field>` errors rather than silently dropped.
"""

from __future__ import annotations

import json
from typing import Any

from ..contract.errors import ApiError, ContractError, code_for
from ..contract.validate import validate_task
from ..engines.cache.fields import CACHE_FIELDS, WINDOW_FIELDS
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

NODE = {"loader": "1", "lora": "2", "prompt": "3", "sampler": "4", "output": "5", "seed": "6", "mask": "7",
        "outpaint": "10", "hires": "11", "cache": "12"}
CONTROLNET_BASE = 20  # controlNet[i] -> guide image node 20+2i, apply node 21+2i
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
    if d.get("lora"):
        g.add(NODE["lora"], "ImageInferenceLoraStack", {"model": g.model, "clip": g.clip, "lora": json.dumps(d["lora"])})
        g.model, g.clip = g.ref(NODE["lora"], 0), g.ref(NODE["lora"], 1)
    run_stage("model", d, g)
    acc = d.get("acceleratorOptions") or {}
    for switch, (class_type, threshold) in CACHE_FIELDS.items():
        if acc.get(switch):
            cache_inputs: dict[str, Any] = {"model": g.model, threshold: acc[threshold],
                                            "cacheMaxConsecutiveSteps": acc["cacheMaxConsecutiveSteps"]}
            cache_inputs.update({k: acc.get(k, -1) for k in WINDOW_FIELDS})
            if switch == "dbCache":
                cache_inputs["dbCacheSkipInterval"] = acc["dbCacheSkipInterval"]
            g.add(NODE["cache"], class_type, cache_inputs)
            g.model = g.ref(NODE["cache"], 0)
    run_stage("clip", d, g)
    g.add(NODE["prompt"], "ImageInferencePrompt", {
        "clip": g.clip, "positivePrompt": d["positivePrompt"], "negativePrompt": d.get("negativePrompt", ""),
        "promptWeighting": d.get("promptWeighting", "none"), "clipSkip": d.get("clipSkip", -1)})
    g.positive, g.negative = g.ref(NODE["prompt"], 0), g.ref(NODE["prompt"], 1)
    for i, cn in enumerate(d.get("controlNet") or []):
        guide, apply = CONTROLNET_BASE + 2 * i, CONTROLNET_BASE + 2 * i + 1
        g.add(guide, "ImageInferenceLoadImage", {"image": cn["guideImage"], "role": "guideImage"})
        g.add(apply, "ImageInferenceControlNet", {
            "positive": g.positive, "negative": g.negative, "guideImage": g.ref(guide), "model": TYPED_IN,
            "air": cn["model"], "weight": cn["weight"], "startStep": cn.get("startStep", -1),
            "endStep": cn.get("endStep", -1), "startStepPercentage": cn.get("startStepPercentage", -1),
            "endStepPercentage": cn.get("endStepPercentage", -1), "controlMode": cn["controlMode"], "vae": g.vae})
        g.positive, g.negative = g.ref(apply, 0), g.ref(apply, 1)
    run_stage("conditioning", d, g)
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
    if d.get("outpaint"):
        g.add(NODE["outpaint"], "ImageInferenceOutpaint", dict(d["outpaint"]))
        g.sampler["outpaint"] = g.ref(NODE["outpaint"], 0)
    if d.get("hiresFix") is not None:
        h = d["hiresFix"]
        g.add(NODE["hires"], "ImageInferenceHiresFix", {
            "model": "true (defaults)" if h is True else h["model"],
            "steps": 0 if h is True else h.get("steps", 0),
            "strength": -1.0 if h is True else h.get("strength", -1.0), "upscaleFactor": "4"})
        g.sampler["hiresFix"] = g.ref(NODE["hires"], 0)
    run_stage("sampler", d, g)
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
