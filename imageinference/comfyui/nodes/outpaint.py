"""Outpaint: the request's `outpaint` object, consumed by the Image Inference sampler."""

from __future__ import annotations

from comfy_api.latest import io

from ...contract.errors import ContractError, code_for
from .common import CATEGORY, node_id
from .options import Outpaint


class OutpaintNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        side = {"default": 0, "min": 0, "max": 2048, "step": 64}
        return io.Schema(
            node_id=node_id("Outpaint"),
            display_name="Outpaint (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `outpaint`: extends the seed image by top/right/bottom/left pixels (multiples of "
                "64); the sampler pads the seed image (edge pixels repeated), masks the new area, feathers the seam "
                "`blur` pixels into the original, and inpaints. Seed image + extensions must equal width x height."
            ),
            inputs=[
                io.Int.Input("top", tooltip="imageInference `outpaint.top` (pixels, multiple of 64).", **side),
                io.Int.Input("right", tooltip="imageInference `outpaint.right`.", **side),
                io.Int.Input("bottom", tooltip="imageInference `outpaint.bottom`.", **side),
                io.Int.Input("left", tooltip="imageInference `outpaint.left`.", **side),
                io.Int.Input("blur", default=0, min=0, max=32, tooltip="imageInference `outpaint.blur` (0-32)."),
            ],
            outputs=[Outpaint.Output(display_name="outpaint")],
        )

    @classmethod
    def execute(cls, top: int, right: int, bottom: int, left: int, blur: int) -> io.NodeOutput:
        sides = {"top": top, "right": right, "bottom": bottom, "left": left}
        for name, value in sides.items():
            if value % 64:
                raise ContractError.single(code_for("invalid", name), f"'outpaint.{name}' must be a multiple of 64",
                                           f"outpaint.{name}", "integer")
        if not any(sides.values()):
            raise ContractError.single("invalidOutpaint", "outpaint needs at least one side above 0", "outpaint",
                                       "object")
        return io.NodeOutput(dict(sides, blur=blur))
