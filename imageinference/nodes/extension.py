"""The pack's ComfyExtension: the one list of nodes that ComfyUI registers."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


def node_classes() -> list[type[io.ComfyNode]]:
    from .scheduler import SchedulerNode

    return [SchedulerNode]


class ImageInferenceExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()


async def comfy_entrypoint() -> ImageInferenceExtension:
    return ImageInferenceExtension()
