"""Image Inference Output: save in the request's format and answer in the documented response format."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from comfy_api.latest import io, ui

from ...contract.errors import ApiError, ContractError
from ...contract.images import UUID_ANY
from ...contract.response import data_envelope
from ...contract.validate import validate_task
from ...engines.detailer.report import nothing_detected_warnings
from ...engines.imageio.deliver import STORE_SUBFOLDER, deliver
from ...engines.imageio.store import EXTENSIONS
from ...engines.imageio.tensors import to_pil
from ...engines.models.catalog import Catalog, CatalogError
from ..paths import image_store, public_base_url
from .common import CATEGORY, node_id

log = logging.getLogger("imageinference")


def parse_warnings(text: str, task_uuid: str) -> list[ApiError]:
    """Warnings passed along the graph as a JSON list of {code, message, parameter?}."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(w, dict) and "code" in w for w in items):
        raise ContractError.single("invalidWarnings", "'warnings' must be a JSON list of {code, message} objects "
                                   "(the Image Inference sampler's `warnings` output)", "warnings", "string")
    return [ApiError(str(w["code"]), str(w.get("message", "")), str(w.get("parameter", "")), task_uuid=task_uuid)
            for w in items]


def seeds_of(text: str, count: int, task_uuid: str) -> tuple[list[int | None], list[ApiError]]:
    """The seed of each image, None where the graph does not say (never a made-up number)."""
    try:
        given = [int(x) for x in json.loads(text or "[]")]
    except (ValueError, TypeError):
        raise ContractError.single("invalidSeeds", "'seeds' must be a JSON list of integers (the sampler's "
                                   "`seeds` output)", "seeds", "string") from None
    seeds: list[int | None] = [given[i] if i < len(given) else None for i in range(count)]
    missing = [i for i, seed in enumerate(seeds) if seed is None]
    if not missing:
        return seeds, []
    which = "any image" if len(missing) == count else f"image(s) {', '.join(map(str, missing))}"
    return seeds, [ApiError("unknownSeed", f"the graph does not give the seed of {which} (connect the sampler's "
                            "`seeds` output); `seed` is left out of those results", "seed", task_uuid=task_uuid)]


def json_object(text: str, parameter: str, what: str) -> dict[str, Any] | None:
    """An optional JSON object widget; anything else is the contract's error naming the input."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ContractError.single(f"invalid{parameter[0].upper()}{parameter[1:]}", f"'{parameter}' must be "
                                   f"{what}: a JSON object ({exc})", parameter, "string") from None
    if not isinstance(value, dict):
        raise ContractError.single(f"invalid{parameter[0].upper()}{parameter[1:]}", f"'{parameter}' must be "
                                   f"{what}: a JSON object, not {type(value).__name__}", parameter, "string")
    return value


def contract_warnings(request: dict[str, Any], task_uuid: str) -> list[ApiError]:
    """What the contract accepts without effect in this request (ignoredNegativePrompt, ...): the same warnings
    wherever the request came from, so every delivery path carries them."""
    try:
        return [w.with_task(task_uuid) for w in validate_task(request, Catalog.load()).warnings]
    except (ContractError, CatalogError) as exc:
        log.info("imageInference %s: the embedded request is not a valid request (%s); no contract warnings",
                 task_uuid, exc)
        return []


PART_NAMES = {"workflow": "the frontend workflow", "prompt": "the API prompt", "request": "the request"}


def left_out_warning(parts: list[str], output_format: str, task_uuid: str) -> ApiError:
    names = ", ".join(PART_NAMES.get(p, p) for p in parts)
    verb = "is" if len(parts) == 1 else "are"
    return ApiError("metadataNotEmbedded", f"{names} did not fit in {output_format}'s metadata (one EXIF block of "
                    f"64 KB) and {verb} not embedded in the files; the images are complete. Choose PNG or WEBP to "
                    "embed everything", "outputFormat", task_uuid=task_uuid)


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
                "imageDataURI or imageBase64Data; cost when includeCost (IMAGEINFERENCE_COST_PER_IMAGE, default 0). "
                "What was accepted but not done as asked, or is not known (a seed the graph does not give, LoRA keys "
                "that matched nothing, no face found), is listed in `warnings` beside `data`."
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
                io.String.Input("warnings", default="[]", optional=True, force_input=True,
                                tooltip="Warnings to pass on in the response (the sampler's `warnings` output: "
                                        "for example LoRA keys that matched nothing)."),
                io.String.Input("detections", default="", optional=True, force_input=True,
                                tooltip="The Face Detailer's `detections` output: each image in which it found "
                                        "nothing gets a `nothingDetected` warning in the response."),
                io.String.Input("watermark", default="", optional=True, force_input=True,
                                tooltip="The watermark drawn on the images (the Watermark node's `watermark` "
                                        "output): kept in each file's metadata; each response object says "
                                        "`watermarked: true`."),
                io.String.Input("request", default="", optional=True, multiline=True,
                                tooltip="The canonical request JSON, embedded in each file's metadata (the compiler "
                                        "and the Export node fill it)."),
            ],
            outputs=[io.String.Output(display_name="response")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def graph_metadata(cls) -> dict[str, Any] | None:
        """The graph as core SaveImage embeds it (prompt + the frontend's workflow), unless ComfyUI runs with
        --disable-metadata."""
        from comfy.cli_args import args

        hidden = cls.hidden
        if args.disable_metadata or hidden is None:
            return None
        return {"prompt": hidden.prompt, **(hidden.extra_pnginfo or {})}

    @classmethod
    def execute(cls, images, outputFormat: str, outputQuality: int, outputType: str, ttl: int,
                includeCost: bool, seeds: str = "[]", taskUUID: str = "", request: str = "", warnings: str = "[]",
                detections: str = "", watermark: str = "") -> io.NodeOutput:
        if ttl and outputType != "URL":
            raise ContractError.single("invalidTtl", "'ttl' only applies when outputType is 'URL'", "ttl", "integer")
        if ttl and ttl < 60:
            raise ContractError.single("invalidTtl", "'ttl' is at least 60 seconds", "ttl", "integer")
        if outputFormat == "JPG" and images.shape[-1] == 4:
            raise ContractError.single("invalidOutputFormat", "these images have transparency (alpha), which JPG "
                                       "cannot keep; use PNG or WEBP", "outputFormat", "string", ("PNG", "WEBP"))
        task_uuid = taskUUID.strip() or str(uuid.uuid4())
        if not UUID_ANY.match(task_uuid):
            raise ContractError.single("invalidTaskUUID", "'taskUUID' must be a UUID v4", "taskUUID", "string")
        seed_list, notes = seeds_of(seeds, len(images), task_uuid)
        notes = parse_warnings(warnings, task_uuid) + notes + nothing_detected_warnings(detections, task_uuid)
        for note in notes:
            log.warning("imageInference %s: %s: %s", task_uuid, note.code, note.message)
        canonical = json_object(request, "request", "the canonical request JSON (the compiler and the Export node "
                                "fill it)")
        applied = json_object(watermark, "watermark", "the Watermark node's `watermark` output")
        if canonical is not None:
            notes = contract_warnings(canonical, task_uuid) + notes
        delivered = deliver([to_pil(img) for img in images], seed_list, task_uuid, image_store(), public_base_url(),
                            outputType, outputFormat, outputQuality, ttl or None, includeCost, canonical, applied,
                            cls.graph_metadata())
        results = delivered.results
        if delivered.left_out:
            notes.append(left_out_warning(delivered.left_out, outputFormat, task_uuid))
            log.warning("imageInference %s: %s", task_uuid, notes[-1].message)
        text = json.dumps(data_envelope(results, notes))
        saved = [ui.SavedResult(f"{r.imageUUID}.{EXTENSIONS[outputFormat]}", STORE_SUBFOLDER, io.FolderType.output)
                 for r in results]
        # The frontend shows `images`; headless callers read the documented response from the history's `response`.
        return io.NodeOutput(text, ui={"images": saved, "response": [text]})
