"""What `python -m imageinference info` reports."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..comfyui.env import HOW_TO_GET_COMFYUI, comfyui_found, comfyui_path, comfyui_version
from ..server.config import API_KEY_ENV, BASE_PATH, EndpointConfig


def endpoint_info() -> dict[str, Any]:
    """Where ComfyUI answers imageInference tasks once it runs with this pack, and who may use it."""
    config = EndpointConfig.from_env()
    return {"path": BASE_PATH, "rest": f"POST http://<comfyui-host>:<port>{BASE_PATH}",
            "websocket": f"ws://<comfyui-host>:<port>{BASE_PATH}",
            "access": "loopback clients only (no API key)" if config.loopback_only
            else f"every task needs the key in {API_KEY_ENV}"}


def registered_node_ids() -> list[str]:
    """Node ids the pack registers, read from the real node classes (needs ComfyUI importable)."""
    from ..comfyui.runtime import use_inprocess_comfyui

    use_inprocess_comfyui()
    from ..comfyui.nodes.extension import node_classes

    return [cls.GET_SCHEMA().node_id for cls in node_classes()]


def collect_info() -> dict[str, Any]:
    root = comfyui_path()
    found = comfyui_found(root)
    info: dict[str, Any] = {
        "pack": "imageinference-nodes",
        "version": __version__,
        "comfyui": {"found": found, "path": str(root), "version": comfyui_version(root) if found else None},
        "endpoint": endpoint_info(),
    }
    if found:
        from ..comfyui.server_process import choose_device

        info["device"] = choose_device().reason  # where `run` (an embedded ComfyUI) computes
        try:
            info["nodes"] = registered_node_ids()
        except Exception as exc:  # an import failure here is exactly what `info` must report
            info["nodes"] = []
            info["nodesError"] = f"{type(exc).__name__}: {exc}"
    else:
        info["nodes"] = []
        info["howToGetComfyUI"] = HOW_TO_GET_COMFYUI
    return info


def format_info(info: dict[str, Any]) -> str:
    comfy = info["comfyui"]
    lines = [f"imageinference-nodes {info['version']}"]
    if comfy["found"]:
        lines.append(f"ComfyUI {comfy['version'] or '(unknown version)'} found at {comfy['path']}")
    else:
        lines.append(f"ComfyUI NOT found at {comfy['path']} (set COMFYUI_PATH). {info['howToGetComfyUI']}")
    if "device" in info:
        lines.append(f"an embedded run (`run`, `smoke`) computes on the {info['device']}")
    if "nodesError" in info:
        lines.append(f"node import failed: {info['nodesError']}")
    lines.append(f"nodes ({len(info['nodes'])}): " + (", ".join(info["nodes"]) or "(need ComfyUI to list)"))
    endpoint = info.get("endpoint")
    if endpoint:
        lines.append(f"imageInference endpoint: {endpoint['path']} on ComfyUI's own port ({endpoint['rest']}; "
                     f"WebSocket {endpoint['websocket']}); {endpoint['access']}")
    return "\n".join(lines)
