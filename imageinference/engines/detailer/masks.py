"""Face masks on tensors with kornia (adapter: torch + kornia, no ComfyUI): a face's region as a mask, grown by
`maskPadding` (morphological dilation with a square element, so a box grows into the box padded on every side) and
feathered by `maskBlur` (a Gaussian whose kernel reaches exactly maskBlur pixels, so the mask is exactly 0 farther
than maskPadding + maskBlur from the region)."""

from __future__ import annotations

import kornia
import torch

from .geometry import Rect, feather_kernel


def box_mask(height: int, width: int, rect: Rect) -> torch.Tensor:
    """(height, width) float mask, 1 inside rect."""
    mask = torch.zeros((height, width))
    mask[rect.y0:rect.y1, rect.x0:rect.x1] = 1.0
    return mask


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate a (H, W) mask by `pixels` with a (2p+1)-square element, as two 1-D dilations (same result, memory
    linear in p)."""
    if pixels <= 0:
        return mask
    m = mask[None, None].float()
    line = torch.ones((1, 2 * pixels + 1), device=m.device)
    m = kornia.morphology.dilation(m, line, border_type="geodesic")
    m = kornia.morphology.dilation(m, line.t(), border_type="geodesic")
    return m[0, 0]


def feather(mask: torch.Tensor, blur: int) -> torch.Tensor:
    """Gaussian-feather a (H, W) mask's edges over `blur` pixels on each side; the image border is replicated, so a
    region touching it keeps full weight there."""
    kernel = feather_kernel(blur)
    if kernel is None:
        return mask.float()
    size, sigma = kernel
    out = kornia.filters.gaussian_blur2d(mask[None, None].float(), (size, size), (sigma, sigma),
                                         border_type="replicate")
    return out[0, 0].clamp(0, 1)


def paste_mask(region: torch.Tensor, padding: int, blur: int) -> torch.Tensor:
    """The weight each pixel of the detailed crop gets: the region grown by `padding`, feathered by `blur`."""
    return feather(grow(region, padding), blur)
