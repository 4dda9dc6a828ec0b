"""What ComfyUI calls when it loads the pack: the node extension (and, at start-up, the pack's HTTP routes).

The only module that sees both the nodes and the server routes, so neither has to import the other.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension


async def comfy_entrypoint() -> ComfyExtension:
    from .nodes.extension import ImageInferenceExtension

    return ImageInferenceExtension()
