"""ComfyUI entry point of the imageInference node pack (V3 API). Nothing else lives here."""

from .imageinference.comfyui.entrypoint import comfy_entrypoint

# The frontend extension (menu entry "Show imageInference request", request files dropped on the canvas).
WEB_DIRECTORY = "./web"

__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
