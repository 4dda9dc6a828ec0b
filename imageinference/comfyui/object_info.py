"""`/object_info` entries built in-process from node classes (adapter), for converting graphs without a server."""

from __future__ import annotations

from typing import Any

from .runtime import use_inprocess_comfyui


def local_object_info() -> dict[str, Any]:
    """object_info for ComfyUI's core nodes (nodes.py) and this pack's nodes."""
    use_inprocess_comfyui()
    import nodes

    from .nodes.extension import node_classes

    info: dict[str, Any] = {}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        try:
            info[name] = {"input": cls.INPUT_TYPES(), "output": list(cls.RETURN_TYPES),
                          "output_name": list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES),
                          "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name)}
        except Exception:  # a core node whose inputs need a live server (rare); not needed for our graphs
            continue
    for cls in node_classes():
        node_info = cls.GET_NODE_INFO_V1()
        info[node_info["name"]] = node_info
    return info
