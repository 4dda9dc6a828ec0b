"""Load Image (imageInference): an image string (UUID, URL, data URI, base64) -> IMAGE and MASK."""

from __future__ import annotations

from comfy_api.latest import io

from ...engines.imageio.decode import decode_image_string
from ...engines.imageio.tensors import to_image_tensor, to_mask_tensor
from ..paths import image_store
from .common import CATEGORY, node_id

ROLES = ["seedImage", "maskImage", "guideImage", "referenceImages", "pulid.images"]


class LoadImageString(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("LoadImage"),
            display_name="Load Image String (imageInference)",
            category=CATEGORY,
            description=(
                "Decodes an image as requests give it: the UUID of an image this pack produced or stored, an http(s) "
                "URL, a data URI or bare base64 (PNG, JPG, WEBP). Decoding is strict and bounded; URLs to private, "
                "loopback and link-local addresses are refused unless IMAGEINFERENCE_ALLOW_PRIVATE_URLS=1."
            ),
            inputs=[
                io.String.Input("image", multiline=False, default="",
                                tooltip="UUID, http(s) URL, data:image/...;base64,... or bare base64."),
                io.Combo.Input("role", options=ROLES, default="seedImage",
                               tooltip="The request field this image fills; a maskImage becomes MASK from its "
                                       "brightness (white = edit), others give MASK from transparency."),
            ],
            outputs=[io.Image.Output(display_name="IMAGE"), io.Mask.Output(display_name="MASK")],
        )

    @classmethod
    def execute(cls, image: str, role: str) -> io.NodeOutput:
        img = decode_image_string(image.strip(), f"inputs.{role}" if role in ROLES[:2] else role, image_store())
        pixels, alpha_mask = to_image_tensor(img)
        return io.NodeOutput(pixels, to_mask_tensor(img) if role == "maskImage" else alpha_mask)
