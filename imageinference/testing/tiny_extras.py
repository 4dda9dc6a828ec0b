"""Tiny random-weight models for textual-inversion embeddings, SDXL-shaped UNets and a FLUX ControlNet, in the real
key layouts (adapter: needs ComfyUI importable).

- Embeddings for the tiny SD1.5 CLIP-L: a kohya-style safetensors file (`emb_params`, 2 x 768), the same vectors
  as a stable-diffusion-webui torch file (`string_to_param` {"*": ...}, loaded weights-only), and an SDXL-style
  file (`clip_l` 2 x 768 + `clip_g` 2 x 1280).
- SDXL-shaped UNets, UNet-only files that ComfyUI's detection reads as `SDXL` and `SDXLRefiner`: detection
  checks model_channels (320 / 384), context_dim (2048 / 1280), adm_in_channels (2816 / 2560) and the input
  transformer depths ([0,0,2,2,10,10] / [0,0,4,4,4,4,0,0]) and nothing else, so channel_mult is [1,1,...] and
  the output and middle blocks carry no transformers: 136 M and 168 M parameters (SDXL's are 2.6 G and 2.3 G).
  A third, `sdxl_unet_full`, keeps SDXL's middle and output transformer depths too (10 and [10,10,10,2,2,2,0,0,0]),
  so it has SDXL's 70 cross-attention layers in its 11 blocks, the layers an SDXL IP-Adapter patches: 283 M.
  Their text encoders are not built: CLIP-G's config is fixed in code at 694 M parameters, so tests give these
  UNets conditioning tensors of the right shapes (SDXL: context 2048 + pooled 1280; refiner: 1280 + 1280).
- A FLUX ControlNet in the XLabs layout (ComfyUI's `ControlNetFlux`: one double block, no single blocks, an image
  hint encoder and per-block output projections) at the tiny FLUX's width, which ComfyUI's loader detects as an
  XLabs FLUX ControlNet: 395 M parameters (the tiny FLUX's width is fixed at 3072 by detection).
Files are cached next to the other tiny models (same GENERATOR_VERSION folder).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from ..comfyui.runtime import use_inprocess_comfyui
from .tiny_models import TinyModel, _randomize, _save, build_once, cache_root

log = logging.getLogger(__name__)

EMBEDDING_VECTORS = 2


def _vectors(seed: int, width: int):
    import torch

    # CLIP token embeddings are small (std ~0.01-0.02); these are of that size
    return torch.randn(EMBEDDING_VECTORS, width, generator=torch.Generator().manual_seed(seed)) * 0.02


def build_sd15_embedding(dest: Path, root: Path) -> None:
    _save({"emb_params": _vectors(3101, 768)}, dest, None,
          {"imageinference": "tiny random textual-inversion embedding for CLIP-L (kohya layout)"})


def build_sd15_embedding_webui(dest: Path, root: Path) -> None:
    """The webui's torch layout; a plain dict of tensors, strings and ints, readable with weights_only=True."""
    import os
    import tempfile

    import torch

    data = {"string_to_token": {"*": torch.tensor(265)}, "string_to_param": {"*": _vectors(3101, 768)},
            "name": "tiny_webui", "step": 0}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(data, tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_sdxl_embedding(dest: Path, root: Path) -> None:
    _save({"clip_l": _vectors(3102, 768), "clip_g": _vectors(3103, 1280)}, dest, None,
          {"imageinference": "tiny random textual-inversion embedding for SDXL (clip_l + clip_g)"})


SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 1, 1],
    "transformer_depth_middle": 0, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0] * 9, "use_temporal_attention": False, "use_temporal_resblock": False,
}
SDXL_UNET_FULL = dict(SDXL_UNET, transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10])
SDXL_REFINER_UNET = dict(SDXL_UNET, adm_in_channels=2560, model_channels=384, num_res_blocks=[2, 2, 2, 2],
                         transformer_depth=[0, 0, 4, 4, 4, 4, 0, 0], channel_mult=[1, 1, 1, 1], context_dim=1280,
                         transformer_depth_output=[0] * 12)


def _unet(config: dict, seed: int, dest: Path, about: str) -> None:
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import torch

    net = openaimodel.UNetModel(operations=comfy.ops.disable_weight_init, **config)
    _randomize(net, seed)
    _save(net.state_dict(), dest, torch.float16, {"imageinference": about})


def build_sdxl_unet(dest: Path, root: Path) -> None:
    _unet(SDXL_UNET, 3201, dest, "tiny random-weight SDXL-shaped UNet (detected as SDXL)")


def build_sdxl_unet_full(dest: Path, root: Path) -> None:
    _unet(SDXL_UNET_FULL, 3203, dest, "tiny random-weight SDXL-shaped UNet with SDXL's 70 cross-attention layers")


def build_sdxl_refiner_unet(dest: Path, root: Path) -> None:
    _unet(SDXL_REFINER_UNET, 3202, dest, "tiny random-weight SDXL-refiner-shaped UNet (detected as SDXLRefiner)")


def build_flux_controlnet(dest: Path, root: Path) -> None:
    import comfy.ldm.flux.controlnet as flux_controlnet
    import comfy.ops
    import torch

    net = flux_controlnet.ControlNetFlux(
        image_model="flux", operations=comfy.ops.disable_weight_init, in_channels=16, out_channels=16,
        vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1,
        depth_single_blocks=0, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True,
        guidance_embed=True, txt_ids_dims=[])
    _randomize(net, 1701)
    _save(net.state_dict(), dest, torch.bfloat16, {"imageinference": "tiny random-weight FLUX ControlNet, XLabs layout"})


TINY_EXTRAS: dict[str, TinyModel] = {m.key: m for m in (
    TinyModel("embedding_sd15", "embeddings", "tiny_sd15_embedding.safetensors", build_sd15_embedding),
    TinyModel("embedding_sd15_webui", "embeddings", "tiny_webui_embedding.pt", build_sd15_embedding_webui),
    TinyModel("embedding_sdxl", "embeddings", "tiny_sdxl_embedding.safetensors", build_sdxl_embedding),
    TinyModel("sdxl_unet", "diffusion_models", "tiny_sdxl_unet.safetensors", build_sdxl_unet),
    TinyModel("sdxl_unet_full", "diffusion_models", "tiny_sdxl_unet_full.safetensors", build_sdxl_unet_full),
    TinyModel("flux_controlnet", "controlnet", "tiny_flux_controlnet_xlabs.safetensors", build_flux_controlnet),
    TinyModel("sdxl_refiner_unet", "diffusion_models", "tiny_sdxl_refiner_unet.safetensors", build_sdxl_refiner_unet),
)}


def ensure_tiny_extras(keys: tuple[str, ...] | list[str] | None = None, root: Path | None = None) -> Path:
    """Build the named tiny models of this module (all by default) that are not cached yet; return the root."""
    use_inprocess_comfyui()
    root = root or cache_root()
    for key in keys or TINY_EXTRAS:
        model = TINY_EXTRAS[key]
        dest = model.path(root)
        if not dest.exists():
            log.info("building tiny model %s -> %s", key, dest)
            build_once(dest, functools.partial(model.build, dest, root))
    return root


def link_extras(root: Path, models_dir: Path, keys: tuple[str, ...] | list[str] | None = None) -> None:
    """Symlink this module's cached tiny models into a ComfyUI models folder."""
    for key in keys or TINY_EXTRAS:
        model = TINY_EXTRAS[key]
        src, dst = model.path(root), model.path(models_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src)


def catalog_entries(prefix: str = "test") -> dict[str, dict]:
    """Catalog entries for this module's models (the embeddings by the names prompts use: their file names)."""
    def emb(key: str, arch: str) -> dict:
        return {"kind": "embedding", "architecture": arch, "files": {"model": f"embeddings/{TINY_EXTRAS[key].filename}"}}

    return {
        f"{prefix}:embedding-sd15@1": emb("embedding_sd15", "sd-1-5"),
        f"{prefix}:embedding-sd15@webui": emb("embedding_sd15_webui", "sd-1-5"),
        f"{prefix}:embedding-sdxl@1": emb("embedding_sdxl", "sdxl"),
        f"{prefix}:sdxl-unet@1": {"kind": "diffusionModel", "architecture": "sdxl",
                                  "files": {"model": f"diffusion_models/{TINY_EXTRAS['sdxl_unet'].filename}"}},
        f"{prefix}:sdxl-refiner-unet@1": {"kind": "diffusionModel", "architecture": "sdxl",
                                          "files": {"model": f"diffusion_models/{TINY_EXTRAS['sdxl_refiner_unet'].filename}"}},
        f"{prefix}:flux-cn@1": {"kind": "controlNet", "architecture": "flux-1-dev",
                                "files": {"model": f"controlnet/{TINY_EXTRAS['flux_controlnet'].filename}"}},
    }
