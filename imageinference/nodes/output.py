"""Image Inference Output: save in the request's format and answer in the documented response format."""

from __future__ import annotations

import json
import uuid

from comfy_api.latest import io, ui

from ..comfy_paths import image_store, public_base_url
from ..imageio.deliver import STORE_SUBFOLDER, deliver
from ..imageio.store import EXTENSIONS
from ..imageio.tensors import to_pil
from ..schema.errors import ContractError
from ..schema.images import UUID_ANY
from ..schema.response import data_envelope
from .common import CATEGORY, node_id


class ImageInferenceOutput(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Output"),
            display_name="Image Inference Output (imageInference)",
            category=CATEGORY,
            description=(
                "Saves every image as <imageUUID>.<ext> (JPG/PNG/WEBP, with the request and seed in the file's "
                "metadata) in the output folder's imageinference/ subfolder, and returns the documented response "
                "{\"data\": [...]}: one object per image with taskUUID, imageUUID, seed and imageURL, "
                "imageDataURI or imageBase64Data; cost when includeCost (IMAGEINFERENCE_COST_PER_IMAGE, default 0)."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The finished images."),
                io.Combo.Input("outputFormat", options=["JPG", "PNG", "WEBP"], default="JPG",
                               tooltip="imageInference `outputFormat`."),
                io.Int.Input("outputQuality", default=95, min=20, max=99,
                             tooltip="imageInference `outputQuality` (JPG and WEBP)."),
                io.Combo.Input("outputType", options=["URL", "dataURI", "base64Data"], default="URL",
                               tooltip="imageInference `outputType`: what each response object carries."),
                io.Int.Input("ttl", default=0, min=0, max=10**9,
                             tooltip="imageInference `ttl` in seconds (60 or more; 0 = keep). Only with outputType URL."),
                io.Boolean.Input("includeCost", default=False, tooltip="imageInference `includeCost`."),
                io.String.Input("seeds", default="[]", optional=True, force_input=True,
                                tooltip="Seeds of the images (the sampler's `seeds` output)."),
                io.String.Input("taskUUID", default="", optional=True,
                                tooltip="imageInference `taskUUID`; a new UUID v4 when empty."),
                io.String.Input("request", default="", optional=True, multiline=True,
                                tooltip="The canonical request JSON, embedded in each file's metadata (the compiler "
                                        "and the Export node fill it)."),
            ],
            outputs=[io.String.Output(display_name="response")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, outputFormat: str, outputQuality: int, outputType: str, ttl: int,
                includeCost: bool, seeds: str = "[]", taskUUID: str = "", request: str = "") -> io.NodeOutput:
        if ttl and outputType != "URL":
            raise ContractError.single("invalidTtl", "'ttl' only applies when outputType is 'URL'", "ttl", "integer")
        if ttl and ttl < 60:
            raise ContractError.single("invalidTtl", "'ttl' is at least 60 seconds", "ttl", "integer")
        task_uuid = taskUUID.strip() or str(uuid.uuid4())
        if not UUID_ANY.match(task_uuid):
            raise ContractError.single("invalidTaskUUID", "'taskUUID' must be a UUID v4", "taskUUID", "string")
        seed_list = [int(s) for s in json.loads(seeds or "[]")] or [0]
        canonical = json.loads(request) if request.strip() else None
        results = deliver([to_pil(img) for img in images], seed_list, task_uuid, image_store(), public_base_url(),
                          outputType, outputFormat, outputQuality, ttl or None, includeCost, canonical)
        text = json.dumps(data_envelope(results))
        saved = [ui.SavedResult(f"{r.imageUUID}.{EXTENSIONS[outputFormat]}", STORE_SUBFOLDER, io.FolderType.output)
                 for r in results]
        # The frontend shows `images`; headless callers read the documented response from the history's `response`.
        return io.NodeOutput(text, ui={"images": saved, "response": [text]})
