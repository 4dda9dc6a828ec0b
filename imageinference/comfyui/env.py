"""Where ComfyUI lives and how to put it on sys.path. Pure: never imports ComfyUI itself."""

from __future__ import annotations

import os
import sys
from pathlib import Path

HOW_TO_GET_COMFYUI = (
    "ComfyUI is not on PyPI. `bash scripts/test.sh` or `bash scripts/main.sh` installs ComfyUI 0.8.0 at "
    "COMFYUI_PATH (default ~/ComfyUI): from COMFYUI_ARCHIVE (a .tar.gz of its source) when set, else with "
    "`git clone --depth 1 --branch v0.8.0 https://github.com/comfyanonymous/ComfyUI`. By hand: "
    "`mkdir -p ~/ComfyUI && tar -xzf ComfyUI-0.8.0.tar.gz -C ~/ComfyUI --strip-components=1`, or that git clone; "
    "or point COMFYUI_PATH at an existing ComfyUI 0.8.0"
)


OFFLINE_ENV = {"YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}
"""ComfyUI and the libraries it loads must never reach for a hub or a telemetry endpoint here."""


def comfyui_path() -> Path:
    """The ComfyUI checkout named by COMFYUI_PATH, default ~/ComfyUI (it may not exist)."""
    return Path(os.environ.get("COMFYUI_PATH") or Path.home() / "ComfyUI").expanduser()


def comfyui_found(path: Path | None = None) -> bool:
    root = path or comfyui_path()
    return (root / "main.py").is_file() and (root / "comfy").is_dir() and (root / "nodes.py").is_file()


def comfyui_version(path: Path | None = None) -> str | None:
    root = path or comfyui_path()
    version_file = root / "comfyui_version.py"
    if not version_file.is_file():
        return None
    for line in version_file.read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def add_comfyui_to_path(path: Path | None = None) -> Path:
    """Make `import comfy`, `nodes`, `folder_paths` work in this process; raise if ComfyUI is absent."""
    root = path or comfyui_path()
    if not comfyui_found(root):
        raise FileNotFoundError(f"No ComfyUI at {root}. {HOW_TO_GET_COMFYUI}")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return root
