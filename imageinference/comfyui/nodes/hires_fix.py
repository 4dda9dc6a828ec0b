"""Hires Fix: the request's `hiresFix` (true or {model, steps, strength, upscaleFactor}), for the sampler."""

from __future__ import annotations

from comfy_api.latest import io

from ...contract.request import HIRES_FIX_MODELS
from ...engines.models.catalog import Catalog
from ...engines.models.loader import load_upscaler
from ...engines.samplers.hires import DEFAULT_UPSCALER, HiresOptions
from .common import CATEGORY, node_id
from .options import HiresFix

DEFAULTS = "true (defaults)"


class HiresFixNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("HiresFix"),
            display_name="Hires Fix (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `hiresFix`: the sampler runs a first pass at a lower resolution (the smaller of the "
                "model's native area and a quarter of the target area, aspect kept, multiples of 64), upscales it "
                "with the upscaler (tiled), resizes to width x height, and refines it in a second pass with `steps` "
                "and denoise `strength`. 'true (defaults)': RealESRGAN x4plus, the request's steps, strength 0.5."
            ),
            inputs=[
                io.Combo.Input("model", options=[DEFAULTS, *HIRES_FIX_MODELS], default=DEFAULTS,
                               tooltip="imageInference `hiresFix.model` (an upscaler AIR), or `hiresFix: true`."),
                io.Int.Input("steps", default=0, min=0, max=100,
                             tooltip="imageInference `hiresFix.steps`; 0 = not set (the request's steps)."),
                io.Float.Input("strength", default=-1.0, min=-1.0, max=1.0, step=0.01,
                               tooltip="imageInference `hiresFix.strength` (second-pass denoise); -1 = not set (0.5)."),
                io.Combo.Input("upscaleFactor", options=["4"], default="4",
                               tooltip="imageInference `hiresFix.upscaleFactor` (4 is the only documented value)."),
            ],
            outputs=[HiresFix.Output(display_name="hiresFix")],
        )

    @classmethod
    def execute(cls, model: str, steps: int, strength: float, upscaleFactor: str) -> io.NodeOutput:
        explicit = model != DEFAULTS
        air = model if explicit else DEFAULT_UPSCALER
        upscaler = load_upscaler(air, Catalog.load())
        return io.NodeOutput(HiresOptions(upscaler, air, steps or None, None if strength < 0 else strength, explicit))
