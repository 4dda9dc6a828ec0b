"""The pack's ComfyExtension: the one list of nodes that ComfyUI registers."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io


def node_classes() -> list[type[io.ComfyNode]]:
    from .controlnet import ControlNetApply
    from .deep_cache import DeepCacheNode
    from .embeddings import EmbeddingsNode
    from .export import ExportRequest
    from .face_detailer import FaceDetailer
    from .hires_fix import HiresFixNode
    from .image_inference import ImageInference
    from .ip_adapter import GuideImages, IPAdapter, Redux
    from .load_image import LoadImageString
    from .lora_stack import LoraStack
    from .model_loader import AIRModelLoader
    from .outpaint import OutpaintNode
    from .output import ImageInferenceOutput
    from .prompt import PromptNode
    from .pulid import PuLIDNode
    from .refiner import RefinerNode
    from .scheduler import SchedulerNode
    from .step_cache import DBCacheNode, FBCacheNode, TeaCacheNode
    from .transparent_decode import (
        LayerDiffuseLoRA,
        TransparentVAEDecode,
        TransparentVAEEncode,
        TransparentVAENode,
    )
    from .watermark import WatermarkNode

    return [AIRModelLoader, LoraStack, PromptNode, ControlNetApply, OutpaintNode, HiresFixNode, ImageInference,
            LoadImageString, ImageInferenceOutput, ExportRequest, SchedulerNode, TeaCacheNode, FBCacheNode, DBCacheNode,
            FaceDetailer, PuLIDNode, LayerDiffuseLoRA, TransparentVAEDecode, TransparentVAEEncode, TransparentVAENode,
            WatermarkNode, GuideImages, IPAdapter,
            Redux, EmbeddingsNode, RefinerNode, DeepCacheNode]


class ImageInferenceExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return node_classes()
