"""`watermark` (legacy `advancedFeatures.watermark`): the Watermark node between the final image and the output
node (so it is drawn after every other image step, right before encoding), and its `watermark` output linked into
the output node, which records in the response and the files' metadata that a watermark was applied.
"""

from __future__ import annotations

from typing import Any

from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 80
CLASS = "ImageInferenceWatermark"
OPTIONAL = ("text", "image", "fontColor", "bgColor")  # '' on the node = not given


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    wm = d.get("watermark")
    if not wm:
        return
    nid = g.add(NODE, CLASS, {
        "images": g.sampler["images"], "text": wm.get("text", ""), "image": wm.get("image", ""),
        "displayPosition": wm["displayPosition"], "tiled": wm["tiled"], "opacity": wm["opacity"],
        "fontColor": wm.get("fontColor", ""), "bgColor": wm.get("bgColor", "")})
    g.sampler["images"] = g.ref(nid, 0)  # g.sampler holds the output node's inputs in this stage
    g.sampler["watermark"] = g.ref(nid, 1)


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    i = node["inputs"]
    wm: dict[str, Any] = {key: i[key] for key in OPTIONAL if i.get(key, "") != ""}
    wm.update(displayPosition=i.get("displayPosition", "bottom-right"), tiled=bool(i.get("tiled", False)),
              opacity=i.get("opacity", 0.6))
    ctx.req["watermark"] = wm


FEATURE = Feature("watermark", ("watermark",), "output", compile_,
                  (NodeExport(CLASS, "image", export, upstream="images"),))
