"""`embeddings[]` (textual inversion) <-> the Embeddings node on the CLIP path, before the Prompt node (pure).

The node carries the request's array as JSON (like the LoRA Stack), so the AIRs and weights travel unchanged. On
export, several Embeddings nodes in a row add up to one array, the one nearest the loader first. The exporter
traces a Prompt node's CLIP chain once per side (positive, negative); each node's entries count once.
"""

from __future__ import annotations

import json
from typing import Any
from weakref import WeakKeyDictionary

from ..graph import GraphBuilder
from ..registry import ExportContext, Feature, NodeExport

NODE = 110  # the base model's Embeddings node; the refiner's own is 103 (refiner.py)
CLASS = "ImageInferenceEmbeddings"


def node_inputs(d: dict[str, Any], clip: Any) -> dict[str, Any]:
    return {"clip": clip, "embeddings": json.dumps(d["embeddings"])}


def compile_(d: dict[str, Any], g: GraphBuilder) -> None:
    if not d.get("embeddings"):
        return
    nid = g.add(NODE, CLASS, node_inputs(d, g.clip))
    g.clip = g.ref(nid, 0)


def entries(ctx: ExportContext, nid: str, node: dict[str, Any]) -> list[Any] | None:
    try:
        data = json.loads(node["inputs"].get("embeddings") or "[]")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list):
        ctx.note(nid, node, "its 'embeddings' text is not a JSON array")
        return None
    return data


_EXPORTED: WeakKeyDictionary[ExportContext, dict[str, list[Any]]] = WeakKeyDictionary()


def export(ctx: ExportContext, nid: str, node: dict[str, Any]) -> None:
    done = _EXPORTED.setdefault(ctx, {})  # node id -> its entries, nearest the prompt first
    if nid in done:
        return
    done[nid] = entries(ctx, nid, node) or []
    merged = [e for part in reversed(done.values()) for e in part]
    if merged:
        ctx.req["embeddings"] = merged


FEATURE = Feature("embeddings", ("embeddings",), "clip", compile_, (NodeExport(CLASS, "clip", export, upstream="clip"),))
