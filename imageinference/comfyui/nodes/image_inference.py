"""Image Inference: sample with the request's semantics (txt2img, img2img `strength`, inpaint `maskMargin`)."""

from __future__ import annotations

import json
import uuid

from comfy_api.latest import io

from ...contract.errors import ContractError, code_for
from ...engines.models.notes import model_warnings
from ...engines.samplers.outpaint import canvas_size
from ...engines.samplers.passes import (
    SamplingSettings,
    hires_second_pass,
    image_to_image,
    inpaint,
    text_to_image,
)
from ...engines.samplers.passes import outpaint as outpaint_pass
from ...engines.samplers.schedulers import SCHEDULER_NAMES
from ...engines.samplers.seeds import SEED_MAX, result_seeds
from .common import CATEGORY, node_id
from .options import HiresFix, Outpaint, Refiner


class ImageInference(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Sampler"),
            display_name="Image Inference (imageInference)",
            category=CATEGORY,
            description=(
                "Samples images with imageInference semantics. Text-to-image; image-to-image when a seed image is "
                "connected (`strength` = denoise); inpainting when a mask of the seed image's size is connected too (white = edit; only the "
                "mask's box plus `maskMargin` is sampled when maskMargin > 0). `numberResults` images in one batch, "
                "result i uses seed + i. With CFGScale <= 1 the negative prompt is ignored. Plain text-to-image is "
                "ComfyUI's KSampler computation, bit for bit."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (from the AIR Model Loader or any loader)."),
                io.Vae.Input("vae", tooltip="The VAE that decodes the result (and encodes a seed image)."),
                io.Conditioning.Input("positive", tooltip="Encoded `positivePrompt`."),
                io.Conditioning.Input("negative", tooltip="Encoded `negativePrompt` (ignored when CFGScale <= 1)."),
                io.Int.Input("width", default=1024, min=128, max=2048, step=64,
                             tooltip="imageInference `width`: output width in pixels, a multiple of 64."),
                io.Int.Input("height", default=1024, min=128, max=2048, step=64,
                             tooltip="imageInference `height`: output height in pixels, a multiple of 64."),
                io.Int.Input("seed", default=0, min=-1, max=SEED_MAX, control_after_generate=True,
                             tooltip="imageInference `seed`; result i of numberResults uses seed + i; -1 = not set "
                                     "(a seed is drawn and returned)."),
                io.Int.Input("steps", default=20, min=1, max=100, tooltip="imageInference `steps`."),
                io.Combo.Input("scheduler", options=list(SCHEDULER_NAMES), default="Default",
                               tooltip="imageInference `scheduler`: one of the 75 API names."),
                io.Float.Input("CFGScale", default=7.0, min=0.0, max=50.0, step=0.01,
                               tooltip="imageInference `CFGScale`: classifier-free guidance (<= 1 disables it and "
                                       "the negative prompt); on FLUX, the model's distilled guidance."),
                io.Float.Input("trueCFGScale", default=-1.0, min=-1.0, max=50.0, step=0.01, optional=True,
                               tooltip="imageInference `trueCFGScale` (FLUX): real classifier-free guidance with the "
                                       "negative prompt at this scale, on top of the distilled guidance CFGScale "
                                       "sets; -1 = not set (no real CFG, the negative prompt is ignored)."),
                io.Int.Input("numberResults", default=1, min=1, max=20,
                             tooltip="imageInference `numberResults`: images in one batch, each with its own seed."),
                io.Float.Input("strength", default=0.8, min=0.0, max=1.0, step=0.01,
                               tooltip="imageInference `strength`: how much of a seed image is re-generated "
                                       "(used only with a seed image)."),
                io.Int.Input("maskMargin", default=0, min=0, max=128,
                             tooltip="imageInference `maskMargin` (32-128): context pixels around the mask; 0 = "
                                     "sample the whole image with the mask."),
                io.Image.Input("seedImage", optional=True, tooltip="imageInference `inputs.seedImage`."),
                io.Mask.Input("maskImage", optional=True,
                              tooltip="imageInference `inputs.maskImage` (white = edit); needs a seed image."),
                Outpaint.Input("outpaint", optional=True,
                               tooltip="imageInference `outpaint` (from the Outpaint node); needs a seed image."),
                HiresFix.Input("hiresFix", optional=True,
                               tooltip="imageInference `hiresFix` (from the Hires Fix node)."),
                Refiner.Input("refiner", optional=True,
                              tooltip="imageInference `refiner` (from the Refiner node): the refiner model takes over "
                                      "at its start step."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.String.Output(display_name="seeds"),
                     io.Latent.Output(display_name="latent",
                                      tooltip="The sampled latent of the final pass (batch = numberResults); for "
                                              "inpainting with maskMargin, of the mask's working area."),
                     io.String.Output(display_name="warnings",
                                      tooltip="JSON list of warnings for the response (e.g. LoRA keys that matched "
                                              "nothing); connect to the Image Inference Output node.")],
        )

    @classmethod
    def fingerprint_inputs(cls, seed: int = 0, **_: object) -> object:
        """An unseeded run (seed -1) must draw a fresh seed every time, so it is never answered from ComfyUI's
        cache; a seeded one is the same computation each time and stays cached."""
        return uuid.uuid4().hex if seed is not None and seed < 0 else seed

    @classmethod
    def execute(cls, model, vae, positive, negative, width: int, height: int, seed: int, steps: int,
                scheduler: str, CFGScale: float, numberResults: int, strength: float, maskMargin: int,
                seedImage=None, maskImage=None, outpaint=None, hiresFix=None,
                trueCFGScale: float = -1.0, refiner=None) -> io.NodeOutput:
        if width % 64 or height % 64:
            bad = "width" if width % 64 else "height"
            raise ContractError.single(code_for("invalid", bad), f"'{bad}' must be a multiple of 64", bad, "integer")
        if maskImage is not None and seedImage is None:
            raise ContractError.single("missingSeedImage", "'maskImage' needs a seed image", "inputs.maskImage")
        if maskImage is not None and tuple(maskImage.shape[-2:]) != tuple(seedImage.shape[1:3]):
            mh, mw = maskImage.shape[-2:]
            sh, sw = seedImage.shape[1:3]
            raise ContractError.single("invalidMaskImage", f"the mask is {mw}x{mh} but the seed image is {sw}x{sh}; "
                                       "they must have the same size", "inputs.maskImage", "string")
        if maskMargin and not 32 <= maskMargin <= 128:
            raise ContractError.single("invalidMaskMargin", "'maskMargin' is 0 (off) or between 32 and 128",
                                       "maskMargin", "integer")
        if outpaint is not None:
            if seedImage is None or maskImage is not None:
                raise ContractError.single("missingSeedImage" if seedImage is None else "conflictMaskImage",
                                           "outpaint needs a seed image and no mask (it makes its own)", "outpaint")
            sh, sw = seedImage.shape[1:3]
            cw, ch = canvas_size(sw, sh, outpaint["top"], outpaint["right"], outpaint["bottom"], outpaint["left"])
            if (cw, ch) != (width, height):
                bad = "width" if cw != width else "height"
                raise ContractError.single(
                    code_for("invalid", bad), f"outpaint: the seed image ({sw}x{sh}) plus the extensions makes "
                    f"{cw}x{ch}, but width x height is {width}x{height}; they must be equal", bad, "integer")
        settings = SamplingSettings(steps, CFGScale, scheduler, result_seeds(None if seed < 0 else seed, numberResults),
                                    None if trueCFGScale < 0 else trueCFGScale, refiner)
        if seedImage is None:
            images, latent = text_to_image(model, vae, positive, negative, width, height, settings, hiresFix)
        elif outpaint is not None:
            images, latent = outpaint_pass(model, vae, positive, negative, seedImage, outpaint, strength, settings)
        elif maskImage is None:
            images, latent = image_to_image(model, vae, positive, negative, seedImage, width, height, strength,
                                            settings)
        else:
            images, latent = inpaint(model, vae, positive, negative, seedImage, maskImage, width, height, strength,
                                     maskMargin or None, settings)
        if hiresFix is not None and seedImage is not None:  # img2img / inpaint / outpaint: refine the result
            images, latent = hires_second_pass(model, vae, positive, negative, images, width, height, hiresFix,
                                               settings)
        return io.NodeOutput(images, json.dumps(settings.seeds), {"samples": latent},
                             json.dumps(model_warnings(model)))
