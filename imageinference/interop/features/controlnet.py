"""`controlNet[]` <-> one ControlNet Apply node per entry, on the conditioning chain (pure). Core's
ControlNetLoader + ControlNetApplyAdvanced export too.

Each entry gets a guide-image node and an apply node (ids 20+2i and 21+2i) after the prompt and before every
other conditioning feature. Core's start_percent/end_percent are fractions of the noise range: they export as
the exact steps they act on under the traced KSampler (ExportContext.percent_window), or are listed as not
exportable.
"""

from __future__ import annotations

from typing import Any

from ...engines.models.catalog import TYPED_IN, chosen_air
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

BASE = 20  # controlNet[i] -> guide image node 20+2i, apply node 21+2i
CLASS = "ImageInferenceControlNet"
WINDOW = ("startStep", "endStep", "startStepPercentage", "endStepPercentage")


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    for i, cn in enumerate(d.get("controlNet") or []):
        guide, apply = BASE + 2 * i, BASE + 2 * i + 1
        g.add(guide, "ImageInferenceLoadImage", {"image": cn["guideImage"], "role": "guideImage"})
        g.add(apply, CLASS, {
            "positive": g.positive, "negative": g.negative, "guideImage": g.ref(guide), "model": TYPED_IN,
            "air": cn["model"], "weight": cn["weight"], **{k: cn.get(k, -1) for k in WINDOW},
            "controlMode": cn["controlMode"], "vae": g.vae})
        g.positive, g.negative = g.ref(apply, 0), g.ref(apply, 1)


def _ours(inputs: dict[str, Any], guide: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"model": chosen_air(inputs.get("model"), inputs.get("air")), "guideImage": guide,
                             "weight": inputs.get("weight", 1.0), "controlMode": inputs.get("controlMode", "balanced")}
    entry.update({k: int(inputs[k]) for k in WINDOW if int(inputs.get(k, -1)) >= 0})
    return entry


def _core(ctx: ExportContext, nid: str, node: dict[str, Any], guide: str | None) -> dict[str, Any] | None:
    inputs = node["inputs"]
    loader = ctx.node(inputs.get("control_net"))
    air = None
    if loader and loader[1]["class_type"] == "ControlNetLoader":
        air = ctx.air_for_file("controlnet", str(loader[1]["inputs"].get("control_net_name")), *loader)
    entry: dict[str, Any] = {"model": air, "guideImage": guide, "weight": inputs.get("strength", 1.0),
                             "controlMode": "balanced"}
    start, end = float(inputs.get("start_percent", 0.0)), float(inputs.get("end_percent", 1.0))
    if start > 0 or end < 1:
        window = ctx.percent_window(nid, node, start, end)
        if window is None:
            return None
        entry.update(window)
    return entry


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    inputs = node["inputs"]
    guide = ctx.image_string(inputs.get("guideImage") if "guideImage" in inputs else inputs.get("image"),
                             "guide image")
    entry = _ours(inputs, guide) if node["class_type"] == CLASS else _core(ctx, nid, node, guide)
    if entry is None or entry["model"] is None or guide is None:
        return
    # traced from the sampler upwards: a ControlNet found later was applied earlier
    ctx.req.setdefault("controlNet", []).insert(0, entry)


FEATURE = Feature("controlNet", ("controlNet",), "conditioning", compile_, (
    NodeExport(CLASS, "conditioning", export, upstream="positive"),
    NodeExport("ControlNetApplyAdvanced", "conditioning", export, upstream="positive"),
), order=0)
