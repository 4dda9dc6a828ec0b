"""`acceleratorOptions` TeaCache / FBCache / DBCache <-> the step-cache nodes, last on the model path (pure).

A cache must see the blocks that IP-Adapter, PuLID and the like patch, so it compiles after every other model
feature. Which node and threshold belong to which switch is the torch-free table in engines/cache/fields.py.
Node id 12.
"""

from __future__ import annotations

from typing import Any

from ...engines.cache.fields import CACHE_FIELDS, WINDOW_FIELDS
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 12
CACHE_NODES = {fields.class_type: (switch, fields.threshold) for switch, fields in CACHE_FIELDS.items()}


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    acc = d.get("acceleratorOptions") or {}
    for switch, (class_type, threshold) in CACHE_FIELDS.items():
        if not acc.get(switch):
            continue
        inputs: dict[str, Any] = {"model": g.model, threshold: acc[threshold],
                                  "cacheMaxConsecutiveSteps": acc["cacheMaxConsecutiveSteps"]}
        inputs.update({k: acc.get(k, -1) for k in WINDOW_FIELDS})
        if switch == "dbCache":
            inputs["dbCacheSkipInterval"] = acc["dbCacheSkipInterval"]
        inputs.update({k: default for k, (default, _rule) in NODE_OPTIONS.items()  # every widget, as the frontend sends
                       if k != "firstBlockSignal" or switch == "fbCache"})
        g.add(NODE, class_type, inputs)
        g.model = g.ref(NODE, 0)


def cache_options(class_type: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A step-cache node's widgets as `acceleratorOptions` (-1 = a window field not set)."""
    switch, threshold = CACHE_NODES[class_type]
    out: dict[str, Any] = {switch: True, threshold: float(inputs[threshold]),
                           "cacheMaxConsecutiveSteps": int(inputs["cacheMaxConsecutiveSteps"])}
    if switch == "dbCache":
        out["dbCacheSkipInterval"] = int(inputs["dbCacheSkipInterval"])
    out.update({k: int(inputs[k]) for k in WINDOW_FIELDS if int(inputs.get(k, -1)) >= 0})
    return out


NODE_OPTIONS = {  # node options with no API field, and the API rule a request gets instead
    "skipLastStep": (False, "the last step always runs"),
    "uncappedSkips": (False, "at most cacheMaxConsecutiveSteps steps are skipped in a row"),
    "firstBlockSignal": ("residual", "the first block's residual decides"),
}


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    if ctx.req.get("acceleratorOptions"):
        ctx.note(nid, node, "a second cache on the model path; a request enables one cache")
        return
    ctx.req["acceleratorOptions"] = cache_options(node["class_type"], node["inputs"])
    for name, (default, rule) in NODE_OPTIONS.items():
        if node["inputs"].get(name, default) != default:
            ctx.note(nid, node, f"{name} is a node option with no API field; the request uses the API's rule: {rule}")


FEATURE = Feature("stepCaches", (), "model", compile_,
                  tuple(NodeExport(class_type, "model", export, upstream="model") for class_type in CACHE_NODES),
                  order=90)
