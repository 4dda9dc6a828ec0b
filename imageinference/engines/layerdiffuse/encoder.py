"""The LayerDiffuse transparency encoder (torch only, no ComfyUI): our implementation of the published "latent
transparency offset" network, in the published weights' key layout.

What it is (RedAIGC/Flux-version-LayerDiffuse, `TransparentVAE.pth`, keys `encoder.blocks.<0,2,..,16>`): nine 3x3
convolutions with SiLU between them (none after the last), widths 4 -> 32, 32, 64, 64, 128, 128, 256, 256 -> the
latent's channels (16 for FLUX), stride 2 at the third, fifth and seventh, so its output has the latent's size.
Its input is the padded colour (R, G, B, see padding.py) then alpha, in [0, 1]: that order is the FLUX release's
(the SD/SDXL release feeds alpha first). Its output, times OFFSET_SCALE, is an offset in units of the VAE
posterior's standard deviation: latent = mean + std * 300 * encoder(colour, alpha), see vae_io.transparent_encode.
The published network starts from a zero last layer and the factor 300 lets the learned offset be large (the
reference calls it alpha, "similar to LoRA's alpha").

Widths are read from the state dict's shapes, so the tiny test encoder (same keys, narrower) loads through the same
code; the strides are fixed by the published configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import nn

STRIDES = (1, 1, 2, 1, 2, 1, 2, 1, 1)
OFFSET_SCALE = 300.0
IN_CHANNELS = 4  # padded R, G, B and alpha
PREFIX = "encoder."


class OffsetEncoder(nn.Module):
    def __init__(self, widths: tuple[int, ...]):
        """`widths`: the input channels of each of the nine convolutions, then the output (latent) channels."""
        super().__init__()
        if len(widths) != len(STRIDES) + 1:
            raise ValueError(f"the transparency encoder has {len(STRIDES)} convolutions; got {len(widths) - 1}")
        layers: list[nn.Module] = []
        for i, stride in enumerate(STRIDES):
            if i:
                layers.append(nn.SiLU())
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 3, stride=stride, padding=1))
        self.blocks = nn.Sequential(*layers)  # convolutions at the even indices 0..16, as the published keys
        self.widths = widths

    @property
    def latent_channels(self) -> int:
        return self.widths[-1]

    def forward(self, colour_alpha: torch.Tensor) -> torch.Tensor:
        """(B, 4, H, W) padded colour and alpha in [0, 1] -> (B, latent channels, H/8, W/8), not yet scaled."""
        return self.blocks(colour_alpha)


def encoder_weights(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder's weights from a TransparentVAE state dict (`encoder.blocks.` keys) or from a file holding the
    encoder alone (`blocks.` keys); empty when there are none (an ordinary VAE's `encoder.` keys are not blocks)."""
    prefixed = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX + "blocks.")}
    return prefixed or {k: v for k, v in sd.items() if k.startswith("blocks.")}


def load_encoder(sd: Mapping[str, torch.Tensor]) -> OffsetEncoder:
    """An encoder with exactly these weights; ValueError saying what does not fit otherwise."""
    weights = encoder_weights(sd)
    convs = sorted(int(m.group(1)) for k in weights if (m := re.fullmatch(r"blocks\.(\d+)\.weight", k)))
    if convs != list(range(0, 2 * len(STRIDES), 2)):
        raise ValueError(f"not a LayerDiffuse transparency encoder: expected convolutions encoder.blocks.0, 2, .., "
                         f"{2 * len(STRIDES) - 2}; found {convs or 'none'}")
    shapes = [tuple(weights[f"blocks.{i}.weight"].shape) for i in convs]
    if any(len(s) != 4 or s[2:] != (3, 3) for s in shapes) or shapes[0][1] != IN_CHANNELS:
        raise ValueError(f"not a LayerDiffuse transparency encoder: convolution shapes {shapes}")
    widths = (*(s[1] for s in shapes), shapes[-1][0])
    if any(shapes[i][0] != shapes[i + 1][1] for i in range(len(shapes) - 1)):
        raise ValueError(f"the transparency encoder's widths do not chain: {shapes}")
    encoder = OffsetEncoder(widths)
    missing, unexpected = encoder.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(f"the transparency encoder's weights do not fit: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return encoder.eval()
