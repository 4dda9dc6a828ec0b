"""ComfyUI entry point of the imageInference node pack (V3 API). Nothing else lives here."""

from .imageinference.entrypoint import comfy_entrypoint

__all__ = ["comfy_entrypoint"]
