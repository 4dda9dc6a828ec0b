"""The colour the transparency encoder sees where an image is transparent (torch only): LayerDiffuse's padding.

An RGBA image's colour under alpha 0 is arbitrary (often black or white), so the published encoder is not fed the
colour as stored but a "padded" colour: the image's own colours spread outwards into the transparent areas. The
published way (lvmin's alpha pyramid, the same in the SD/SDXL and FLUX releases):
1. a pyramid of premultiplied colour (colour x alpha) and alpha, each level the previous one scaled by 1/1.2
   (sizes truncated to integers) with area averaging, down to a level one pixel high or wide;
2. the fill starts as the mean colour of the coarsest level (premultiplied colour summed / alpha summed);
3. from the coarsest level to the full size: the fill is scaled (bilinear) to the level and becomes
   premultiplied colour + fill x (1 - alpha).
Where alpha is 1 the result is the colour itself; where it is 0, a smooth extension of the nearby colours.

Our implementation (torch, no OpenCV): area averaging with per-axis overlap weights and bilinear interpolation
with half-pixel centres, both computed the way OpenCV's INTER_AREA (shrinking) and INTER_LINEAR compute them,
which the published code calls; the test compares the result with the published algorithm run through OpenCV.
"""

from __future__ import annotations

import math

import torch

PYRAMID_FACTOR = 1.2
MIN_COVER = 1e-3


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """The pyramid's (height, width) from the full size down to the first level one pixel high or wide."""
    sizes = [(height, width)]
    while min(sizes[-1]) > 1:
        h, w = sizes[-1]
        sizes.append((int(h / PYRAMID_FACTOR), int(w / PYRAMID_FACTOR)))
    return sizes


def area_weights(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights), each (n_out, taps): output cell i averages the input cells its interval
    [i * s, (i + 1) * s) covers (s = n_in / n_out), each weighted by the length it covers (over s)."""
    scale = n_in / n_out
    taps = math.ceil(scale) + 1
    start = torch.arange(n_out, dtype=torch.float64) * scale
    end = torch.clamp(start + scale, max=n_in)
    index = torch.floor(start)[:, None] + torch.arange(taps, dtype=torch.float64)[None]
    covered = torch.minimum(end[:, None], index + 1) - torch.maximum(start[:, None], index)
    # OpenCV leaves out a cell the interval covers by 1e-3 or less (and does not renormalise); so do we, or
    # images over about 1000 px would differ from the published padding by up to 1e-3
    covered = torch.where(covered > MIN_COVER, covered, torch.zeros_like(covered))
    weights = covered / (end - start)[:, None]
    return index.clamp(max=n_in - 1).long(), weights.float()


def area_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) -> (C, height, width) by area averaging (shrinking only); rows of each axis summed in order."""
    idx, w = area_weights(x.shape[2], width)
    x = (x[:, :, idx] * w).sum(dim=-1)  # along the width first
    idx, w = area_weights(x.shape[1], height)
    return (x[:, idx, :] * w[None, :, :, None]).sum(dim=2)


def linear_weights(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights), each (n_out, 2): linear interpolation with half-pixel centres, edges clamped. The
    source position is computed in double precision and rounded to float32 (as OpenCV does; torch's own bilinear
    computes it in float32, which moves weights by up to 1e-4 at 2048 px)."""
    position = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * (n_in / n_out) - 0.5).float().double()
    first = torch.floor(position)
    fraction = position - first
    low = first < 0
    high = first >= n_in - 1
    fraction = torch.where(low | high, torch.zeros_like(fraction), fraction)
    first = torch.where(low, torch.zeros_like(first), torch.where(high, torch.full_like(first, n_in - 1), first))
    index = torch.stack([first, torch.clamp(first + 1, max=n_in - 1)], dim=1).long()
    weights = torch.stack([1.0 - fraction.float(), fraction.float()], dim=1)
    return index, weights


def linear_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, H, W) -> (C, height, width), bilinear with half-pixel centres, along the width first."""
    idx, w = linear_weights(x.shape[2], width)
    x = x[:, :, idx[:, 0]] * w[:, 0] + x[:, :, idx[:, 1]] * w[:, 1]
    idx, w = linear_weights(x.shape[1], height)
    return x[:, idx[:, 0], :] * w[None, :, 0, None] + x[:, idx[:, 1], :] * w[None, :, 1, None]


def pad_colour(rgb: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) straight colour and (H, W) alpha, in [0, 1] -> (H, W, 3) padded colour (float32)."""
    colour = (rgb.float() * alpha.float()[..., None]).movedim(-1, 0)  # premultiplied, (3, H, W)
    a = alpha.float()[None]
    levels = [(colour, a)]
    for h, w in pyramid_sizes(*a.shape[1:])[1:]:
        colour, a = area_resize(colour, h, w), area_resize(a, h, w)
        levels.append((colour, a))
    top_colour, top_alpha = levels[-1]
    fill = top_colour.sum(dim=(1, 2), keepdim=True) / top_alpha.sum(dim=(1, 2), keepdim=True).clamp(1e-8, 1e32)
    for level_colour, level_alpha in reversed(levels):
        fill = linear_resize(fill, *level_colour.shape[1:])
        fill = level_colour + fill * (1.0 - level_alpha)
    return fill.movedim(0, -1)
