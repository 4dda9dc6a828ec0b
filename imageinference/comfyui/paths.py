"""Where the pack keeps its images inside ComfyUI, and the URL ComfyUI serves them from (adapter)."""

from __future__ import annotations

import os
from pathlib import Path

import folder_paths

from ..engines.imageio.deliver import STORE_SUBFOLDER
from ..engines.imageio.store import ImageStore


def image_store() -> ImageStore:
    return ImageStore(Path(folder_paths.get_output_directory()) / STORE_SUBFOLDER)


def public_base_url() -> str:
    """IMAGEINFERENCE_PUBLIC_URL, else the address this ComfyUI server listens on."""
    env = os.environ.get("IMAGEINFERENCE_PUBLIC_URL")
    if env:
        return env
    try:
        import server

        inst = server.PromptServer.instance
        host = inst.address if inst.address not in (None, "", "0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{inst.port}"
    except (ImportError, AttributeError):
        return "http://127.0.0.1:8188"
