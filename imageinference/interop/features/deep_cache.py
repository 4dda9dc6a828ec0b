"""`acceleratorOptions.deepCache` (UNet models) <-> the DeepCache node, last on the model path (pure).

DeepCache is an accelerator switch, not a top-level field: the feature registers the switch, so the compiler
stops refusing it, and compiles it in the model stage after every other model feature (a cache must see the
blocks that IP-Adapter and the like patch). The compiler's own step caches (TeaCache, FBCache, DBCache) are
for transformer models and a request enables at most one cache, so the two never meet.
"""

from __future__ import annotations

from typing import Any

from ...engines.cache.deepcache import CENTER_DEFAULT, POWER_DEFAULT
from ...engines.cache.fields import WINDOW_FIELDS
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 140
CLASS = "ImageInferenceDeepCache"
OWN = ("deepCacheInterval", "deepCacheBranchId", "cacheMaxConsecutiveSteps")


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    acc = d.get("acceleratorOptions") or {}
    if not acc.get("deepCache"):
        return
    inputs: dict[str, Any] = {"model": g.model, **{k: acc[k] for k in OWN}}
    inputs.update({k: acc.get(k, -1) for k in WINDOW_FIELDS})
    inputs.update(deepCacheSchedule="uniform", nonUniformCenter=CENTER_DEFAULT, nonUniformPower=POWER_DEFAULT)
    nid = g.add(NODE, CLASS, inputs)
    g.model = g.ref(nid, 0)


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    i = node["inputs"]
    if ctx.req.get("acceleratorOptions"):
        ctx.note(nid, node, "a second cache on the model path; a request enables one cache")
        return
    acc: dict[str, Any] = {"deepCache": True, **{k: int(i[k]) for k in OWN}}
    acc.update({k: int(i[k]) for k in WINDOW_FIELDS if int(i.get(k, -1)) >= 0})
    ctx.req["acceleratorOptions"] = acc
    if i.get("deepCacheSchedule", "uniform") != "uniform":
        ctx.note(nid, node, "deepCacheSchedule non-uniform is a node option with no API field; the request uses "
                            "DeepCache's uniform schedule (a full step every deepCacheInterval steps)")


FEATURE = Feature("deepCache", (), "model", compile_, (NodeExport(CLASS, "model", export, upstream="model"),),
                  order=90)
