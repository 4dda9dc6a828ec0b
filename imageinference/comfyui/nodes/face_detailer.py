"""Face Detailer: the request's `ultralytics` (detect faces with a YOLO detector, re-sample each one)."""

from __future__ import annotations

import json

from comfy_api.latest import io

from ...contract.errors import ContractError
from ...engines.detailer.detector import detector_files, load_detector, resolve_detector
from ...engines.detailer.engine import detail
from ...engines.detailer.fields import DEFAULT_DETECTOR, NODE_CLASS, REGION_OPTIONS
from ...engines.detailer.report import detections_json
from ...engines.detailer.settings import detailer_settings
from ...engines.models.catalog import airs_of_kind
from ...engines.samplers.schedulers import SCHEDULER_NAMES
from ...engines.samplers.seeds import SEED_MAX, result_seeds
from .common import CATEGORY, NODE_PREFIX


def detector_options() -> list[str]:
    airs = [a for a in airs_of_kind("detector") if a != DEFAULT_DETECTOR]
    try:
        files = detector_files()
    except OSError:
        files = []
    return [DEFAULT_DETECTOR, *airs, *files]


def parse_seeds(seeds: str | None, seed: int, batch: int) -> list[int]:
    """The seeds of a batch: the sampler's `seeds` JSON when linked, else seed + i."""
    if seeds is None or not seeds.strip():
        return result_seeds(seed, batch)
    try:
        values = [int(v) for v in json.loads(seeds)]
    except (ValueError, TypeError):
        raise ContractError.single("invalidSeeds", "'seeds' must be the sampler's JSON list of seeds", "seed",
                                   "string") from None
    if len(values) != batch:
        raise ContractError.single("invalidSeeds", f"'seeds' lists {len(values)} seeds for {batch} images", "seed",
                                   "string")
    return values


_REGION_TOOLTIPS = {
    "contextPadding": "Pixels of the picture around the face's mask (grown by maskPadding + maskBlur) that the crop "
                      "also shows the model (ADetailer's inpaint-only-masked padding). Not a request field: requests "
                      "get the default.",
    "maxUpscale": "The crop grows (more context) until it is scaled at most this much to reach inpaintSize; on a "
                  "picture too small for that, the crop is sampled at this scale instead. Requests get the default.",
    "maxRegions": "At most this many faces per image, the largest first; the rest are left as generated and the "
                  "response says how many. Requests get the default.",
    "minRegionSize": "Ignore faces whose box is at most this many pixels wide or high (Impact Pack's drop_size; "
                     "0: none). Requests get the default.",
    "maxRegionSize": "Ignore faces whose box is more than this many pixels wide or high (0: no limit). Requests "
                     "get the default.",
    "seedPerRegion": "Face j of an image is sampled with its seed + j (as ADetailer and Impact Pack do); off, every "
                     "face gets the image's seed (and identical faces come out identical). Requests get the default.",
}


def region_inputs() -> list[io.Input]:
    """The node-only region options (fields.REGION_OPTIONS), optional so graphs and requests without them get the
    defaults."""
    out: list[io.Input] = []
    for name, (default, low, high) in REGION_OPTIONS.items():
        tip = _REGION_TOOLTIPS[name]
        if isinstance(default, bool):
            out.append(io.Boolean.Input(name, default=default, optional=True, tooltip=tip))
        elif isinstance(default, int):
            out.append(io.Int.Input(name, default=default, min=int(low), max=int(high), optional=True, tooltip=tip))
        else:
            out.append(io.Float.Input(name, default=default, min=low, max=high, step=0.1, optional=True, tooltip=tip))
    return out


class FaceDetailer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        assert NODE_CLASS.startswith(NODE_PREFIX)
        return io.Schema(
            node_id=NODE_CLASS,
            display_name="Face Detailer (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `ultralytics`: detects faces with an ultralytics YOLO detector (a file in "
                "models/ultralytics/bbox or segm; the default runware:35@1 is face_yolov8n.pt), keeps at most "
                "maxRegions of them (the largest), then, face after face (highest score first), crops the smallest "
                "square holding the face's box grown by maskPadding + maskBlur + contextPadding pixels (and at least "
                "inpaintSize / maxUpscale wide), scales it to inpaintSize with Lanczos, re-samples the face's region "
                "grown by maskPadding with steps, CFGScale and denoise strength, scales it back and pastes it "
                "feathered by maskBlur. Boxes scoring at or below confidence are ignored. Image i of a batch uses "
                "seed i (link the sampler's seeds), its face j seed i + j. An image with no face, or any image at "
                "strength 0, comes back unchanged; `detections` lists what was found and skipped per image. The "
                "positive/negative inputs are the detail pass' prompts: link the image's Prompt node for the "
                "request's prompts, or a second Prompt node holding ultralytics.positivePrompt/negativePrompt."
            ),
            inputs=[
                io.Image.Input("image", tooltip="The generated images (a batch: one detail pass per image)."),
                io.Model.Input("model", tooltip="The request's model (the sampler's)."),
                io.Vae.Input("vae", tooltip="The VAE that encodes the face crops and decodes them."),
                io.Conditioning.Input("positive", tooltip="The detail pass' positive prompt: ultralytics.positivePrompt "
                                      "encoded by a Prompt node, or the request's positivePrompt when it is empty."),
                io.Conditioning.Input("negative", tooltip="The detail pass' negative prompt: ultralytics.negativePrompt "
                                      "or the request's negativePrompt (ignored when CFGScale <= 1)."),
                io.Combo.Input("detector", options=detector_options(), default=DEFAULT_DETECTOR,
                               tooltip="A detector AIR of the catalog (runware:35@1 face_yolov8n, @2 face_yolov8s, "
                                       "@3 hand_yolov8n, @4/@5 person segmentation) or a .pt/.onnx file of "
                                       "models/ultralytics. A request always uses runware:35@1."),
                io.Float.Input("confidence", default=0.9, min=0.0, max=1.0, step=0.01,
                               tooltip="imageInference `ultralytics.confidence`: boxes scoring at or below it are "
                                       "ignored."),
                io.Int.Input("maskPadding", default=5, min=0, max=20,
                             tooltip="imageInference `ultralytics.maskPadding`: pixels the face's region grows by on "
                                     "every side (hair, neck)."),
                io.Int.Input("maskBlur", default=5, min=0, max=100,
                             tooltip="imageInference `ultralytics.maskBlur`: pixels over which the mask's edge fades, "
                                     "on each side of it."),
                io.Int.Input("inpaintSize", default=1024, min=128, max=2048,
                             tooltip="imageInference `ultralytics.inpaintSize`: the crop's longer side while it is "
                                     "sampled, rounded to a multiple of 8 (faces are best at 2-4x their size)."),
                io.Int.Input("steps", default=20, min=1, max=100, tooltip="imageInference `ultralytics.steps`."),
                io.Float.Input("CFGScale", default=8.0, min=0.0, max=50.0, step=0.1,
                               tooltip="imageInference `ultralytics.CFGScale`; <= 1 ignores the negative prompt."),
                io.Float.Input("strength", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="imageInference `ultralytics.strength`: denoise of the face crops; 0 leaves the "
                                       "image unchanged."),
                io.Combo.Input("scheduler", options=list(SCHEDULER_NAMES), default="Default",
                               tooltip="The request's `scheduler` (the sampler's)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX,
                             tooltip="Used when `seeds` is not linked: image i uses seed + i."),
                io.String.Input("seeds", default="", optional=True, force_input=True,
                                tooltip="The sampler's `seeds` output: image i is detailed with seeds[i]."),
                *region_inputs(),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.Mask.Output(display_name="masks"),
                     io.String.Output(display_name="detections")],
        )

    @classmethod
    def execute(cls, image, model, vae, positive, negative, detector: str, confidence: float, maskPadding: int,
                maskBlur: int, inpaintSize: int, steps: int, CFGScale: float, strength: float, scheduler: str,
                seed: int, seeds: str | None = None, **region: object) -> io.NodeOutput:
        unknown = sorted(set(region) - set(REGION_OPTIONS))
        if unknown:
            raise ContractError.single("invalidParameter", f"the Face Detailer has no input {unknown[0]!r}",
                                       unknown[0])
        settings = detailer_settings({"confidence": confidence, "maskPadding": maskPadding, "maskBlur": maskBlur,
                                      "inpaintSize": inpaintSize, "steps": steps, "CFGScale": CFGScale,
                                      "strength": strength, **region})
        if scheduler not in SCHEDULER_NAMES:
            raise ContractError.single("invalidScheduler", f"'{scheduler}' is not an imageInference scheduler",
                                       "scheduler", "string", SCHEDULER_NAMES)
        seed_list = parse_seeds(seeds, seed, image.shape[0])
        file = resolve_detector(detector)
        yolo = load_detector(file)
        result = detail(model, vae, positive, negative, image, yolo, settings, scheduler, seed_list)
        return io.NodeOutput(result.images, result.masks, detections_json(file.label, settings.confidence,
                                                                          result.reports, settings.maxRegions))
