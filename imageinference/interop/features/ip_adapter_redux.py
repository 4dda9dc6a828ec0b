"""`ipAdapters[]` entries whose AIR is FLUX Redux <-> Redux nodes on the positive conditioning (pure).

Each becomes a Guide Images node (ids 130+2k) and a Redux node (131+2k) after the ControlNets, in request order.
The entries' checks (options Redux has no meaning for, architecture) are made by `ip_adapter` for the whole
list. The exporter lists IP-Adapter entries (model path) before Redux entries (conditioning): the two act on
different things, so their relative order does not change the image.
"""

from __future__ import annotations

import json
from typing import Any

from ...contract.errors import ContractError
from ...engines.models.catalog import TYPED_IN
from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport
from .ip_adapter import GUIDE_NODE, adapter_entry, check, load_catalog

BASE = 130  # Redux k (0-4): guide images 130+2k, Redux 131+2k
MAX = 5
NODE = "ImageInferenceRedux"


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if not d.get("ipAdapters"):
        return
    families = check(d, load_catalog())
    k = 0
    for i, entry in enumerate(d["ipAdapters"]):
        if families[i] != "redux":
            continue
        if k >= MAX:
            raise ContractError.single("invalidIpAdapters", f"at most {MAX} FLUX Redux entries per request",
                                       "ipAdapters", "object[]", task_uuid=d.get("taskUUID"))
        guide, node = BASE + 2 * k, BASE + 2 * k + 1
        g.add(guide, GUIDE_NODE, {"guideImages": json.dumps(entry["guideImages"]), "role": f"ipAdapters.{i}.guideImages"})
        g.add(node, NODE, {"positive": g.positive, "guideImages": g.ref(guide), "ipAdapter": TYPED_IN,
                           "air": entry["model"], "weight": entry["weight"], "combineMethod": entry["combineMethod"]})
        g.positive = g.ref(node)
        k += 1


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    entry = adapter_entry(ctx, nid, node, ())
    if entry is None:
        return
    # The model path (IP-Adapters) is traced first; Redux nodes come last-first: keep them in order after it.
    seen = int(getattr(ctx, "_redux_exported", 0))
    adapters = ctx.req.setdefault("ipAdapters", [])
    adapters.insert(len(adapters) - seen, entry)
    ctx._redux_exported = seen + 1  # type: ignore[attr-defined]


FEATURE = Feature("redux", (), "conditioning", compile_,
                  (NodeExport(NODE, "conditioning", export, upstream="positive"),))
