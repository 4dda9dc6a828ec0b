"""Canonical `imageInference` request -> ComfyUI API prompt built from this pack's nodes (pure).

Node ids are fixed per role, so compiled graphs are stable and readable. Features whose engines this pack does
not have yet are refused with `unsupported<Field>` errors rather than silently dropped.
"""

from __future__ import annotations

import json
from typing import Any

from .cache.fields import CACHE_FIELDS, WINDOW_FIELDS
from .catalog import TYPED_IN
from .schema.errors import ApiError, ContractError, code_for
from .schema.validate import validate_task

# canonical fields the compiled graph carries; everything else must be absent or at its default
COMPILED = {
    "taskType", "taskUUID", "outputType", "outputFormat", "outputQuality", "ttl", "includeCost", "numberResults",
    "deliveryMethod", "model", "positivePrompt", "negativePrompt", "width", "height", "seed", "steps", "scheduler",
    "CFGScale", "clipSkip", "promptWeighting", "strength", "maskMargin", "vae", "inputs", "outpaint", "lora",
    "controlNet", "hiresFix", "acceleratorOptions",
}
NOT_YET = {
    "ipAdapters": "IP-Adapters", "pulid": "PuLID", "ultralytics": "the face detailer", "layerDiffuse": "LayerDiffuse",
    "refiner": "the SDXL refiner", "photoMaker": "PhotoMaker", "embeddings": "textual-inversion embeddings",
    "acePlusPlus": "ACE++", "watermark": "watermarks", "safety": "content safety checks",
    "webhookURL": "webhook delivery", "uploadEndpoint": "upload delivery", "resolution": "`resolution` sizing",
    "trueCFGScale": "true CFG", "settings": "model settings", "providerSettings": "provider settings",
    "acceleration": "acceleration presets", "upscaleFactor": "top-level upscaleFactor",
}

NODE = {"loader": "1", "lora": "2", "prompt": "3", "sampler": "4", "output": "5", "seed": "6", "mask": "7",
        "outpaint": "10", "hires": "11", "cache": "12"}
CONTROLNET_BASE = 20  # controlNet[i] -> guide image node 20+2i, apply node 21+2i


def unsupported(d: dict[str, Any]) -> list[ApiError]:
    errors = []
    for field, what in NOT_YET.items():
        value = d.get(field)
        if value is None or value is False or (field == "safety" and not value.get("checkContent")
                                               and value.get("mode") in (None, "none")):
            continue
        errors.append(ApiError(code_for("unsupported", field),
                               f"{what} ('{field}') has no local engine in this pack yet", field))
    acc = d.get("acceleratorOptions") or {}
    if acc.get("deepCache"):
        errors.append(ApiError("unsupportedAcceleratorOptions", "DeepCache is for UNet models and has no local "
                               "engine in this pack yet; FLUX and SD3 have teaCache, fbCache and dbCache",
                               "acceleratorOptions.deepCache"))
    chosen = [k for k in CACHE_FIELDS if acc.get(k)]
    if len(chosen) > 1:
        errors.append(ApiError("conflictingAcceleratorOptions", f"choose one step cache; the request enables "
                               f"{', '.join(chosen)}", f"acceleratorOptions.{chosen[1]}"))
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
    if "acceleratorOptions" in canonical and not any(canonical["acceleratorOptions"].get(k) for k in CACHE_FIELDS):
        del canonical["acceleratorOptions"]  # no cache switched on: the options do nothing
    d = canonical
    model_ref = [NODE["loader"], 0]
    clip_ref = [NODE["loader"], 1]
    prompt: dict[str, Any] = {
        NODE["loader"]: {"class_type": "ImageInferenceModelLoader",
                         "inputs": {"model": TYPED_IN, "air": d["model"], "vae": d.get("vae", "")}},
    }
    if d.get("lora"):
        prompt[NODE["lora"]] = {"class_type": "ImageInferenceLoraStack", "inputs": {
            "model": model_ref, "clip": clip_ref, "lora": json.dumps(d["lora"])}}
        model_ref, clip_ref = [NODE["lora"], 0], [NODE["lora"], 1]
    acc = d.get("acceleratorOptions") or {}
    for switch, (class_type, threshold) in CACHE_FIELDS.items():
        if acc.get(switch):
            cache_inputs: dict[str, Any] = {"model": model_ref, threshold: acc[threshold],
                                            "cacheMaxConsecutiveSteps": acc["cacheMaxConsecutiveSteps"]}
            cache_inputs.update({k: acc.get(k, -1) for k in WINDOW_FIELDS})
            if switch == "dbCache":
                cache_inputs["dbCacheSkipInterval"] = acc["dbCacheSkipInterval"]
            prompt[NODE["cache"]] = {"class_type": class_type, "inputs": cache_inputs}
            model_ref = [NODE["cache"], 0]
    prompt[NODE["prompt"]] = {"class_type": "ImageInferencePrompt", "inputs": {
        "clip": clip_ref, "positivePrompt": d["positivePrompt"], "negativePrompt": d.get("negativePrompt", ""),
        "promptWeighting": d.get("promptWeighting", "none"), "clipSkip": d.get("clipSkip", -1)}}
    positive, negative = [NODE["prompt"], 0], [NODE["prompt"], 1]
    for i, cn in enumerate(d.get("controlNet") or []):
        guide, apply = str(CONTROLNET_BASE + 2 * i), str(CONTROLNET_BASE + 2 * i + 1)
        prompt[guide] = {"class_type": "ImageInferenceLoadImage", "inputs": {"image": cn["guideImage"],
                                                                             "role": "guideImage"}}
        prompt[apply] = {"class_type": "ImageInferenceControlNet", "inputs": {
            "positive": positive, "negative": negative, "guideImage": [guide, 0], "model": TYPED_IN, "air": cn["model"],
            "weight": cn["weight"], "startStep": cn.get("startStep", -1), "endStep": cn.get("endStep", -1),
            "startStepPercentage": cn.get("startStepPercentage", -1),
            "endStepPercentage": cn.get("endStepPercentage", -1), "controlMode": cn["controlMode"],
            "vae": [NODE["loader"], 2]}}
        positive, negative = [apply, 0], [apply, 1]
    sampler: dict[str, Any] = {
        "model": model_ref, "vae": [NODE["loader"], 2], "positive": positive, "negative": negative,
        "width": d["width"], "height": d["height"], "seed": d.get("seed", -1), "steps": d["steps"],
        "scheduler": d["scheduler"], "CFGScale": d["CFGScale"], "numberResults": d["numberResults"],
        "strength": d.get("strength", 0.8), "maskMargin": d.get("maskMargin", 0)}
    inputs = d.get("inputs") or {}
    if inputs.get("seedImage"):
        prompt[NODE["seed"]] = {"class_type": "ImageInferenceLoadImage",
                                "inputs": {"image": inputs["seedImage"], "role": "seedImage"}}
        sampler["seedImage"] = [NODE["seed"], 0]
    if inputs.get("maskImage"):
        prompt[NODE["mask"]] = {"class_type": "ImageInferenceLoadImage",
                                "inputs": {"image": inputs["maskImage"], "role": "maskImage"}}
        sampler["maskImage"] = [NODE["mask"], 1]
    if d.get("outpaint"):
        prompt[NODE["outpaint"]] = {"class_type": "ImageInferenceOutpaint", "inputs": dict(d["outpaint"])}
        sampler["outpaint"] = [NODE["outpaint"], 0]
    if d.get("hiresFix") is not None:
        h = d["hiresFix"]
        prompt[NODE["hires"]] = {"class_type": "ImageInferenceHiresFix", "inputs": {
            "model": "true (defaults)" if h is True else h["model"],
            "steps": 0 if h is True else h.get("steps", 0),
            "strength": -1.0 if h is True else h.get("strength", -1.0), "upscaleFactor": "4"}}
        sampler["hiresFix"] = [NODE["hires"], 0]
    prompt[NODE["sampler"]] = {"class_type": "ImageInferenceSampler", "inputs": sampler}
    prompt[NODE["output"]] = {"class_type": "ImageInferenceOutput", "inputs": {
        "images": [NODE["sampler"], 0], "outputFormat": d["outputFormat"], "outputQuality": d["outputQuality"],
        "outputType": d["outputType"], "ttl": d.get("ttl", 0), "includeCost": d["includeCost"],
        "seeds": [NODE["sampler"], 1], "taskUUID": d["taskUUID"], "request": json.dumps(canonical)}}
    return canonical, prompt
