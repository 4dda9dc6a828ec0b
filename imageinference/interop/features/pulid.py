"""`pulid` <-> the PuLID node on the model path (after LoRA, before a step cache) and its face image's loader.

The request names no PuLID weights: compiled graphs use the default AIR (pulid/stack.py DEFAULT_PULID); a graph
whose PuLID node uses other weights exports with a "not exportable" line saying so. `pulid.trueCFGScale` is carried
by the PuLID node (real CFG with that scale, the negative prompt on the unconditional pass, as PuLID-FLUX runs it:
above 1 only, from step 1 on); the request's top-level `trueCFGScale` by the sampler. With both, PuLID's scale
combines the two passes where it acts.
"""

from __future__ import annotations

from typing import Any

from ...engines.models.catalog import TYPED_IN, chosen_air
from ...engines.pulid.stack import DEFAULT_PULID
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

IMAGE_NODE = 60
PULID_NODE = 61
CLASS = "ImageInferencePuLID"
IMAGE_ROLE = "pulid.images"
UNSET = -1


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    p = d.get("pulid")
    if not p:
        return
    g.add(IMAGE_NODE, "ImageInferenceLoadImage", {"image": p["images"][0], "role": IMAGE_ROLE})
    g.add(PULID_NODE, CLASS, {
        "model": g.model, "image": g.ref(IMAGE_NODE), "weights": TYPED_IN, "air": DEFAULT_PULID,
        "idWeight": p["idWeight"], "CFGstartStep": p.get("CFGstartStep", UNSET),
        "CFGstartStepPercentage": p.get("CFGstartStepPercentage", UNSET),
        "trueCFGScale": p.get("trueCFGScale", float(UNSET))})
    g.model = g.ref(PULID_NODE)


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    i = node["inputs"]
    air = chosen_air(i.get("weights"), i.get("air"))
    if air and air != DEFAULT_PULID:
        ctx.note(nid, node, f"uses the PuLID weights {air}; a request always uses {DEFAULT_PULID}")
    image = ctx.image_string(i.get("image"), "PuLID face image")
    if image is None:
        return
    entry: dict[str, Any] = {"images": [image], "idWeight": float(i.get("idWeight", 1.0))}
    for key in ("CFGstartStep", "CFGstartStepPercentage"):
        if int(i.get(key, UNSET)) >= 0:
            entry[key] = int(i[key])
    if float(i.get("trueCFGScale", UNSET)) >= 0:
        entry["trueCFGScale"] = float(i["trueCFGScale"])
    ctx.req["pulid"] = entry


FEATURE = Feature("pulid", ("pulid",), "model", compile_, (NodeExport(CLASS, "model", export, upstream="model"),),
                  order=20)
