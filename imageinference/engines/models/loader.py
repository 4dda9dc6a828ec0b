"""Load what an AIR names: all-in-one checkpoints and component models (adapter over ComfyUI's loaders).

Every file is read the same safe way: safetensors, or a pickle-based file (.ckpt/.pt/.pth) through torch's
weights-only unpickler (`safe_load=True`), whatever ComfyUI's own default is; a file that needs more is refused
with the contract's error, never executed. Files come only from the model folders (catalog paths).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass
from typing import Any

import comfy.sd
import comfy.utils

from ...contract.architectures import profile_for
from ...contract.errors import ContractError
from .catalog import Catalog
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


def safe_state_dict(path: str, air: str, parameter: str) -> tuple[dict[str, Any], Any]:
    """(tensors, metadata) of a model file, loaded without running any code it may carry."""
    try:
        return comfy.utils.load_torch_file(path, safe_load=True, return_metadata=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError) as exc:
        raise ContractError.single(
            "invalidModelFile", f"{air}: {path} cannot be loaded safely as model weights (only safetensors, or "
            f"pickled tensors with nothing else in them, are accepted): {str(exc).splitlines()[0][:300]}",
            parameter, "string") from None


def _vae(path: str, air: str, parameter: str) -> Any:
    return comfy.sd.VAE(sd=safe_state_dict(path, air, parameter)[0])


def load_model(air: str, catalog: Catalog, vae_air: str | None = None, parameter: str = "model") -> LoadedModel:
    entry = catalog.require(air, parameter, ("checkpoint", "diffusionModel"))
    arch = entry.architecture or profile_for(entry.air).architecture
    path = resolve_file(entry, entry.files["model"], parameter)
    sd, metadata = safe_state_dict(path, entry.air, parameter)
    if entry.kind == "checkpoint":
        loaded = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True, metadata=metadata)
        if loaded is None:
            raise _undetected(entry.air, path, parameter)
        model, clip, vae = loaded[:3]
    else:
        model = comfy.sd.load_diffusion_model_state_dict(sd, metadata=metadata)
        if model is None:
            raise _undetected(entry.air, path, parameter)
        encoders = [resolve_file(entry, p, parameter) for p in entry.files.get("textEncoders", [])]
        clip = None
        if encoders:
            clip_type = next((t for prefix, t in CLIP_TYPES.items() if (arch or "").startswith(prefix)),
                             comfy.sd.CLIPType.STABLE_DIFFUSION)
            clip = comfy.sd.load_clip(encoders, clip_type=clip_type,
                                      model_options=entry.options.get("textEncoderOptions", {}))
        vae = None
    if "vae" in entry.files:  # a separate VAE file in the entry replaces a checkpoint's own VAE
        vae = _vae(resolve_file(entry, entry.files["vae"], parameter), entry.air, parameter)
    if vae_air:
        vae_entry = catalog.require(vae_air, "vae", ("vae",))
        vae = _vae(resolve_file(vae_entry, vae_entry.files["model"], "vae"), vae_entry.air, "vae")
    return LoadedModel(entry.air, arch, model, clip, vae)


def _undetected(air: str, path: str, parameter: str) -> ContractError:
    return ContractError.single("invalidModelFile", f"{air}: ComfyUI does not recognise {path} as a model it "
                                "can run (its kind or architecture in the catalog may be wrong)", parameter, "string")


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
    lora = safe_state_dict(path, path, "lora")[0]
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

    entry = catalog.require(air, parameter, ("upscaler",))
    sd = safe_state_dict(resolve_file(entry, entry.files["model"], parameter), air, parameter)[0]
    if "module.layers.0.residual_group.blocks.0.norm1.weight" in sd:
        sd = comfy.utils.state_dict_prefix_replace(sd, {"module.": ""})
    model = ModelLoader().load_from_state_dict(sd).eval()
    if not isinstance(model, ImageModelDescriptor):
        raise ContractError.single("invalidModel", f"{air} is not a single-image upscaler", parameter, "string")
    return model


def load_controlnet(air: str, catalog: Catalog, parameter: str) -> Any:
    import comfy.controlnet

    entry = catalog.require(air, parameter, ("controlNet",))
    path = resolve_file(entry, entry.files["model"], parameter)
    control = comfy.controlnet.load_controlnet(path)  # ComfyUI reads ControlNets with safe_load=True itself
    if control is None:
        raise _undetected(air, path, parameter)
    return control
