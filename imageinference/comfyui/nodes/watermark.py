"""Watermark (`watermark`): a text or image mark drawn on the finished images, before they are encoded."""

from __future__ import annotations

import json

import torch
from comfy_api.latest import io

from ...contract.request import WATERMARK_POSITIONS
from ...engines.imageio.decode import decode_image_string
from ...engines.watermark.render import apply_watermark
from ...engines.watermark.spec import parse_watermark
from ..paths import image_store
from .common import CATEGORY, node_id


def widgets_to_request(text: str, image: str, displayPosition: str, tiled: bool, opacity: float, fontColor: str,
                       bgColor: str) -> dict[str, object]:
    """The node's widgets as the request's watermark object ('' = a field not given)."""
    obj: dict[str, object] = {"displayPosition": displayPosition, "tiled": tiled, "opacity": opacity}
    for key, value in (("text", text), ("image", image), ("fontColor", fontColor), ("bgColor", bgColor)):
        if value != "":
            obj[key] = value
    return obj


class WatermarkNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Watermark"),
            display_name="Watermark (imageInference)",
            category=CATEGORY,
            description=(
                "imageInference `watermark`: draws a text or image mark on every image, at one of 9 positions or "
                "tiled over the whole image at -45 degrees, with `opacity`, `fontColor` (default white) and a "
                "`bgColor` box. Sized to the image (text about 4.5% of the shorter side, images 20%). Pixels the "
                "mark does not cover are unchanged. RGBA images keep their alpha (the mark is drawn over it). "
                "Connect `watermark` to the Output node so the response and the files record it."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The finished images (RGB or RGBA)."),
                io.String.Input("text", default="", tooltip="imageInference `watermark.text` (2-32 characters); "
                                "give text or image, not both."),
                io.String.Input("image", default="", tooltip="imageInference `watermark.image`: an image string "
                                "(UUID, URL, data URI, base64); give text or image, not both."),
                io.Combo.Input("displayPosition", options=list(WATERMARK_POSITIONS), default="bottom-right",
                               tooltip="imageInference `watermark.displayPosition` (ignored when tiled)."),
                io.Boolean.Input("tiled", default=False,
                                 tooltip="imageInference `watermark.tiled`: repeat the mark over the image at -45°."),
                io.Float.Input("opacity", default=0.6, min=0.1, max=1.0, step=0.01,
                               tooltip="imageInference `watermark.opacity` (0.1-1)."),
                io.String.Input("fontColor", default="", tooltip="imageInference `watermark.fontColor` (#RRGGBB); "
                                "empty = not set (white)."),
                io.String.Input("bgColor", default="", tooltip="imageInference `watermark.bgColor` (#RRGGBB or "
                                "'transparent'); empty = not set (no box)."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.String.Output(display_name="watermark")],
        )

    @classmethod
    def execute(cls, images, text: str, image: str, displayPosition: str, tiled: bool, opacity: float,
                fontColor: str, bgColor: str) -> io.NodeOutput:
        spec = parse_watermark(widgets_to_request(text, image, displayPosition, tiled, opacity, fontColor, bgColor))
        mark = decode_image_string(spec.image, "watermark.image", image_store()) if spec.image is not None else None
        marked = apply_watermark(images.detach().cpu().numpy(), spec, mark)
        out = torch.from_numpy(marked).to(images.dtype)
        return io.NodeOutput(out, json.dumps(spec.to_json()))
