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
TASK_UUIDS = {"txt2img": "3f1c2a4e-8b7d-4c6e-9a1f-2b3c4d5e6f70", "img2img": "7a2b3c4d-5e6f-4a8b-9c0d-1e2f3a4b5c6d",
              "inpaint": "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}
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


def mask_image(size: int = 64) -> str:
    """White (edit) over the tower's top half, black elsewhere."""
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).rectangle([size * 3 // 8, size // 8, size * 5 // 8, size * 7 // 16], fill=255)
    return _data_uri(img)


def example_request(name: str, air: str = EXAMPLE_AIR, size: int = 512, steps: int = 20) -> dict[str, Any]:
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
    return req


def example_prompt(name: str, air: str = EXAMPLE_AIR, size: int = 512, steps: int = 20) -> dict[str, Any]:
    """The API prompt of an example graph built from this pack's nodes and core CLIPTextEncode."""
    r = example_request(name, air, size, steps)
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
    return prompt


NAMES = tuple(TASK_UUIDS)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
