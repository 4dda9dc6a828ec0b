"""Installs IP-Adapter image attention on a ComfyUI model (adapter over ComfyUI).

UNet (SD1.5, SDXL): a cross-attention replacement (`patches_replace["attn2"]`, keyed (block kind, block id,
transformer layer)) on each layer whose scheduled weight is not 0: it computes the layer's own attention with
ComfyUI's `optimized_attention` (or calls the replacement already installed there, e.g. an earlier adapter)
and adds the image attention, computed with the same `optimized_attention`. Layers at weight 0 are not touched.
FLUX: a per-block replacement (`patches_replace["dit"]`, ("double_block", i)) that reads the block's image query
from the block's own layers before the block runs, runs the block (or the replacement already installed), and adds
the image attention to the block's image output, as the XLabs adapters are trained and applied.
Nothing is written into the model given: the caller gets a clone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .attention import heads_image_attention, image_attention, rows_for
from .layout import FluxFacts, UNetFacts
from .options import BlockKind, Scaling

APPLIED_KEY = "imageinference_ip_adapters"
"""transformer_options entry: the AIRs of the pack's IP-Adapters on this model, in the order applied."""


@dataclass
class ImageKV:
    """One layer's image keys and values for the conditional and unconditional rows, kept per device/dtype."""

    k_cond: torch.Tensor
    v_cond: torch.Tensor
    k_uncond: torch.Tensor
    v_uncond: torch.Tensor
    _moved: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, ...]] = field(default_factory=dict)

    def rows(self, cond_or_uncond: Sequence[int], batch: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        if key not in self._moved:
            self._moved[key] = tuple(t.to(like.device, like.dtype) for t in
                                     (self.k_cond, self.v_cond, self.k_uncond, self.v_uncond))
        kc, vc, ku, vu = self._moved[key]
        return rows_for(kc, ku, cond_or_uncond, batch), rows_for(vc, vu, cond_or_uncond, batch)

    def __deepcopy__(self, memo: dict[int, Any]) -> ImageKV:
        return self  # never written after construction (the per-device copies are derived): share, do not copy


class _Shared:
    """ModelPatcher.clone() deep-copies model_options; a replacement holds only read-only data (and, for FLUX, a
    reference to the model's own block), so clones share it instead of copying tensors and modules."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Shared:
        return self


# ---------------------------------------------------------------- UNet


def unet_facts(diffusion_model: Any) -> tuple[UNetFacts, list[tuple[BlockKind, int]]]:
    """The UNet's cross-attention blocks in forward order (ComfyUI's transformer_index order) and their
    replacement keys (kind, block id); ValueError for a model that is not a ComfyUI UNet."""
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    if not isinstance(diffusion_model, UNetModel):
        raise ValueError(f"this model is a {type(diffusion_model).__name__}, not a UNet (SD1.5 / SDXL)")
    blocks: list[tuple[str, int, tuple[int, ...]]] = []
    keys: list[tuple[BlockKind, int]] = []
    context = set()
    groups: list[tuple[BlockKind, list[tuple[int, Any]]]] = [
        ("input", list(enumerate(diffusion_model.input_blocks))),
        # ComfyUI 0.8.0 runs the middle block as ("middle", 0)
        ("middle", [(0, diffusion_model.middle_block)] if diffusion_model.middle_block is not None else []),
        ("output", list(enumerate(diffusion_model.output_blocks)))]
    for kind, modules in groups:
        for block_id, module in modules:
            for layer in module:
                if isinstance(layer, SpatialTransformer):
                    widths = []
                    for tb in layer.transformer_blocks:
                        if tb.attn2 is None:
                            continue
                        w = tb.attn2.to_k.weight
                        widths.append(int(w.shape[0]))
                        context.add(int(w.shape[1]))
                    blocks.append((kind, block_id, tuple(widths)))
                    keys.append((kind, block_id))
    if len(context) != 1:
        raise ValueError("the UNet's cross-attention layers read text contexts of several widths")
    return UNetFacts(tuple(blocks), context.pop()), keys


class UNetImageAttention(_Shared):
    """attn2 replacement: the layer's attention (or the previous replacement's) plus one adapter's image term."""

    def __init__(self, kv: ImageKV, scaling: Scaling, previous: Callable[..., torch.Tensor] | None,
                 images: int = 1) -> None:
        self.kv = kv
        self.scaling = scaling
        self.previous = previous
        self.images = images  # guide images whose tokens follow each other (concat): the value mean is per image

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict[str, Any]) -> torch.Tensor:
        from comfy.ldm.modules.attention import optimized_attention

        if self.previous is not None:
            out = self.previous(q, k, v, extra)
        else:
            out = optimized_attention(q, k, v, extra["n_heads"], attn_precision=extra.get("attn_precision"),
                                      transformer_options=extra)
        ik, iv = self.kv.rows(extra.get("cond_or_uncond") or [0], q.shape[0], q)

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
            return optimized_attention(q, k, v, heads, attn_precision=extra.get("attn_precision"))

        term = image_attention(q, ik, iv, extra["n_heads"], self.scaling, self.images, attend)
        return out + term.to(out.dtype)

    def to(self, device: Any) -> UNetImageAttention:
        if self.previous is not None and hasattr(self.previous, "to"):
            self.previous = self.previous.to(device)
        return self


@dataclass(frozen=True)
class UNetLayer:
    kind: BlockKind
    block_id: int
    index: int  # transformer layer within the block
    kv: ImageKV
    scaling: Scaling
    images: int = 1


def install_unet(model: Any, layers: Sequence[UNetLayer], air: str) -> Any:
    patched = model.clone()
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for layer in layers:
        previous = existing.get((layer.kind, layer.block_id, layer.index))
        patched.set_model_attn2_replace(UNetImageAttention(layer.kv, layer.scaling, previous, layer.images),
                                        layer.kind, layer.block_id, layer.index)
    _record(patched, air)
    return patched


# ---------------------------------------------------------------- FLUX


def flux_facts(diffusion_model: Any) -> FluxFacts:
    import comfy.ldm.flux.model

    if not isinstance(diffusion_model, comfy.ldm.flux.model.Flux):
        raise ValueError(f"this model is a {type(diffusion_model).__name__}, not FLUX")
    blocks = diffusion_model.double_blocks
    if any(not getattr(b, "modulation", True) or getattr(b, "flipped_img_txt", False) for b in blocks) or \
            diffusion_model.params.global_modulation:
        raise ValueError("this FLUX-family model modulates its blocks differently from FLUX.1; FLUX IP-Adapters "
                         "are trained on FLUX.1")
    return FluxFacts(len(blocks), int(diffusion_model.params.hidden_size), int(diffusion_model.params.context_in_dim))


def block_query(block: Any, args: dict[str, Any]) -> torch.Tensor:
    """The image query (B, heads, L, head_dim) a FLUX double block computes, from the block's own layers:
    modulated pre-norm, qkv projection, q/k norm (RoPE is applied later, inside the attention)."""
    from comfy.ldm.flux.layers import apply_mod

    img = args["img"]
    mod1, _ = block.img_mod(args["vec"])
    x = apply_mod(block.img_norm1(img), (1 + mod1.scale), mod1.shift)
    qkv = block.img_attn.qkv(x)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, _k = block.img_attn.norm(q, k, v)
    return q


class FluxImageAttention(_Shared):
    """dit replacement of one double block: the block (or the previous replacement) plus the image term."""

    def __init__(self, block: Any, kv: ImageKV, scaling: Scaling, previous: Callable[..., Any] | None) -> None:
        self.block = block
        self.kv = kv
        self.scaling = scaling
        self.previous = previous

    def __call__(self, args: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        q = block_query(self.block, args)  # before the block runs: it adds into `img` in place
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        opts = args.get("transformer_options") or {}
        ik, iv = self.kv.rows(opts.get("cond_or_uncond") or [0], q.shape[0], q)
        img = out["img"]
        return {**out, "img": img + heads_image_attention(q, ik, iv, self.scaling).to(img.dtype)}


@dataclass(frozen=True)
class FluxBlock:
    index: int
    kv: ImageKV
    scaling: Scaling


def install_flux(model: Any, blocks: Sequence[FluxBlock], air: str) -> Any:
    patched = model.clone()
    diffusion_model = patched.get_model_object("diffusion_model")
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for b in blocks:
        previous = existing.get(("double_block", b.index))
        patched.set_model_patch_replace(FluxImageAttention(diffusion_model.double_blocks[b.index], b.kv, b.scaling,
                                                           previous), "dit", "double_block", b.index)
    _record(patched, air)
    return patched


def applied(model: Any) -> tuple[str, ...]:
    return tuple(model.model_options.get("transformer_options", {}).get(APPLIED_KEY, ()))


def _record(patched: Any, air: str) -> None:
    opts = patched.model_options["transformer_options"]
    opts[APPLIED_KEY] = (*opts.get(APPLIED_KEY, ()), air)
