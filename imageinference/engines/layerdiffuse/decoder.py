"""The FLUX LayerDiffuse transparency decoder (torch only, no ComfyUI): our implementation of the published
architecture, in the published weights' key layout.

What it is (RedAIGC/Flux-version-LayerDiffuse, `TransparentVAE.pth`, keys under `decoder.`): a U-Net that takes
the RGB image the ordinary FLUX VAE decodes (in [0, 1]) plus the latent itself, and predicts RGBA.
- 7 levels of widths (32, 32, 64, 128, 256, 512, 512); 2 residual blocks per level going down, 3 coming up
  (each up block concatenates one skip per residual block); self-attention after every residual block of the
  last three levels and in the middle block (head size 8); GroupNorm with 4 groups, eps 1e-5, SiLU;
  stride-2 3x3 convolutions down, nearest 2x + 3x3 convolution up; no time embedding.
- The latent (16 channels for FLUX) enters through a 1x1 convolution and is added to the features before the
  fourth level, where they are at 1/8 scale like the latent.
- Output channels are R, G, B, A (the reference demo saves them as an RGBA image as they are).
- Decoding runs the network on the 8 flips/rotations of the image and latent, clips each to [0, 1], turns it
  back and takes the per-pixel median (the reference's default); `augment=False` runs it once.
The latent is the VAE's own (un-scaled) latent: the reference divides the sampler's latent by the VAE scaling
factor and adds the shift before decoding; a ComfyUI LATENT is already in that space (`process_out` is applied
when sampling ends).

Widths, the number of levels, blocks per level and which levels attend are read from the state dict's shapes,
so the tiny test decoder (same keys, smaller widths) loads through the same code; group count and head size
are fixed by the published configuration.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

GROUPS = 4
HEAD_DIM = 8
EPS = 1e-5
LATENT_LEVEL = 3  # the latent is added before this down level (features at 1/8 scale)
PREFIX = "decoder."


@dataclass(frozen=True)
class DecoderConfig:
    widths: tuple[int, ...] = (32, 32, 64, 128, 256, 512, 512)
    attention: tuple[bool, ...] = (False, False, False, False, True, True, True)
    layers: int = 2  # residual blocks per down level (up levels have one more)
    latent_channels: int = 16
    in_channels: int = 3
    out_channels: int = 4

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor]) -> DecoderConfig:
        levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"down_blocks\.(\d+)\.", k))})
        if not levels or levels != list(range(len(levels))) or len(levels) <= LATENT_LEVEL:
            raise ValueError("not a LayerDiffuse transparent decoder: no down_blocks.<i> levels")
        widths = tuple(int(sd[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in levels)
        attention = tuple(f"down_blocks.{i}.attentions.0.to_q.weight" in sd for i in levels)
        layers = len({k.split(".")[3] for k in sd if k.startswith("down_blocks.0.resnets.")})
        return cls(widths, attention, layers, int(sd["latent_conv_in.weight"].shape[1]),
                   int(sd["conv_in.weight"].shape[1]), int(sd["conv_out.weight"].shape[0]))


class Resnet(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(GROUPS, cin, eps=EPS)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(GROUPS, cout, eps=EPS)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention(nn.Module):
    """Spatial self-attention with a residual: GroupNorm, q/k/v over the pixels, heads of HEAD_DIM channels."""

    def __init__(self, channels: int):
        super().__init__()
        self.heads = channels // HEAD_DIM
        self.group_norm = nn.GroupNorm(GROUPS, channels, eps=EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.ModuleList([nn.Linear(channels, channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # normalised as (b, c, h*w), not (b, c, h, w): GroupNorm reduces in another order on a 4-d channels-last
        # input, and this is the reference's (diffusers') order
        tokens = self.group_norm(x.view(b, c, h * w)).transpose(1, 2)  # (b, h*w, c)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.to_q(tokens)), split(self.to_k(tokens)),
                                             split(self.to_v(tokens)))
        out = self.to_out[0](out.transpose(1, 2).reshape(b, h * w, c))
        # the sum takes the memory layout of its first operand (here channels-last), and the convolution after
        # it computes in that layout: this order keeps the result bit-identical with diffusers' attention block
        return out.transpose(1, 2).reshape(b, c, h, w) + x


class Resample(nn.Module):
    """A 3x3 convolution, after a nearest 2x upsampling (up) or with stride 2 (down)."""

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up = up
        self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest") if self.up else x)


class DownLevel(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, attention: bool, downsample: bool):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(cin if i == 0 else cout, cout) for i in range(layers)])
        self.attentions = nn.ModuleList([SelfAttention(cout) for _ in range(layers)]) if attention else None
        self.downsamplers = nn.ModuleList([Resample(cout, up=False)]) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class UpLevel(nn.Module):
    def __init__(self, cin: int, skip_widths: list[int], cout: int, attention: bool, upsample: bool):
        super().__init__()
        resnets, width = [], cin
        for skip in skip_widths:
            resnets.append(Resnet(width + skip, cout))
            width = cout
        self.resnets = nn.ModuleList(resnets)
        self.attentions = nn.ModuleList([SelfAttention(cout) for _ in skip_widths]) if attention else None
        self.upsamplers = nn.ModuleList([Resample(cout, up=True)]) if upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for i, resnet in enumerate(self.resnets):
            x = resnet(torch.cat([x, skips.pop()], dim=1))
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class MidLevel(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(channels, channels), Resnet(channels, channels)])
        self.attentions = nn.ModuleList([SelfAttention(channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class TransparentDecoder(nn.Module):
    def __init__(self, config: DecoderConfig | None = None):
        super().__init__()
        cfg = self.config = config or DecoderConfig()
        w, n = cfg.widths, len(cfg.widths)
        self.conv_in = nn.Conv2d(cfg.in_channels, w[0], 3, padding=1)
        self.latent_conv_in = nn.Conv2d(cfg.latent_channels, w[LATENT_LEVEL - 1], 1)
        self.down_blocks = nn.ModuleList()
        skip_widths = [w[0]]
        for i in range(n):
            last = i == n - 1
            self.down_blocks.append(DownLevel(w[i - 1] if i else w[0], w[i], cfg.layers, cfg.attention[i], not last))
            skip_widths += [w[i]] * (cfg.layers + (0 if last else 1))
        self.mid_block = MidLevel(w[-1])
        self.up_blocks = nn.ModuleList()
        width = w[-1]
        for i in range(n):
            level = n - 1 - i
            taken = [skip_widths.pop() for _ in range(cfg.layers + 1)]
            self.up_blocks.append(UpLevel(width, taken, w[level], cfg.attention[level], i < n - 1))
            width = w[level]
        self.conv_norm_out = nn.GroupNorm(GROUPS, w[0], eps=EPS)
        self.conv_out = nn.Conv2d(w[0], cfg.out_channels, 3, padding=1)

    def forward(self, pixels: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) image in [0, 1] and (B, C, H/8, W/8) latent -> (B, 4, H, W) RGBA, not clipped."""
        x = self.conv_in(pixels)
        skips = [x]
        for i, block in enumerate(self.down_blocks):
            if i == LATENT_LEVEL:
                x = x + self.latent_conv_in(latent)
            x, level_skips = block(x)
            skips += level_skips
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x, skips)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


def decoder_weights(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The decoder's weights from a TransparentVAE state dict (`decoder.` keys; `encoder.` and any VAE keys
    are left out) or from a file holding the decoder alone."""
    if any(k.startswith(PREFIX) for k in sd):
        return {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return dict(sd)


def load_decoder(sd: Mapping[str, torch.Tensor]) -> TransparentDecoder:
    """A decoder with exactly these weights; ValueError naming missing/unexpected keys otherwise."""
    weights = decoder_weights(sd)
    if "conv_in.weight" not in weights or "latent_conv_in.weight" not in weights:
        raise ValueError("not a LayerDiffuse transparent decoder (no decoder.conv_in / decoder.latent_conv_in)")
    decoder = TransparentDecoder(DecoderConfig.from_state_dict(weights))
    missing, unexpected = decoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"the transparent decoder's weights do not fit: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return decoder.eval()


TRANSFORMS = [(flip, turns) for flip in (False, True) for turns in range(4)]


def _turn(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(3,))
    return torch.rot90(x, k=turns, dims=(2, 3))


def _unturn(x: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    x = torch.rot90(x, k=-turns, dims=(2, 3))
    return torch.flip(x, dims=(3,)) if flip else x


def passes(images: int, augment: bool) -> int:
    """How many decoder passes decode_rgba runs (for a progress bar)."""
    return images * (len(TRANSFORMS) if augment else 1)


@torch.no_grad()
def decode_rgba(decoder: TransparentDecoder, pixels: torch.Tensor, latent: torch.Tensor, augment: bool = True,
                device: torch.device | None = None, dtype: torch.dtype | None = None,
                progress: Callable[[], None] | None = None) -> torch.Tensor:
    """RGBA (B, H, W, 4) in [0, 1] from the VAE's decode (B, H, W, 3), x * 0.5 + 0.5 of its [-1, 1] output, and
    its latent (B, C, h, w). `progress` is called after each decoder pass.

    Image by image (as the FLUX release); with `augment`, the median of the 8 flipped/rotated passes, each clipped
    to [0, 1] (torch's median of 8 values is the lower middle one, in the reference too).
    """
    device = device or next(decoder.parameters()).device
    dtype = dtype or next(decoder.parameters()).dtype
    results = []
    for i in range(pixels.shape[0]):
        # contiguous NCHW, as the reference's tensors: convolutions sum in another order on other layouts
        x = pixels[i:i + 1, ..., :3].movedim(-1, 1).to(device, dtype).contiguous()
        z = latent[i:i + 1].to(device, dtype).contiguous()
        views = []
        for flip, turns in TRANSFORMS if augment else [(False, 0)]:
            views.append(_unturn(decoder(_turn(x, flip, turns), _turn(z, flip, turns)).clamp(0, 1), flip, turns))
            if progress is not None:
                progress()
        y = torch.stack(views).median(dim=0).values if augment else views[0]
        results.append(y.float().movedim(1, -1).cpu())
    return torch.cat(results)
