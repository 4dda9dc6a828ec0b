"""The EVA02-CLIP vision tower PuLID uses (adapter: torch), written for the published weights' key layout.

EVA02-CLIP-L-14-336 (EVA-CLIP's `EVA02_CLIP_L_336_psz14_s6B.pt`): a ViT with a class token and absolute position
embeddings, whose blocks use pre-LayerNorm (eps 1e-6), separate q/k/v projections with q and v biases, 2-D rotary
position embeddings on the patch tokens (frequencies laid out for a 16x16 grid and stretched onto the real grid),
a LayerNorm on the attention output before its projection, and a SwiGLU MLP with a LayerNorm before its output
projection. The pooled output is the projection (`head`) of the normed class token. PuLID also takes the inputs of
blocks 4, 8, 12, 16 and 20 as five feature scales.

Every size (width, depth, patch, image size, MLP width, embedding size) is read from the weights, so a tiny
random-weight file with the same keys loads too. Heads are width / 64 (EVA-CLIP's head width). Keys may carry the
`visual.` prefix of the full CLIP checkpoint; the text tower's keys and stored rotary tables are ignored.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

HEAD_WIDTH = 64
ROPE_REFERENCE_GRID = 16  # EVA02-CLIP's rotary frequencies were laid out for 224 / 14
HIDDEN_FROM = (4, 8, 12, 16, 20)  # the blocks whose inputs PuLID takes
EPS = 1e-6
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class LayerNorm(nn.LayerNorm):
    def __init__(self, dim: int):
        super().__init__(dim, eps=EPS)


def rotate_pairs(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): rotation by 90 degrees within each consecutive pair."""
    pairs = x.unflatten(-1, (-1, 2))
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def rope_tables(head_dim: int, grid: int, reference: int = ROPE_REFERENCE_GRID,
                theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of shape (grid * grid, head_dim) for the patch tokens in row-major order: the first half of a
    head's channels rotate with the token's row, the second half with its column, each pair by one frequency."""
    quarter = head_dim // 4
    freqs = 1.0 / theta ** (torch.arange(quarter, dtype=torch.float64) * 2 / (head_dim // 2))
    positions = torch.arange(grid, dtype=torch.float64) / grid * reference
    angles = torch.repeat_interleave(positions[:, None] * freqs[None, :], 2, dim=-1)  # (grid, head_dim / 2)
    rows = angles[:, None, :].expand(grid, grid, -1)
    cols = angles[None, :, :].expand(grid, grid, -1)
    table = torch.cat((rows, cols), dim=-1).reshape(grid * grid, -1)
    return table.cos().float(), table.sin().float()


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.inner_attn_ln = LayerNorm(width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, -1).transpose(1, 2)

        q = heads(F.linear(x, self.q_proj.weight, self.q_bias))
        k = heads(F.linear(x, self.k_proj.weight))
        v = heads(F.linear(x, self.v_proj.weight, self.v_bias))
        # rotary positions act on the patch tokens only; the class token (index 0) keeps its vector
        q = torch.cat((q[:, :, :1], q[:, :, 1:] * cos + rotate_pairs(q[:, :, 1:]) * sin), dim=2)
        k = torch.cat((k[:, :, :1], k[:, :, 1:] * cos + rotate_pairs(k[:, :, 1:]) * sin), dim=2)
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(width, hidden)
        self.w2 = nn.Linear(width, hidden)
        self.ffn_ln = LayerNorm(hidden)
        self.w3 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = LayerNorm(width)
        self.attn = Attention(width, heads)
        self.norm2 = LayerNorm(width)
        self.mlp = SwiGLU(width, hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, width: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)


class EvaVisionTower(nn.Module):
    def __init__(self, width: int, depth: int, patch: int, grid: int, hidden: int, embed: int):
        super().__init__()
        if width % HEAD_WIDTH:
            raise ValueError(f"the vision tower's width {width} is not a multiple of the head width {HEAD_WIDTH}")
        self.width, self.depth, self.patch, self.grid = width, depth, patch, grid
        self.image_size = patch * grid
        self.patch_embed = PatchEmbed(width, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        heads = width // HEAD_WIDTH
        self.blocks = nn.ModuleList([Block(width, heads, hidden) for _ in range(depth)])
        self.norm = LayerNorm(width)
        self.head = nn.Linear(width, embed)
        cos, sin = rope_tables(HEAD_WIDTH, grid)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> EvaVisionTower:
        sd = visual_keys(sd)
        try:
            width, _, patch, _ = sd["patch_embed.proj.weight"].shape
            tokens = sd["pos_embed"].shape[1] - 1
            depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
            hidden = sd["blocks.0.mlp.w1.weight"].shape[0]
            embed = sd["head.weight"].shape[0]
        except (KeyError, ValueError) as e:
            raise ValueError(f"not an EVA02-CLIP vision tower (missing {e}); expected keys like "
                             "visual.patch_embed.proj.weight, visual.blocks.0.attn.q_proj.weight") from e
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise ValueError(f"the vision tower's position table has {tokens} patch positions, not a square grid")
        if depth <= max(HIDDEN_FROM):
            raise ValueError(f"PuLID takes features from block {max(HIDDEN_FROM)}; this tower has {depth} blocks")
        tower = cls(int(width), depth, int(patch), grid, int(hidden), int(embed))
        missing, unexpected = tower.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"the vision tower's weights do not match EVA02-CLIP's layout: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return tower.eval()

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(pooled embedding (B, embed), the inputs of blocks 4, 8, 12, 16, 20 (B, 1 + grid^2, width) each)."""
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1) + self.pos_embed.to(x.dtype)
        cos, sin = self.rope_cos.to(x.dtype), self.rope_sin.to(x.dtype)
        hidden: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            if i in HIDDEN_FROM:
                hidden.append(x)
            x = block(x, cos, sin)
        return self.head(self.norm(x)[:, 0]), hidden


def visual_keys(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The vision tower's tensors from a vision-only or full-CLIP state dict (also unwraps {"state_dict": ...})."""
    for wrapper in ("state_dict", "model", "module"):
        inner = sd.get(wrapper)
        if isinstance(inner, dict):
            sd = inner
    if any(k.startswith("visual.") for k in sd):
        sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    return {k: v for k, v in sd.items() if "rope." not in k and isinstance(v, torch.Tensor)}
