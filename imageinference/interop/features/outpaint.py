"""`outpaint` <-> the Outpaint node linked into the sampler's `outpaint` input (pure). Node id 10."""

from __future__ import annotations

from typing import Any

from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 10
CLASS = "ImageInferenceOutpaint"
SIDES = ("top", "right", "bottom", "left", "blur")


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if d.get("outpaint"):
        g.add(NODE, CLASS, dict(d["outpaint"]))
        g.sampler["outpaint"] = g.ref(NODE, 0)


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    ctx.req["outpaint"] = {k: node["inputs"][k] for k in SIDES}


FEATURE = Feature("outpaint", ("outpaint",), "sampler", compile_, (NodeExport(CLASS, "option", export),), order=0)
