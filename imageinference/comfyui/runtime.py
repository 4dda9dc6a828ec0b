"""Bring a real ComfyUI into this process (adapter): path, CPU fallback, offline switches.

ComfyUI decides its device when `comfy.model_management` is first imported, from `comfy.cli_args.args`;
on a machine without a usable GPU that import fails unless `--cpu` is set first, as `main.py --cpu` would.
"""

from __future__ import annotations

import os
from pathlib import Path

from .env import OFFLINE_ENV, add_comfyui_to_path


def use_inprocess_comfyui(path: Path | None = None) -> Path:
    """Make ComfyUI importable here and safe to import on a CPU-only machine. Idempotent."""
    root = add_comfyui_to_path(path)
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import comfy.cli_args
    import torch

    if not torch.cuda.is_available():
        try:
            usable = torch.cuda.device_count() > 0 and torch.cuda.current_device() >= 0
        except RuntimeError:
            usable = False
        if not usable:
            comfy.cli_args.args.cpu = True
    return root
