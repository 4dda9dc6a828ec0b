"""PuLID-FLUX's identity encoder (IDFormer) and its cross-attention layers (adapter: torch), written for the
published `pulid_flux_*.safetensors` key layout: `pulid_encoder.*` and `pulid_ca.<n>.*`.

IDFormer (a perceiver resampler): the ID vector (the face-recognition embedding joined with the normalised vision
embedding) is mapped to a few ID tokens; learned query latents plus those tokens attend, scale by scale, to the ID
tokens joined with each of the vision tower's five feature scales (each mapped by its own MLP), two layers per
scale (attention then feed-forward, both residual); the query latents are finally projected to the output width.
A cross-attention layer: the image tokens of the diffusion transformer (LayerNorm) attend to the identity tokens
(LayerNorm) and the result, projected back to the transformer's width, is what PuLID adds (times idWeight).

All widths are read from the weights; head widths are PuLID's (64 in IDFormer, 128 in the cross-attention layers).
LayerNorms use torch's default eps (1e-5), as the published model.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

IDFORMER_HEAD = 64
CA_HEAD = 128
SCALES = 5


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention of (B, Lq, H*d) queries over (B, Lk, H*d) keys/values -> (B, Lq, H*d)."""
    b, lq, _ = q.shape

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, t.shape[1], heads, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(b, lq, -1)


class PerceiverAttention(nn.Module):
    """Latents attend to the context joined with themselves."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.heads = inner // IDFORMER_HEAD
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, context: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        context, latents = self.norm1(context), self.norm2(latents)
        k, v = self.to_kv(torch.cat((context, latents), dim=1)).chunk(2, dim=-1)
        return self.to_out(attend(self.to_q(latents), k, v, self.heads))


def _mlp(sizes: list[tuple[int, int]]) -> nn.Sequential:
    """Linear, LayerNorm, LeakyReLU, Linear, LayerNorm, LeakyReLU, Linear (indices 0..6 as in the weights)."""
    (i0, o0), (i1, o1), (i2, o2) = sizes
    return nn.Sequential(nn.Linear(i0, o0), nn.LayerNorm(o0), nn.LeakyReLU(), nn.Linear(i1, o1), nn.LayerNorm(o1),
                         nn.LeakyReLU(), nn.Linear(i2, o2))


def _feed_forward(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden, bias=False), nn.GELU(),
                         nn.Linear(hidden, dim, bias=False))


def _linears(sd: dict[str, torch.Tensor], prefix: str) -> list[tuple[int, int]]:
    return [(int(sd[f"{prefix}.{i}.weight"].shape[1]), int(sd[f"{prefix}.{i}.weight"].shape[0])) for i in (0, 3, 6)]


class IDFormer(nn.Module):
    def __init__(self, dim: int, queries: int, out_dim: int, depth: int, inner: int, ff_hidden: int,
                 mapping: list[list[tuple[int, int]]], id_mapping: list[tuple[int, int]]):
        super().__init__()
        if depth % SCALES:
            raise ValueError(f"IDFormer has {depth} layers; it needs a multiple of {SCALES} (one group per scale)")
        self.dim, self.queries = dim, queries
        self.id_width = id_mapping[0][0]
        self.id_tokens = id_mapping[2][1] // dim
        self.latents = nn.Parameter(torch.zeros(1, queries, dim))
        self.proj_out = nn.Parameter(torch.zeros(dim, out_dim))
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(dim, inner), _feed_forward(dim, ff_hidden)]) for _ in range(depth)])
        for i in range(SCALES):
            setattr(self, f"mapping_{i}", _mlp(mapping[i]))
        self.id_embedding_mapping = _mlp(id_mapping)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> IDFormer:
        try:
            _, queries, dim = sd["latents"].shape
            out_dim = sd["proj_out"].shape[1]
            depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"layers\.(\d+)\.", k)))
            inner = sd["layers.0.0.to_q.weight"].shape[0]
            ff_hidden = sd["layers.0.1.1.weight"].shape[0]
            mapping = [_linears(sd, f"mapping_{i}") for i in range(SCALES)]
            id_mapping = _linears(sd, "id_embedding_mapping")
        except (KeyError, ValueError) as e:
            raise ValueError(f"not PuLID-FLUX IDFormer weights (missing {e})") from e
        model = cls(int(dim), int(queries), int(out_dim), depth, int(inner), int(ff_hidden), mapping, id_mapping)
        model.load_state_dict(sd, strict=True)
        return model.eval()

    def forward(self, id_vector: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
        """(B, id_width) ID vectors and five (B, N, vision width) feature scales -> (B, queries, out_dim)."""
        if len(scales) != SCALES:
            raise ValueError(f"IDFormer takes {SCALES} feature scales, got {len(scales)}")
        b = id_vector.shape[0]
        tokens = self.id_embedding_mapping(id_vector).reshape(b, self.id_tokens, self.dim)
        latents = torch.cat((self.latents.expand(b, -1, -1), tokens), dim=1)
        per_scale = len(self.layers) // SCALES
        for i, features in enumerate(scales):
            context = torch.cat((tokens, getattr(self, f"mapping_{i}")(features)), dim=1)
            for pair in self.layers[i * per_scale:(i + 1) * per_scale]:
                attn, ff = pair[0], pair[1]  # type: ignore[index]
                latents = attn(context, latents) + latents
                latents = ff(latents) + latents
        return latents[:, :self.queries] @ self.proj_out


class CrossAttention(nn.Module):
    """One `pulid_ca.<n>`: image tokens (queries) attend to the identity tokens (keys, values)."""

    def __init__(self, dim: int, kv_dim: int, inner: int):
        super().__init__()
        self.heads = inner // CA_HEAD
        self.norm1 = nn.LayerNorm(kv_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(kv_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, identity: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        k, v = self.to_kv(self.norm1(identity)).chunk(2, dim=-1)
        return self.to_out(attend(self.to_q(self.norm2(image)), k, v, self.heads))


def cross_attention_layers(sd: dict[str, torch.Tensor]) -> nn.ModuleList:
    """`pulid_ca.<n>.*` (prefix already removed: `<n>.*`) as layers 0..N-1, in the weights' dtype."""
    indices = sorted({int(k.split(".")[0]) for k in sd})
    if indices != list(range(len(indices))):
        raise ValueError(f"the PuLID cross-attention layers are not numbered 0..N-1: {indices[:10]}")
    layers = nn.ModuleList()
    for n in indices:
        q = sd[f"{n}.to_q.weight"]
        kv = sd[f"{n}.to_kv.weight"]
        layer = CrossAttention(int(q.shape[1]), int(kv.shape[1]), int(q.shape[0])).to(q.dtype)
        layer.load_state_dict({k[len(f"{n}."):]: v for k, v in sd.items() if k.startswith(f"{n}.")}, strict=True)
        layers.append(layer)
    return layers.eval()


def split_pulid(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(IDFormer weights, cross-attention weights) from a PuLID-FLUX file, prefixes removed."""
    encoder = {k[len("pulid_encoder."):]: v for k, v in sd.items() if k.startswith("pulid_encoder.")}
    ca = {k[len("pulid_ca."):]: v for k, v in sd.items() if k.startswith("pulid_ca.")}
    if not encoder or not ca:
        raise ValueError("not a PuLID-FLUX file: it needs pulid_encoder.* and pulid_ca.* weights")
    return encoder, ca
