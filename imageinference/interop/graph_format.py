"""ComfyUI's two graph formats: API prompts <-> frontend workflows (pure; needs `/object_info` for widget order).

A frontend workflow stores widget values by position (`widgets_values`), in the order of the node's widget inputs
in `/object_info` (required, then optional), with one extra value after any input that has
`control_after_generate` (the frontend's "fixed / randomize" switch). Links are `[id, from, from_slot, to, to_slot,
type]`. Muted nodes (mode 2) are dropped; bypassed nodes (mode 4) are not supported and refused.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODE_MUTED, MODE_BYPASS = 2, 4


class GraphFormatError(ValueError):
    pass


def _inputs(spec: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    out = []
    for section in ("required", "optional"):
        for name, entry in (spec.get("input", {}).get(section) or {}).items():
            kind = entry[0]
            opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            out.append((name, kind, opts))
    return out


def _is_widget(kind: Any, opts: dict[str, Any]) -> bool:
    if opts.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control(name: str, kind: Any, opts: dict[str, Any]) -> bool:
    """Whether the frontend adds its "control after generate" widget after this one: when the input asks for it,
    and for every INT named seed or noise_seed (the frontend's own rule), whose value then takes two slots."""
    return bool(opts.get("control_after_generate")) or (kind == "INT" and name in ("seed", "noise_seed"))


def _type_name(kind: Any) -> str:
    return "COMBO" if isinstance(kind, list) else str(kind)


def _depths(prompt: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(nid: str, seen: frozenset[str]) -> int:
        if nid in depth:
            return depth[nid]
        if nid in seen:
            raise GraphFormatError(f"the prompt has a cycle through node {nid}")
        links = [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and len(v) == 2]
        depth[nid] = 1 + max((visit(str(src), seen | {nid}) for src in links), default=-1)
        return depth[nid]

    for nid in prompt:
        visit(nid, frozenset())
    return depth


def api_to_workflow(prompt: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """An API prompt as a frontend workflow, nodes laid out in columns by their distance from the sources."""
    if all(k.isdigit() for k in prompt):
        ids = {nid: int(nid) for nid in prompt}  # keep the prompt's own numbers, so the round trip is exact
    else:
        ids = {nid: i + 1 for i, nid in enumerate(sorted(prompt))}
    depth = _depths(prompt)
    rows: dict[int, int] = defaultdict(int)
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = defaultdict(list)
    nodes: list[dict[str, Any]] = []
    for nid in sorted(prompt, key=lambda k: (depth[k], ids[k])):
        node = prompt[nid]
        spec = object_info.get(node["class_type"])
        if spec is None:
            raise GraphFormatError(f"node {nid}: {node['class_type']} is not a registered node type")
        widgets: list[Any] = []
        inputs: list[dict[str, Any]] = []
        for name, kind, opts in _inputs(spec):
            value = node["inputs"].get(name)
            linked = isinstance(value, list) and len(value) == 2 and str(value[0]) in prompt
            if _is_widget(kind, opts):
                default = opts.get("default", kind[0] if isinstance(kind, list) and kind else None)
                widgets.append(default if linked or value is None else value)
                if _has_control(name, kind, opts):
                    widgets.append("fixed")
                if linked:
                    inputs.append({"name": name, "type": _type_name(kind), "widget": {"name": name}, "link": None})
            elif linked or name in node["inputs"] or (spec.get("input", {}).get("required") or {}).get(name):
                inputs.append({"name": name, "type": _type_name(kind), "link": None})
            if linked:
                src, slot = str(value[0]), int(value[1])
                link_id = len(links) + 1
                links.append([link_id, ids[src], slot, ids[nid], len(inputs) - 1,
                              spec_output_type(object_info, prompt[src]["class_type"], slot)])
                inputs[-1]["link"] = link_id
                out_links[(src, slot)].append(link_id)
        col, row = depth[nid], rows[depth[nid]]
        rows[col] += 1
        nodes.append({
            "id": ids[nid], "type": node["class_type"], "pos": [40 + 340 * col, 40 + 260 * row], "size": [300, 200],
            "flags": {}, "order": len(nodes), "mode": 0, "inputs": inputs,
            "outputs": [{"name": o_name, "type": o_type, "links": [], "slot_index": i}
                        for i, (o_name, o_type) in enumerate(zip(spec.get("output_name", spec.get("output", [])),
                                                                 spec.get("output", []), strict=False))],
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets,
            "title": node.get("_meta", {}).get("title", spec.get("display_name", node["class_type"])),
        })
    by_id = {n["id"]: n for n in nodes}
    for (src, slot), link_ids in out_links.items():
        by_id[ids[src]]["outputs"][slot]["links"] = link_ids
    return {"last_node_id": max(ids.values(), default=0), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def spec_output_type(object_info: dict[str, Any], class_type: str, slot: int) -> str:
    outputs = object_info.get(class_type, {}).get("output", [])
    return str(outputs[slot]) if slot < len(outputs) else "*"


def workflow_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """A frontend workflow as an API prompt (what the frontend's "queue" sends)."""
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    prompt: dict[str, Any] = {}
    for node in workflow.get("nodes", []):
        if node.get("mode", 0) == MODE_MUTED:
            continue
        if node.get("mode", 0) == MODE_BYPASS:
            raise GraphFormatError(f"node {node['id']} ({node['type']}) is bypassed; bypassed nodes are not supported")
        spec = object_info.get(node["type"])
        if spec is None:
            raise GraphFormatError(f"node {node['id']}: {node['type']} is not a registered node type")
        values = list(node.get("widgets_values") or [])
        linked = {i["name"]: i["link"] for i in node.get("inputs", []) if i.get("link") is not None}
        inputs: dict[str, Any] = {}
        for name, kind, opts in _inputs(spec):
            if _is_widget(kind, opts):
                value = values.pop(0) if values else opts.get("default")
                if _has_control(name, kind, opts) and values:
                    values.pop(0)
                if name not in linked:
                    inputs[name] = value
            if name in linked:
                link = links[linked[name]]
                if nodes.get(link[1], {}).get("mode", 0) == MODE_MUTED:
                    continue
                inputs[name] = [str(link[1]), int(link[2])]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
