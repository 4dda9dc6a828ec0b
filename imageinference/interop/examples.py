"""The example requests shipped in workflows/requests/ (their graphs are compiled from them by workflows/build.py).

The SD1.5 examples show each feature on a common community model; the FLUX ones take one feature each from the
Juggernaut Pro Flux seed page. Tests build the same requests with a tiny model and a small size.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from PIL import Image, ImageDraw

from ..engines.imageio.encode import encode_image

EXAMPLE_AIR = "civitai:4384@128713"  # DreamShaper 8 (SD1.5), in the built-in catalog
EXAMPLE_CONTROLNET = "civitai:38784@44716"  # SD1.5 canny ControlNet, in the built-in catalog
OUTPAINT_SIDE = 64
TASK_UUIDS = {"txt2img": "3f1c2a4e-8b7d-4c6e-9a1f-2b3c4d5e6f70", "img2img": "7a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
              "inpaint": "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", "controlnet": "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
              "outpaint": "2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a", "hiresfix": "3e4f5a6b-7c8d-4e9f-8a1b-2c3d4e5f6a7b"}
PROMPT = "a lighthouse on a rocky coast at dusk, warm light, detailed"
NEGATIVE = "blurry, lowres, watermark"


def _data_uri(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_image(img, "PNG")).decode("ascii")


def seed_image(size: int = 64) -> str:
    """A small deterministic picture (sky, sea, a tower) as a PNG data URI."""
    img = Image.new("RGB", (size, size), (90, 140, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, size * 5 // 8, size, size], fill=(30, 70, 110))
    draw.rectangle([size * 7 // 16, size // 4, size * 9 // 16, size * 5 // 8], fill=(230, 230, 220))
    return _data_uri(img)


def edge_map(size: int = 64) -> str:
    """A canny-like guide: white outlines of the tower and the horizon on black."""
    img = Image.new("RGB", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.line([0, size * 5 // 8, size, size * 5 // 8], fill=(255, 255, 255))
    draw.rectangle([size * 7 // 16, size // 4, size * 9 // 16, size * 5 // 8], outline=(255, 255, 255))
    return _data_uri(img)


def mask_image(size: int = 64) -> str:
    """White (edit) over the tower's top half, black elsewhere."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).rectangle([size * 3 // 8, size // 8, size * 5 // 8, size * 7 // 16], fill=255)
    return _data_uri(img)


def example_request(name: str, air: str = EXAMPLE_AIR, size: int = 512, steps: int = 20,
                    controlnet_air: str = EXAMPLE_CONTROLNET) -> dict[str, Any]:
    req: dict[str, Any] = {
        "taskType": "imageInference", "taskUUID": TASK_UUIDS[name], "model": air, "positivePrompt": PROMPT,
        "negativePrompt": NEGATIVE, "width": size, "height": size, "seed": 42, "steps": steps,
        "scheduler": "DPM++ 2M Karras", "CFGScale": 7.0, "numberResults": 1, "outputFormat": "PNG",
        "outputType": "URL",
    }
    if name in ("img2img", "inpaint"):
        req["inputs"] = {"seedImage": seed_image()}
        req["strength"] = 0.6 if name == "img2img" else 1.0
    if name == "inpaint":
        req["inputs"]["maskImage"] = mask_image()
        req["maskMargin"] = 32
    if name == "controlnet":
        req["controlNet"] = [{"model": controlnet_air, "guideImage": edge_map(), "weight": 0.8, "startStep": 0,
                              "endStep": max(1, steps // 2), "controlMode": "balanced"}]
    if name == "outpaint":
        req["inputs"] = {"seedImage": seed_image(size - OUTPAINT_SIDE)}
        req["strength"] = 1.0
        req["outpaint"] = {"top": 0, "right": OUTPAINT_SIDE, "bottom": OUTPAINT_SIDE, "left": 0, "blur": 16}
    if name == "hiresfix":
        req["hiresFix"] = {"model": "runware:504@1", "steps": max(1, steps // 2), "strength": 0.5}
    return req


NAMES = tuple(TASK_UUIDS)
FLUX_AIR = "rundiffusion:130@100"
FLUX_CONTROLNET = "runware:25@1"  # FLUX.1 dev canny


def flux_request(feature: str, size: int = 1024, steps: int = 28, air: str = FLUX_AIR,
                 controlnet_air: str = FLUX_CONTROLNET) -> dict[str, Any]:
    """One request per FLUX seed-page feature that has a local engine."""
    uuids = {"lora": "4f5a6b7c-8d9e-4f0a-9b1c-2d3e4f5a6b7c", "controlnet": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d",
             "img2img": "6b7c8d9e-0f1a-4b2c-9d3e-4f5a6b7c8d9e", "inpaint": "7c8d9e0f-1a2b-4c3d-8e4f-5a6b7c8d9e0f",
             "outpaint": "8d9e0f1a-2b3c-4d4e-9f5a-6b7c8d9e0f1a", "hiresfix": "9e0f1a2b-3c4d-4e5f-8a6b-7c8d9e0f1a2b",
             "prompt-weighting": "0f1a2b3c-4d5e-4f6a-9b7c-8d9e0f1a2b3c",
             "teacache": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "fbcache": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
             "dbcache": "3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f"}
    req: dict[str, Any] = {
        "taskType": "imageInference", "taskUUID": uuids[feature], "model": air,
        "positivePrompt": "a lighthouse on a rocky coast at dusk, warm light, detailed", "width": size,
        "height": size, "seed": 7, "steps": steps, "CFGScale": 3.5, "scheduler": "FlowMatchEulerDiscreteScheduler",
        "outputFormat": "PNG"}
    if feature == "lora":
        req["lora"] = [{"model": "civitai:132942@146296", "weight": 0.8}]
    if feature == "controlnet":
        req["controlNet"] = [{"model": controlnet_air, "guideImage": edge_map(), "weight": 0.7,
                              "startStepPercentage": 0, "endStepPercentage": 50, "controlMode": "controlnet"}]
    if feature in ("img2img", "inpaint"):
        req["inputs"] = {"seedImage": seed_image()}
        req["strength"] = 0.85
    if feature == "inpaint":
        req["inputs"]["maskImage"] = mask_image()
        req["maskMargin"] = 64
    if feature == "outpaint":
        req["inputs"] = {"seedImage": seed_image(size - OUTPAINT_SIDE)}
        req["strength"] = 1.0
        req["outpaint"] = {"top": OUTPAINT_SIDE, "right": 0, "bottom": 0, "left": 0, "blur": 16}
    if feature == "hiresfix":
        req["hiresFix"] = {"model": "runware:esrgan@ultrasharp", "steps": 15, "strength": 0.6}
    if feature == "prompt-weighting":
        req["promptWeighting"] = "sdEmbeds"
        req["positivePrompt"] = "a (lighthouse:1.3) on a rocky coast at dusk, [fog], warm light"
    if feature == "teacache":
        req["acceleratorOptions"] = {"teaCache": True, "teaCacheDistance": 0.5}
    if feature == "fbcache":
        req["acceleratorOptions"] = {"fbCache": True, "fbCacheThreshold": 0.12, "cacheStartStepPercentage": 10,
                                     "cacheEndStepPercentage": 90}
    if feature == "dbcache":
        req["acceleratorOptions"] = {"dbCache": True, "dbCacheThreshold": 0.2, "dbCacheSkipInterval": 4}
    return req


FLUX_FEATURES = ("lora", "controlnet", "img2img", "inpaint", "outpaint", "hiresfix", "prompt-weighting", "teacache",
                 "fbcache", "dbcache")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
