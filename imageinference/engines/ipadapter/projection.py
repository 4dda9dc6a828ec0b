"""Image projections: image-encoder output -> the adapter's image tokens (torch only, no ComfyUI).

Rebuilt from an adapter's own weights in the layout `layout.detect` recognised:
- linear: one linear layer makes `tokens` tokens from a pooled embedding, each layer-normed;
- resampler: learned query tokens attend (perceiver style, over the encoder's hidden states and themselves)
  through `depth` attention + feed-forward layers, then a linear map and a layer norm;
- mlp: every hidden-state token through linear, GELU, linear, layer norm (one image token per encoder token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .layout import AdapterLayout


def _linear(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    w = sd[f"{key}.weight"].to(x.dtype)
    b = sd.get(f"{key}.bias")
    return F.linear(x, w, b.to(x.dtype) if b is not None else None)


def _layer_norm(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str, eps: float = 1e-5) -> torch.Tensor:
    w, b = sd[f"{key}.weight"].to(x.dtype), sd[f"{key}.bias"].to(x.dtype)
    return F.layer_norm(x, (w.shape[0],), w, b, eps)


def _perceiver(x: torch.Tensor, latents: torch.Tensor, sd: dict[str, torch.Tensor], key: str,
               heads: int) -> torch.Tensor:
    """Latent queries attend to (image features, latents); returns the attention output (before the residual).

    The attention is written as the published IP-Adapter resampler computes it (q and k each scaled by d^-1/4,
    the softmax in float32), not with a fused kernel, so the tokens are bit-identical to the reference's."""
    x = _layer_norm(x, sd, f"{key}.norm1")
    lat = _layer_norm(latents, sd, f"{key}.norm2")
    q = _linear(lat, sd, f"{key}.to_q")
    k, v = _linear(torch.cat((x, lat), dim=-2), sd, f"{key}.to_kv").chunk(2, dim=-1)
    b, n, width = q.shape

    def heads_first(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, t.shape[1], heads, -1).transpose(1, 2).reshape(b, heads, t.shape[1], -1)

    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    scale = 1 / math.sqrt(math.sqrt(q.shape[-1]))
    weight = (q * scale) @ (k * scale).transpose(-2, -1)
    out = torch.softmax(weight.float(), dim=-1).type(weight.dtype) @ v
    return _linear(out.permute(0, 2, 1, 3).reshape(b, n, -1), sd, f"{key}.to_out")


def _feed_forward(x: torch.Tensor, sd: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    h = _layer_norm(x, sd, f"{key}.0")
    h = F.gelu(_linear(h, sd, f"{key}.1"))
    return _linear(h, sd, f"{key}.3")


def project(layout: AdapterLayout, sd: dict[str, torch.Tensor], embeds: torch.Tensor) -> torch.Tensor:
    """Image tokens (N, tokens, context_dim) for N images' encoder outputs (pooled (N, D) or hidden (N, T, D)).

    `sd` holds the adapter's projection weights with their file keys (`image_proj.*` or
    `ip_adapter_proj_model.*`)."""
    x = embeds.float()
    if layout.family == "flux":
        out = _linear(x, sd, "ip_adapter_proj_model.proj").reshape(x.shape[0], -1, layout.context_dim)
        return _layer_norm(out, sd, "ip_adapter_proj_model.norm")
    if layout.projection == "linear":
        out = _linear(x, sd, "image_proj.proj").reshape(x.shape[0], -1, layout.context_dim)
        return _layer_norm(out, sd, "image_proj.norm")
    if layout.projection == "mlp":
        h = F.gelu(_linear(x, sd, "image_proj.proj.0"))
        return _layer_norm(_linear(h, sd, "image_proj.proj.2"), sd, "image_proj.proj.3")
    if layout.projection == "resampler":
        res = layout.resampler
        assert res is not None
        latents = sd["image_proj.latents"].to(x.dtype).repeat(x.shape[0], 1, 1)
        feats = _linear(x, sd, "image_proj.proj_in")
        for i in range(res.depth):
            latents = _perceiver(feats, latents, sd, f"image_proj.layers.{i}.0", res.heads) + latents
            latents = _feed_forward(latents, sd, f"image_proj.layers.{i}.1") + latents
        return _layer_norm(_linear(latents, sd, "image_proj.proj_out"), sd, "image_proj.norm_out")
    raise ValueError(f"{layout.description} has no image projection")
