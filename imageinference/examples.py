"""The example graphs shipped in workflows/ (text-to-image, image-to-image, inpainting) and their requests.

One function builds each API prompt, so the files in workflows/ and the server tests run the same graph
(the tests swap in a tiny model and a small size).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from PIL import Image, ImageDraw

from .imageio.encode import encode_image

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


def example_prompt(name: str, air: str = EXAMPLE_AIR, size: int = 512, steps: int = 20,
                   controlnet_air: str = EXAMPLE_CONTROLNET) -> dict[str, Any]:
    """The API prompt of an example graph built from this pack's nodes and core CLIPTextEncode."""
    r = example_request(name, air, size, steps, controlnet_air)
    prompt: dict[str, Any] = {
        "1": {"class_type": "ImageInferenceModelLoader", "inputs": {"model": "(typed in below)", "air": air, "vae": ""}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": r["positivePrompt"], "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": r["negativePrompt"], "clip": ["1", 1]}},
        "4": {"class_type": "ImageInferenceSampler", "inputs": {
            "model": ["1", 0], "vae": ["1", 2], "positive": ["2", 0], "negative": ["3", 0], "width": r["width"],
            "height": r["height"], "seed": r["seed"], "steps": r["steps"], "scheduler": r["scheduler"],
            "CFGScale": r["CFGScale"], "numberResults": r["numberResults"], "strength": r.get("strength", 0.8),
            "maskMargin": r.get("maskMargin", 0)}},
        "5": {"class_type": "ImageInferenceOutput", "inputs": {
            "images": ["4", 0], "outputFormat": r["outputFormat"], "outputQuality": 95, "outputType": r["outputType"],
            "ttl": 0, "includeCost": False, "seeds": ["4", 1], "taskUUID": r["taskUUID"]}},
    }
    if "inputs" in r:
        prompt["6"] = {"class_type": "ImageInferenceLoadImage",
                       "inputs": {"image": r["inputs"]["seedImage"], "role": "seedImage"}}
        prompt["4"]["inputs"]["seedImage"] = ["6", 0]
        if "maskImage" in r["inputs"]:
            prompt["7"] = {"class_type": "ImageInferenceLoadImage",
                           "inputs": {"image": r["inputs"]["maskImage"], "role": "maskImage"}}
            prompt["4"]["inputs"]["maskImage"] = ["7", 1]
    if "controlNet" in r:
        c = r["controlNet"][0]
        prompt["8"] = {"class_type": "ImageInferenceLoadImage", "inputs": {"image": c["guideImage"], "role": "guideImage"}}
        prompt["9"] = {"class_type": "ImageInferenceControlNet", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "guideImage": ["8", 0], "model": "(typed in below)",
            "air": c["model"], "weight": c["weight"], "startStep": c["startStep"], "endStep": c["endStep"],
            "startStepPercentage": -1, "endStepPercentage": -1, "controlMode": c["controlMode"]}}
        prompt["4"]["inputs"]["positive"] = ["9", 0]
        prompt["4"]["inputs"]["negative"] = ["9", 1]
    if "outpaint" in r:
        prompt["10"] = {"class_type": "ImageInferenceOutpaint", "inputs": dict(r["outpaint"])}
        prompt["4"]["inputs"]["outpaint"] = ["10", 0]
    if "hiresFix" in r:
        h = r["hiresFix"]
        prompt["11"] = {"class_type": "ImageInferenceHiresFix", "inputs": {
            "model": h["model"], "steps": h["steps"], "strength": h["strength"], "upscaleFactor": "4"}}
        prompt["4"]["inputs"]["hiresFix"] = ["11", 0]
    return prompt


NAMES = tuple(TASK_UUIDS)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
