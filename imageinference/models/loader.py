"""Load what an AIR names: all-in-one checkpoints and component models (adapter over ComfyUI's loaders)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import comfy.sd
import comfy.utils

from ..catalog import Catalog
from ..schema.architectures import profile_for
from .resolve import resolve_file

log = logging.getLogger(__name__)

CLIP_TYPES = {"flux": comfy.sd.CLIPType.FLUX, "sd-3": comfy.sd.CLIPType.SD3}


@dataclass
class LoadedModel:
    air: str
    architecture: str | None
    model: Any
    clip: Any
    vae: Any


def load_model(air: str, catalog: Catalog, vae_air: str | None = None, parameter: str = "model") -> LoadedModel:
    entry = catalog.require(air, parameter, ("checkpoint", "diffusionModel"))
    arch = entry.architecture or profile_for(entry.air).architecture
    if entry.kind == "checkpoint":
        ckpt = resolve_file(entry, entry.files["model"], parameter)
        model, clip, vae = comfy.sd.load_checkpoint_guess_config(ckpt, output_vae=True, output_clip=True)[:3]
    else:
        unet = resolve_file(entry, entry.files["model"], parameter)
        model = comfy.sd.load_diffusion_model(unet)
        encoders = [resolve_file(entry, p, parameter) for p in entry.files.get("textEncoders", [])]
        clip = None
        if encoders:
            clip_type = next((t for prefix, t in CLIP_TYPES.items() if (arch or "").startswith(prefix)),
                             comfy.sd.CLIPType.STABLE_DIFFUSION)
            clip = comfy.sd.load_clip(encoders, clip_type=clip_type,
                                      model_options=entry.options.get("textEncoderOptions", {}))
        vae = None
        if "vae" in entry.files:
            vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(resolve_file(entry, entry.files["vae"], parameter)))
    if vae_air:
        vae_entry = catalog.require(vae_air, "vae", ("vae",))
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(resolve_file(vae_entry, vae_entry.files["model"], "vae")))
    return LoadedModel(entry.air, arch, model, clip, vae)


class _KeyCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.keys: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("lora key not loaded:"):
            self.keys.append(message.split(":", 1)[1].strip())


def apply_lora(model: Any, clip: Any, path: str, weight: float) -> tuple[Any, Any, list[str]]:
    """ComfyUI's own LoRA loading; returns the LoRA keys that matched no weight of this model."""
    lora = comfy.utils.load_torch_file(path, safe_load=True)
    collector = _KeyCollector()
    root = logging.getLogger()
    root.addHandler(collector)
    try:
        model, clip = comfy.sd.load_lora_for_models(model, clip, lora, weight, weight)
    finally:
        root.removeHandler(collector)
    return model, clip, collector.keys


def load_upscaler(air: str, catalog: Catalog, parameter: str = "hiresFix.model") -> Any:
    """A spandrel image upscaler the catalog names, loaded the way ComfyUI's UpscaleModelLoader does (safe load)."""
    from spandrel import ImageModelDescriptor, ModelLoader

    from ..schema.errors import ContractError

    entry = catalog.require(air, parameter, ("upscaler",))
    sd = comfy.utils.load_torch_file(resolve_file(entry, entry.files["model"], parameter), safe_load=True)
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in sd:
        sd = comfy.utils.state_dict_prefix_replace(sd, {"module.": ""})
    model = ModelLoader().load_from_state_dict(sd).eval()
    if not isinstance(model, ImageModelDescriptor):
        raise ContractError.single("invalidModel", f"{air} is not a single-image upscaler", parameter, "string")
    return model


def load_controlnet(air: str, catalog: Catalog, parameter: str) -> Any:
    import comfy.controlnet

    entry = catalog.require(air, parameter, ("controlNet",))
    return comfy.controlnet.load_controlnet(resolve_file(entry, entry.files["model"], parameter))
