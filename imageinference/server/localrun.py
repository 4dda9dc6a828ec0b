"""A local ComfyUI with this pack and the tiny random-weight models, for the endpoint's tests and benchmark.

Its images are noise: this checks the endpoint, not image quality. Pure (ComfyUI runs in a child process).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..comfyui.server_process import ComfyServer

TINY_MODEL = "test:sd15@1"
TINY_CATALOG = {TINY_MODEL: {"kind": "checkpoint", "architecture": "sd-1-5",
                             "files": {"model": "checkpoints/tiny_sd15.safetensors"}}}


def link_tiny(models_root: Path, models_dir: Path) -> None:
    from ..testing.tiny_models import link_models

    link_models(models_root, models_dir)


def prepare(base: Path, models_root: Path, env: dict[str, str] | None = None,
            extra_args: list[str] | None = None) -> ComfyServer:
    """A ComfyServer in `base` (kept across restarts) with the tiny models and a catalog naming them."""
    env = dict(env or {})
    if "IMAGEINFERENCE_CATALOG" not in env and not os.environ.get("IMAGEINFERENCE_CATALOG"):
        catalog = base / "catalog.json"
        base.mkdir(parents=True, exist_ok=True)
        catalog.write_text(json.dumps({"version": 1, "models": TINY_CATALOG}))
        env["IMAGEINFERENCE_CATALOG"] = str(catalog)
    server = ComfyServer(base, env=env, extra_args=extra_args)
    server.prepare()
    link_tiny(models_root, server.models_dir)
    return server


@contextmanager
def endpoint_server(base: Path, models_root: Path, env: dict[str, str] | None = None,
                    extra_args: list[str] | None = None) -> Iterator[ComfyServer]:
    server = prepare(base, models_root, env, extra_args)
    try:
        server.start()
        yield server
    finally:
        server.stop()
