"""What ComfyUI calls when it loads the pack: the node extension, and the task endpoint on ComfyUI's own server.

The only module that sees both the nodes and the server routes, so neither has to import the other.
"""

from __future__ import annotations

import logging

from comfy_api.latest import ComfyExtension


def install_endpoint() -> None:
    """Add the imageInference endpoint to the running PromptServer; a failure leaves the nodes working."""
    try:
        import server
    except ImportError:
        return
    instance = getattr(server.PromptServer, "instance", None)
    if instance is None:
        return
    try:
        from ..server.install import install

        install(instance)
    except Exception:
        logging.exception("[imageinference] the task endpoint could not be installed; the nodes still work")
    from ..server.frontend_routes import register

    register(instance.routes)  # what the pack's frontend extension (web/) calls
    from ..server.model_routes import register as register_model_routes

    register_model_routes(instance.routes)  # the AIR inputs' "Pull model" (key or loopback, like the endpoint)


async def comfy_entrypoint() -> ComfyExtension:
    from .nodes.extension import ImageInferenceExtension

    install_endpoint()
    return ImageInferenceExtension()
