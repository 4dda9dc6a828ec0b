"""Tiny random-weight IP-Adapters, FLUX Redux and the CLIP vision encoders they need, in the real key layouts
(adapter: needs ComfyUI importable).

- Image encoders: ComfyUI's CLIP vision loader picks its config from key names and fixes the sizes in code, so
  the encoders are full size: ViT-L/14 (the smallest config it accepts: 24 layers, 1024 wide, 768-wide pooled
  embeddings; 0.6 GB in fp16) and SigLIP so400m/14 at 384 (what Redux reads: 1152 wide; 0.8 GB).
- SD1.5 IP-Adapters (tencent-ailab layout: `image_proj.*`, `ip_adapter.<n>.to_{k,v}_ip`) shaped for the tiny
  SD1.5 UNet (its 16 cross-attention layers read from the checkpoint) and the ViT-L encoder: plain (linear
  projection, 4 tokens), plus (2-layer resampler, 16 tokens) and full-face (per-token MLP).
- An SDXL IP-Adapter (same layout, plain, 70 layers of 2048-wide context) shaped for the tiny SDXL UNet that has
  SDXL's 70 cross-attention layers (`tiny_extras.sdxl_unet_full`) and the ViT-L encoder.
- A FLUX IP-Adapter in the XLabs layout (`ip_adapter_proj_model.*`, `double_blocks.<i>.processor.*`) for the
  tiny FLUX (one double block), and FLUX Redux (ComfyUI's `ReduxImageEncoder`, fixed size, 0.13 GB).
Files are cached next to the other tiny models (same GENERATOR_VERSION folder).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ..comfyui.env import comfyui_path
from ..comfyui.runtime import use_inprocess_comfyui
from .tiny_models import TINY, TinyModel, _randomize, _save, build_once, cache_root, ensure_tiny_models

log = logging.getLogger(__name__)


def _encoder(config_file: str, seed: int):
    import comfy.clip_model
    import comfy.ops
    import torch

    config = json.loads((comfyui_path() / "comfy" / config_file).read_text())
    net = comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    _randomize(net, seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if re.search(r"(out_proj|fc2)\.weight$", name):
                p.mul_(0.3)  # keep the residual stream tame over 24-27 random layers (fp16 on the CPU)
            if name.endswith("class_embedding"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    return net.state_dict()


def build_clip_vision_vitl(dest: Path, root: Path) -> None:
    import torch

    _save(_encoder("clip_vision_config_vitl.json", 2101), dest, torch.float16,
          {"imageinference": "random-weight CLIP ViT-L/14 vision encoder (ComfyUI's vitl config)"})


def build_clip_vision_siglip(dest: Path, root: Path) -> None:
    import torch

    _save(_encoder("clip_vision_siglip_384.json", 2102), dest, torch.float16,
          {"imageinference": "random-weight SigLIP so400m/14-384 vision encoder (ComfyUI's siglip_384 config)"})


VITL_EMBEDS, VITL_HIDDEN, SD15_CONTEXT, SDXL_CONTEXT = 768, 1024, 768, 2048


def attention_widths(unet_file: Path, prefix: str = "") -> list[int]:
    """A UNet file's cross-attention widths in the adapter's key order (input, output, middle blocks)."""
    from safetensors import safe_open

    pattern = re.compile(rf"^{re.escape(prefix)}(input_blocks|middle_block|output_blocks)\.(\d+)\.(?:(\d+)\.)?"
                         r"transformer_blocks\.(\d+)\.attn2\.to_k\.weight$")
    rank = {"input_blocks": 0, "output_blocks": 1, "middle_block": 2}
    found = []
    with safe_open(str(unet_file), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
            m = pattern.match(key)
            if m:
                kind, a, b, layer = m.groups()
                block = int(a) if kind != "middle_block" else 0
                found.append(((rank[kind], block, int(layer)), f.get_slice(key).get_shape()[0]))
    return [width for _, width in sorted(found)]


def sd15_attention_widths(root: Path) -> list[int]:
    """The tiny SD1.5 UNet's cross-attention widths in the adapter's key order."""
    return attention_widths(TINY["sd15"].path(root), "model.diffusion_model.")


def _linear(gen, out_dim: int, in_dim: int, bias: bool = True):
    import torch

    w = {"weight": torch.randn(out_dim, in_dim, generator=gen) / math.sqrt(in_dim)}
    if bias:
        w["bias"] = torch.randn(out_dim, generator=gen) * 0.02
    return w


def _norm(dim: int):
    import torch

    return {"weight": torch.ones(dim), "bias": torch.zeros(dim)}


def _put(sd: dict, prefix: str, params: dict) -> None:
    sd.update({f"{prefix}.{k}": v for k, v in params.items()})


def _attention_layers(sd: dict, gen, widths: list[int], context: int) -> None:
    for j, width in enumerate(widths):
        for kv in ("k", "v"):
            _put(sd, f"ip_adapter.{2 * j + 1}.to_{kv}_ip", _linear(gen, width, context, bias=False))


def _sd15_layers(sd: dict, gen, root: Path) -> None:
    _attention_layers(sd, gen, sd15_attention_widths(root), SD15_CONTEXT)


def plain_adapter(widths: list[int], context: int, embeds: int, seed: int, tokens: int = 4) -> dict:
    """tencent-ailab's linear layout (plain, light, ViT-G): `tokens` tokens of `context` from pooled embeddings."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd: dict = {}
    _put(sd, "image_proj.proj", _linear(gen, tokens * context, embeds))
    _put(sd, "image_proj.norm", _norm(context))
    _attention_layers(sd, gen, widths, context)
    return sd


def _resampler(gen: Any, queries: int, dim: int, hidden: int, context: int, heads: int, depth: int) -> dict:
    """A perceiver resampler's `image_proj.*` tensors (64-wide heads), drawn from `gen` in one fixed order."""
    import torch

    inner = heads * 64
    sd: dict = {"image_proj.latents": torch.randn(1, queries, dim, generator=gen) / math.sqrt(dim)}
    _put(sd, "image_proj.proj_in", _linear(gen, dim, hidden))
    _put(sd, "image_proj.proj_out", _linear(gen, context, dim))
    _put(sd, "image_proj.norm_out", _norm(context))
    for i in range(depth):
        p = f"image_proj.layers.{i}"
        _put(sd, f"{p}.0.norm1", _norm(dim))
        _put(sd, f"{p}.0.norm2", _norm(dim))
        _put(sd, f"{p}.0.to_q", _linear(gen, inner, dim, bias=False))
        _put(sd, f"{p}.0.to_kv", _linear(gen, 2 * inner, dim, bias=False))
        _put(sd, f"{p}.0.to_out", _linear(gen, dim, inner, bias=False))
        _put(sd, f"{p}.1.0", _norm(dim))
        _put(sd, f"{p}.1.1", _linear(gen, 4 * dim, dim, bias=False))
        _put(sd, f"{p}.1.3", _linear(gen, dim, 4 * dim, bias=False))
    return sd


def plus_adapter(widths: list[int], context: int, hidden: int, seed: int, dim: int | None = None, heads: int = 12,
                 depth: int = 4, queries: int = 16) -> dict:
    """The perceiver-resampler layout (plus, plus-face): the released files have depth 4, 64-wide heads, 16
    queries; SD1.5 dim 768 (12 heads), SDXL dim 1280 (20 heads)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd = _resampler(gen, queries, dim or context, hidden, context, heads, depth)
    _attention_layers(sd, gen, widths, context)
    return sd


def full_face_adapter(widths: list[int], context: int, hidden: int, seed: int) -> dict:
    """The per-token MLP layout (full-face)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    sd: dict = {}
    _put(sd, "image_proj.proj.0", _linear(gen, hidden, hidden))
    _put(sd, "image_proj.proj.2", _linear(gen, context, hidden))
    _put(sd, "image_proj.proj.3", _norm(context))
    _attention_layers(sd, gen, widths, context)
    return sd


def save_adapter(sd: dict, dest: Path, what: str) -> Path:
    import torch

    _save(sd, dest, torch.float16, {"imageinference": f"tiny random IP-Adapter, {what}"})
    return dest


def tiny_clip_vision(workdir: Path, projection_dim: int, hidden_size: int = 64, layers: int = 3, seed: int = 2100):
    """A ComfyUI CLIP vision model (comfy.clip_vision.ClipVisionModel, the class its loader returns) with a small
    config of the given output widths: pooled `projection_dim` (768 ViT-L, 1024 ViT-H, 1280 ViT-bigG) and hidden
    `hidden_size`. ComfyUI's loader fixes full-size configs by key names, so this one is built, not loaded from a
    file; tests hand it to the adapters directly."""
    import comfy.clip_vision
    import torch

    config = {"attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "quick_gelu", "hidden_size": hidden_size,
              "image_size": 224, "initializer_factor": 1.0, "initializer_range": 0.02,
              "intermediate_size": 4 * hidden_size, "layer_norm_eps": 1e-05, "model_type": "clip_vision_model",
              "num_attention_heads": max(1, hidden_size // 32), "num_channels": 3, "num_hidden_layers": layers,
              "patch_size": 14, "projection_dim": projection_dim, "torch_dtype": "float32"}
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"tiny_clip_vision_{projection_dim}_{hidden_size}.json"
    path.write_text(json.dumps(config))
    encoder = comfy.clip_vision.ClipVisionModel(str(path))
    net = encoder.model
    _randomize(net, seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("class_embedding"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.02)
    encoder.imageinference_key = ("tiny", projection_dim, hidden_size, layers, seed)
    return encoder


def build_sd15_plain(dest: Path, root: Path) -> None:
    sd = plain_adapter(sd15_attention_widths(root), SD15_CONTEXT, VITL_EMBEDS, 2201)
    save_adapter(sd, dest, "SD1.5 plain layout, ViT-L")


def build_sdxl_plain(dest: Path, root: Path) -> None:
    """The plain SDXL layout (4 tokens of 2048) for the tiny SDXL UNet with SDXL's 70 cross-attention layers."""
    import torch

    from .tiny_extras import TINY_EXTRAS

    gen = torch.Generator().manual_seed(2204)
    sd: dict = {}
    _put(sd, "image_proj.proj", _linear(gen, 4 * SDXL_CONTEXT, VITL_EMBEDS))
    _put(sd, "image_proj.norm", _norm(SDXL_CONTEXT))
    _attention_layers(sd, gen, attention_widths(TINY_EXTRAS["sdxl_unet_full"].path(root)), SDXL_CONTEXT)
    _save(sd, dest, torch.float16, {"imageinference": "tiny random IP-Adapter, SDXL plain layout, ViT-L"})


def build_sd15_plus(dest: Path, root: Path, depth: int = 2, heads: int = 12, queries: int = 16) -> None:
    import torch

    gen = torch.Generator().manual_seed(2202)
    sd = _resampler(gen, queries, SD15_CONTEXT, VITL_HIDDEN, SD15_CONTEXT, heads, depth)
    _sd15_layers(sd, gen, root)
    _save(sd, dest, torch.float16, {"imageinference": "tiny random IP-Adapter, SD1.5 plus layout, ViT-L"})


def build_sd15_full_face(dest: Path, root: Path) -> None:
    import torch

    gen = torch.Generator().manual_seed(2203)
    sd: dict = {}
    _put(sd, "image_proj.proj.0", _linear(gen, VITL_HIDDEN, VITL_HIDDEN))
    _put(sd, "image_proj.proj.2", _linear(gen, SD15_CONTEXT, VITL_HIDDEN))
    _put(sd, "image_proj.proj.3", _norm(SD15_CONTEXT))
    _sd15_layers(sd, gen, root)
    _save(sd, dest, torch.float16, {"imageinference": "tiny random IP-Adapter, SD1.5 full-face layout, ViT-L"})


# The tiny SD1.5 checkpoint's output blocks carry their attention at 0-8 (ComfyUI pops transformer_depth_output
# from the end); SD1.5 has it at 3-11, where cubiq's IPAdapter_plus looks for it. This UNet keeps SD1.5's block
# layout (and two widths, 320 and 640, so the C penalty differs between levels) for comparisons with that node.
def sd15_unet_sd_layout_config() -> dict:
    from .tiny_models import SD15_UNET

    return dict(SD15_UNET, channel_mult=[1, 1, 2, 2], transformer_depth_output=[1] * 9 + [0] * 3)


def build_sd15_unet_sd_layout(dest: Path, root: Path) -> None:
    import comfy.ldm.modules.diffusionmodules.openaimodel as openaimodel
    import comfy.ops
    import torch

    net = openaimodel.UNetModel(operations=comfy.ops.disable_weight_init, **sd15_unet_sd_layout_config())
    _randomize(net, 2401)
    _save(net.state_dict(), dest, torch.float16,
          {"imageinference": "tiny random-weight SD1.5 UNet with SD1.5's cross-attention block layout"})


def build_flux_xlabs(dest: Path, root: Path, blocks: int = 1, tokens: int = 4) -> None:
    import torch

    gen = torch.Generator().manual_seed(2301)
    sd: dict = {}
    _put(sd, "ip_adapter_proj_model.proj", _linear(gen, tokens * 4096, VITL_EMBEDS))
    _put(sd, "ip_adapter_proj_model.norm", _norm(4096))
    for i in range(blocks):
        for kv in ("k", "v"):
            _put(sd, f"double_blocks.{i}.processor.ip_adapter_double_stream_{kv}_proj", _linear(gen, 3072, 4096))
    _save(sd, dest, torch.bfloat16, {"imageinference": "tiny random FLUX IP-Adapter, XLabs layout, ViT-L"})


def build_flux_redux(dest: Path, root: Path) -> None:
    import comfy.ldm.flux.redux
    import torch

    net = comfy.ldm.flux.redux.ReduxImageEncoder(dtype=torch.float32)
    _randomize(net, 2302)
    _save(net.state_dict(), dest, torch.bfloat16, {"imageinference": "random-weight FLUX Redux projection"})


TINY_IPADAPTER: dict[str, TinyModel] = {m.key: m for m in (
    TinyModel("clip_vision_vitl", "clip_vision", "tiny_clip_vision_vitl.safetensors", build_clip_vision_vitl),
    TinyModel("clip_vision_siglip", "clip_vision", "tiny_clip_vision_siglip384.safetensors", build_clip_vision_siglip),
    TinyModel("ipadapter_sd15", "ipadapter", "tiny_ip_adapter_sd15.safetensors", build_sd15_plain),
    TinyModel("ipadapter_sd15_plus", "ipadapter", "tiny_ip_adapter_plus_sd15.safetensors", build_sd15_plus),
    TinyModel("ipadapter_sd15_full", "ipadapter", "tiny_ip_adapter_full_face_sd15.safetensors", build_sd15_full_face),
    TinyModel("ipadapter_sdxl", "ipadapter", "tiny_ip_adapter_sdxl.safetensors", build_sdxl_plain),
    TinyModel("ipadapter_flux", "ipadapter", "tiny_flux_ip_adapter_xlabs.safetensors", build_flux_xlabs),
    TinyModel("redux", "ipadapter", "tiny_flux_redux.safetensors", build_flux_redux),
    TinyModel("sd15_unet_sd_layout", "diffusion_models", "tiny_sd15_unet_sd_layout.safetensors",
              build_sd15_unet_sd_layout),
)}
NEEDS_SD15 = ("ipadapter_sd15", "ipadapter_sd15_plus", "ipadapter_sd15_full")


def ensure_tiny_ipadapters(keys: tuple[str, ...] | list[str] | None = None, root: Path | None = None) -> Path:
    """Build the named tiny adapter models (all by default) that are not cached yet; return the models root."""
    use_inprocess_comfyui()
    root = root or cache_root()
    wanted = list(keys or TINY_IPADAPTER)
    if any(k in NEEDS_SD15 for k in wanted):
        ensure_tiny_models(["sd15"], root)
    if "ipadapter_sdxl" in wanted:
        from .tiny_extras import ensure_tiny_extras

        ensure_tiny_extras(["sdxl_unet_full"], root)
    for key in wanted:
        model = TINY_IPADAPTER[key]
        dest = model.path(root)
        if not dest.exists():
            log.info("building tiny model %s -> %s", key, dest)
            build_once(dest, functools.partial(model.build, dest, root))
    return root


def catalog_entries(prefix: str = "test") -> dict[str, dict]:
    """Catalog entries naming the tiny adapters and their encoders (Redux under its documented AIR)."""
    vitl = f"clip_vision/{TINY_IPADAPTER['clip_vision_vitl'].filename}"

    def entry(key: str, arch: str, encoder: str = vitl) -> dict:
        return {"kind": "ipAdapter", "architecture": arch,
                "files": {"model": f"ipadapter/{TINY_IPADAPTER[key].filename}", "imageEncoder": encoder}}

    return {
        f"{prefix}:ipadapter-sd15@1": entry("ipadapter_sd15", "sd-1-5"),
        f"{prefix}:ipadapter-sd15@plus": entry("ipadapter_sd15_plus", "sd-1-5"),
        f"{prefix}:ipadapter-sd15@full-face": entry("ipadapter_sd15_full", "sd-1-5"),
        f"{prefix}:ipadapter-sdxl@1": entry("ipadapter_sdxl", "sdxl"),
        f"{prefix}:ipadapter-flux@1": entry("ipadapter_flux", "flux-1-dev"),
        "runware:105@1": entry("redux", "flux-1-dev",
                               f"clip_vision/{TINY_IPADAPTER['clip_vision_siglip'].filename}"),
    }
