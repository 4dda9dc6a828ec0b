"""`python -m imageinference smoke`: prove the set-up on an embedded ComfyUI with tiny random-weight models.

Runs ComfyUI's own core txt2img graph on a tiny SD1.5-shaped checkpoint (random weights: the image is noise,
the point is that every part loads and runs) and checks that ComfyUI registered this pack's nodes.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..comfyui.env import HOW_TO_GET_COMFYUI, comfyui_found, comfyui_path


def run_smoke(keep: bool = False) -> int:
    root = comfyui_path()
    if not comfyui_found(root):
        print(f"ComfyUI not found at {root}. {HOW_TO_GET_COMFYUI}", file=sys.stderr)
        return 2
    from ..comfyui.server_process import ComfyServer, core_txt2img_prompt
    from ..testing.tiny_models import TINY, ensure_tiny_models, link_models
    from .info import registered_node_ids

    print("building / reusing tiny random-weight models (cached) ...", file=sys.stderr)
    models = ensure_tiny_models(["sd15"])
    base = Path(tempfile.mkdtemp(prefix="imageinference-smoke-"))
    summary: dict[str, Any] = {"comfyui": str(root), "baseDirectory": str(base)}
    try:
        link_models(models, base / "models", ["sd15"])
        with ComfyServer(base) as server:
            object_info = server.object_info()
            ours = registered_node_ids()
            summary["packNodesRegistered"] = {nid: nid in object_info for nid in ours}
            started = time.monotonic()
            result = server.run_prompt(core_txt2img_prompt(TINY["sd15"].filename, seed=42))
            summary["coreTxt2img"] = {"status": result.status, "seconds": round(time.monotonic() - started, 2),
                                      "images": [img.filename for img in result.images], "errors": result.errors}
            if result.images:
                from PIL import Image

                summary["coreTxt2img"]["size"] = list(Image.open(io.BytesIO(result.images[0].data)).size)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    ok = summary.get("coreTxt2img", {}).get("status") == "success" and all(
        summary.get("packNodesRegistered", {}).values())
    return 0 if ok else 1
