"""`hiresFix` <-> the Hires Fix node linked into the sampler's `hiresFix` input (pure). Node id 11.

`hiresFix: true` (the API's defaults) is the node's model choice "true (defaults)"; the object form names the
upscaler AIR, its factor and the second pass's steps and strength (0 / -1 on the node = not set).
"""

from __future__ import annotations

from typing import Any

from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 11
CLASS = "ImageInferenceHiresFix"
DEFAULTS = "true (defaults)"


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    h = d.get("hiresFix")
    if h is None:
        return
    g.add(NODE, CLASS, {"model": DEFAULTS if h is True else h["model"],
                        "steps": 0 if h is True else h.get("steps", 0),
                        "strength": -1.0 if h is True else h.get("strength", -1.0), "upscaleFactor": "4"})
    g.sampler["hiresFix"] = g.ref(NODE, 0)


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    h = node["inputs"]
    if h.get("model") == DEFAULTS:
        ctx.req["hiresFix"] = True
        return
    obj: dict[str, Any] = {"model": h["model"], "upscaleFactor": int(h.get("upscaleFactor", 4))}
    if int(h.get("steps", 0)) > 0:
        obj["steps"] = int(h["steps"])
    if float(h.get("strength", -1)) >= 0:
        obj["strength"] = float(h["strength"])
    ctx.req["hiresFix"] = obj


FEATURE = Feature("hiresFix", ("hiresFix",), "sampler", compile_, (NodeExport(CLASS, "option", export),), order=1)
