"""The image attention an IP-Adapter adds to a cross-attention (torch only, no ComfyUI).

out_ip = attend(q, s_k k_ip, (v_ip - m) s_v + m s_m) · s_out, m = the token mean of v_ip taken per guide image
(each image's tokens on their own, as the reference averages them), with the factors of `options.embed_scaling`.
The conditional rows of a batch attend to the guide images' tokens, the unconditional rows to the tokens of the
negative image (see `apply`). `attend` is the attention function the caller chooses: the UNet path passes
ComfyUI's own, so the image term is computed by the same operations as the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .options import Scaling

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]
"""(q, k, v, heads) -> out, each (B, tokens, heads·D)."""


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, width = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], heads, width // heads).transpose(1, 2)

    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, width)


def rows_for(cond: torch.Tensor, uncond: torch.Tensor, cond_or_uncond: Sequence[int], batch: int) -> torch.Tensor:
    """(batch, T, C): per chunk of the model's batch (ComfyUI's cond_or_uncond, 0 = conditional), the
    conditional or unconditional tokens, repeated over the chunk's rows."""
    chunks = max(len(cond_or_uncond), 1)
    per_chunk = batch // chunks
    if per_chunk * chunks != batch:
        raise ValueError(f"batch {batch} does not split into {chunks} cond/uncond chunks")
    parts = [(cond if c == 0 else uncond).expand(per_chunk, -1, -1) for c in (cond_or_uncond or [0])]
    return torch.cat(parts, dim=0)


def scale_kv(k: torch.Tensor, v: torch.Tensor, s: Scaling, images: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v (B, images·T, C): the keys and values scaled as `s` says; the mean of v is taken over each image's T
    tokens."""
    if s.key != 1.0:
        k = k * s.key
    if s.value == s.value_mean:
        if s.value != 1.0:
            v = v * s.value
    else:
        b, tokens, c = v.shape
        per_image = v.reshape(b, images, tokens // images, c)
        mean = per_image.mean(dim=2, keepdim=True)
        v = ((per_image - mean) * s.value + mean * s.value_mean).reshape(b, tokens, c)
    return k, v


def image_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, s: Scaling, images: int = 1,
                    attend: Attend = sdpa) -> torch.Tensor:
    """q (B, L, H·D) as a UNet's attention sees it; k, v (B, images·T, H·D) -> (B, L, H·D)."""
    k, v = scale_kv(k.to(q.dtype), v.to(q.dtype), s, images)
    out = attend(q, k, v, heads)
    return out * s.output if s.output != 1.0 else out


def heads_image_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: Scaling) -> torch.Tensor:
    """q (B, H, L, D) as a FLUX block holds it (after its q/k norm, before RoPE); k, v (B, T, H·D) -> (B, L, H·D)."""
    b, heads, n, d = q.shape
    k, v = scale_kv(k.to(q.dtype), v.to(q.dtype), s)
    k = k.reshape(b, -1, heads, d).transpose(1, 2)
    v = v.reshape(b, -1, heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, heads * d)
    return out * s.output if s.output != 1.0 else out
