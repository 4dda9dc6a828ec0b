"""Tiny random-weight models that ComfyUI 0.8.0's own loaders accept (adapter: needs ComfyUI importable).

Each file is written with the library's own classes (ComfyUI's `comfy.ldm.*` / `comfy.cldm`, transformers' CLIP,
spandrel's upscalers, ultralytics' YOLO), with deterministic weights, into a cache folder outside the repository.
Files are keyed by GENERATOR_VERSION: change it when a builder changes so stale files are not reused.
Shapes follow ../shared/reference/comfyui-testing.md: where ComfyUI fixes a config in code (CLIP-L, the VAEs,
Flux's hidden size) the model is full size; elsewhere it is as small as detection allows.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..comfyui.env import comfyui_path
from ..comfyui.runtime import use_inprocess_comfyui

GENERATOR_VERSION = "v1"
log = logging.getLogger(__name__)


def cache_root() -> Path:
    base = os.environ.get("IMAGEINFERENCE_CACHE") or str(Path.home() / ".cache" / "imageinference-nodes")
    return Path(base) / "tiny-models" / GENERATOR_VERSION


@dataclass(frozen=True)
class TinyModel:
    key: str
    folder: str  # ComfyUI models sub-folder (folder_paths name)
    filename: str
    build: Callable[[Path, Path], None]  # (destination file, models root) -> None

    def path(self, root: Path) -> Path:
        return root / self.folder / self.filename


# ---------------------------------------------------------------- weight initialisation

def _randomize(module, seed: int) -> None:
    """Deterministic fan-in scaled normal weights, unit norm scales, small biases (ComfyUI's ops skip init)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            else:
                p.fill_(1.0)


def _save(state_dict, dest: Path, dtype=None, metadata: dict[str, str] | None = None) -> None:
    """Write atomically: a half-written cache file must never be mistaken for a model."""
    import safetensors.torch

    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
               for k, v in state_dict.items()}
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".tmp")
    os.close(fd)
    try:
        safetensors.torch.save_file(tensors, tmp, metadata=metadata)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------- SD1.5 family

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    # SD1.5 uses [1, 2, 4, 4]; detection only needs model_channels 320 and context_dim 768.
    "channel_mult": [1, 1, 1, 1], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
    "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SD_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
          "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def _vae_state_dict(z_channels: int, seed: int):
    import comfy.ldm.models.autoencoder as ae

    ddconfig = dict(SD_VAE, z_channels=z_channels)
    # Flux / SD3 VAEs carry no quant convs; ComfyUI infers that from the missing keys.
    vae = ae.AutoencoderKL(ddconfig=ddconfig, embed_dim=z_channels)
    _randomize(vae, seed)
    sd = vae.state_dict()
    if z_channels != 4:
        sd = {k: v for k, v in sd.items() if "quant_conv" not in k}
    return sd


def _clip_l_state_dict(seed: int):
    import torch
    import transformers

    config_path = comfyui_path() / "comfy" / "sd1_clip_config.json"
    config = transformers.CLIPTextConfig(**json.loads(config_path.read_text()))
    torch.manual_seed(seed)
    model = transformers.CLIPTextModel(config)
    return model.state_dict()


def _sd15_unet():
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops

    config = dict(SD15_UNET)
    return openaimodel.UNetModel(operations=comfy.ops.disable_weight_init, **config)


def build_sd15_checkpoint(dest: Path, root: Path) -> None:
    import torch

    unet = _sd15_unet()
    _randomize(unet, 1501)
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()}
    del unet
    sd.update({f"cond_stage_model.transformer.{k}": v for k, v in _clip_l_state_dict(1502).items()})
    sd.update({f"first_stage_model.{k}": v for k, v in _vae_state_dict(4, 1503).items()})
    _save(sd, dest, torch.float16, {"imageinference": "tiny random-weight SD1.5-shaped checkpoint"})


def build_sd15_controlnet(dest: Path, root: Path) -> None:
    import comfy.cldm.cldm as cldm
    import comfy.ops
    import torch

    config = {k: v for k, v in SD15_UNET.items() if k != "out_channels"}
    net = cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config)
    _randomize(net, 1504)
    _save({f"control_model.{k}": v for k, v in net.state_dict().items()}, dest, torch.float16)


def build_sd15_lora(dest: Path, root: Path) -> None:
    """Rank-4 kohya LoRA covering every UNet and text-encoder weight that ComfyUI's key map knows."""
    import comfy.lora
    import comfy.sd
    import torch

    ckpt = TINY["sd15"].path(root)
    model, clip, _vae, _ = comfy.sd.load_checkpoint_guess_config(str(ckpt), output_vae=False, output_clip=True)[:4]
    gen = torch.Generator().manual_seed(1505)
    rank = 4
    out = {}
    for key_map, prefix, patcher in (
        (comfy.lora.model_lora_keys_unet(model.model, {}), "lora_unet_", model),
        (comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {}), "lora_te_", clip.patcher),
    ):
        weights = patcher.model.state_dict()
        for lora_name, weight_key in key_map.items():
            if not isinstance(lora_name, str) or not lora_name.startswith(prefix) or isinstance(weight_key, tuple):
                continue
            w = weights.get(weight_key)
            if w is None or w.ndim not in (2, 4):
                continue
            down_shape = (rank, w.shape[1], *w.shape[2:])
            up_shape = (w.shape[0], rank, *([1] * (w.ndim - 2)))
            out[f"{lora_name}.lora_down.weight"] = torch.randn(down_shape, generator=gen) * 0.05
            out[f"{lora_name}.lora_up.weight"] = torch.randn(up_shape, generator=gen) * 0.05
            out[f"{lora_name}.alpha"] = torch.tensor(float(rank))
    _save(out, dest, torch.float16)


# ---------------------------------------------------------------- transformer models

def build_flux(dest: Path, root: Path) -> None:
    import comfy.ldm.flux.model as flux
    import comfy.ops
    import torch

    # Detection fixes 24 heads and axes_dim [16, 56, 56], so hidden_size must be 3072.
    net = flux.Flux(
        image_model="flux", operations=comfy.ops.disable_weight_init, in_channels=16, out_channels=16,
        vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=1,
        depth_single_blocks=1, axes_dim=[16, 56, 56], theta=10000, patch_size=2, qkv_bias=True,
        guidance_embed=True, txt_ids_dims=[],
    )
    _randomize(net, 1601)
    _save(net.state_dict(), dest, torch.bfloat16, {"imageinference": "tiny random-weight FLUX.1-dev-shaped model"})


def _sincos_2d(embed_dim: int, grid: int):
    import torch

    def one_d(dim: int, pos):
        omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
        out = pos.reshape(-1, 1).double() * omega.reshape(1, -1)
        return torch.cat([out.sin(), out.cos()], dim=1)

    coords = torch.arange(grid, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    emb = torch.cat([one_d(embed_dim // 2, gy), one_d(embed_dim // 2, gx)], dim=1)
    return emb.float().unsqueeze(0)


def make_sd3(depth: int, seed: int):
    """An SD3-shaped MMDiT: detection ties hidden size to 64 x depth."""
    import comfy.ldm.modules.diffusionmodules.mmdit as mmdit
    import comfy.ops
    import torch

    hidden = 64 * depth
    pos_max = 64
    net = mmdit.MMDiT(
        input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=depth, adm_in_channels=2048,
        context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 4096, "out_features": hidden}},
        pos_embed_max_size=pos_max, num_patches=pos_max * pos_max, pos_embed_scaling_factor=None,
        x_block_self_attn_layers=[], operations=comfy.ops.disable_weight_init, dtype=torch.float32,
    )
    _randomize(net, seed)
    sd = net.state_dict()
    # ComfyUI allocates pos_embed with torch.empty; an unfilled table would be saved as garbage or inf.
    sd["pos_embed"] = _sincos_2d(hidden, pos_max)
    return sd


def build_sd3(dest: Path, root: Path) -> None:
    import torch

    _save(make_sd3(2, 1701), dest, torch.float16, {"imageinference": "tiny random-weight SD3-shaped MMDiT"})


def build_vae16(dest: Path, root: Path) -> None:
    import torch

    _save(_vae_state_dict(16, 1801), dest, torch.float16)


# ---------------------------------------------------------------- text encoders for FLUX / SD3

TINY_T5_CONFIG = {"num_layers": 1, "num_heads": 2, "d_ff": 64}
"""Pass as model_options={"t5xxl_model_config": TINY_T5_CONFIG} to comfy.sd.load_clip: d_model stays 4096
(FLUX's context size), so only the vocabulary table is large (263 MiB in fp16)."""


def build_clip_l(dest: Path, root: Path) -> None:
    """Standalone CLIP-L in the layout ComfyUI's text-encoder loaders look for (`text_model.` keys)."""
    import torch

    sd = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in _clip_l_state_dict(1502).items()}
    _save(sd, dest, torch.float16)


def build_t5_tiny(dest: Path, root: Path) -> None:
    import comfy.ops
    import comfy.text_encoders.t5 as t5
    import torch

    config = json.loads((comfyui_path() / "comfy" / "text_encoders" / "t5_config_xxl.json").read_text())
    config.update(TINY_T5_CONFIG)
    net = t5.T5(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    _randomize(net, 1903)
    _save(net.state_dict(), dest, torch.float16)


# ---------------------------------------------------------------- upscalers and detector

def build_compact_2x(dest: Path, root: Path) -> None:
    SRVGGNetCompact = importlib.import_module("spandrel.architectures.Compact.__arch.SRVGG").SRVGGNetCompact

    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=16, num_conv=2, upscale=2, act_type="prelu")
    _randomize(net, 1901)
    _save(net.state_dict(), dest)


def build_esrgan_4x(dest: Path, root: Path) -> None:
    RRDBNet = importlib.import_module("spandrel.architectures.ESRGAN.__arch.RRDB").RRDBNet

    net = RRDBNet(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    _randomize(net, 1902)
    _save(net.state_dict(), dest)


def build_yolo(dest: Path, root: Path) -> None:
    """A YOLOv8n detector built from ultralytics' bundled yaml (no download); random weights find nothing."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    from ultralytics import YOLO

    torch.manual_seed(2001)
    model = YOLO("yolov8n.yaml")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".{os.getpid()}.tmp.pt")  # another test worker may be writing it too
    model.save(str(tmp))
    os.replace(tmp, dest)


TINY: dict[str, TinyModel] = {m.key: m for m in (
    TinyModel("sd15", "checkpoints", "tiny_sd15.safetensors", build_sd15_checkpoint),
    TinyModel("sd15_lora", "loras", "tiny_sd15_lora.safetensors", build_sd15_lora),
    TinyModel("sd15_controlnet", "controlnet", "tiny_sd15_controlnet.safetensors", build_sd15_controlnet),
    TinyModel("flux", "diffusion_models", "tiny_flux.safetensors", build_flux),
    TinyModel("sd3", "diffusion_models", "tiny_sd3.safetensors", build_sd3),
    TinyModel("vae16", "vae", "tiny_vae16.safetensors", build_vae16),
    TinyModel("upscale_2x", "upscale_models", "tiny_compact_2x.safetensors", build_compact_2x),
    TinyModel("upscale_4x", "upscale_models", "tiny_esrgan_4x.safetensors", build_esrgan_4x),
    TinyModel("yolo", "ultralytics/bbox", "tiny_yolov8n.pt", build_yolo),
    TinyModel("clip_l", "text_encoders", "tiny_clip_l_text_model.safetensors", build_clip_l),
    TinyModel("t5_tiny", "text_encoders", "tiny_t5xxl_1layer.safetensors", build_t5_tiny),
)}
# The LoRA is derived from the loaded checkpoint, so the checkpoint is built first.
BUILD_ORDER = ("sd15", "sd15_lora", "sd15_controlnet", "upscale_2x", "upscale_4x", "vae16", "sd3", "flux", "yolo",
               "clip_l", "t5_tiny")


def ensure_tiny_models(keys: tuple[str, ...] | list[str] | None = None, root: Path | None = None) -> Path:
    """Build the named tiny models (all by default) that are not cached yet; return the models root."""
    use_inprocess_comfyui()
    root = root or cache_root()
    wanted = set(keys or BUILD_ORDER)
    if "sd15_lora" in wanted:
        wanted.add("sd15")
    for key in BUILD_ORDER:
        model = TINY[key]
        dest = model.path(root)
        if key in wanted and not dest.exists():
            log.info("building tiny model %s -> %s", key, dest)
            build_once(dest, functools.partial(model.build, dest, root))
    return root


def build_once(dest: Path, build: Callable[[], None]) -> None:
    """Build `dest` unless it is cached. Test workers running in parallel may need the same file at once: the first
    builds it under a lock beside it, the others wait for that lock and then find the file built."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(f".{dest.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not dest.exists():
            build()


def link_models(root: Path, models_dir: Path, keys: tuple[str, ...] | list[str] | None = None) -> None:
    """Symlink cached tiny models into a ComfyUI models folder (e.g. <base-directory>/models)."""
    for key in keys or BUILD_ORDER:
        model = TINY[key]
        src, dst = model.path(root), model.path(models_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            dst.symlink_to(src)
