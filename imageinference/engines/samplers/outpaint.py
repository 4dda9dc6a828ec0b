"""Outpainting canvas and mask (torch only, no ComfyUI).

The seed image is padded by `top`/`right`/`bottom`/`left` (new pixels repeat the nearest edge, a neutral start
for the sampler), and the mask is 1 on the new area. With `blur` b > 0 the mask also reaches b pixels into the
original image, fading from 1 at the seam to 0, so the seam is re-generated softly; original pixels farther than
b from the seam are kept exactly.
"""

from __future__ import annotations

import torch


def pad_canvas(image: torch.Tensor, top: int, right: int, bottom: int, left: int,
               blur: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(canvas (1,H',W',C), mask (1,H',W')) for a (1,H,W,C) seed image."""
    img = image[:1]
    _, h, w, _c = img.shape
    chw = img.movedim(-1, 1)
    canvas = torch.nn.functional.pad(chw, (left, right, top, bottom), mode="replicate").movedim(1, -1)
    hh, ww = h + top + bottom, w + left + right
    ys = torch.arange(hh, dtype=torch.float32)[:, None].expand(hh, ww)
    xs = torch.arange(ww, dtype=torch.float32)[None, :].expand(hh, ww)
    inside = (ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)
    mask = (~inside).float()
    if blur > 0:
        # distance (in pixels, from 1) to each padded side, only for the sides that were padded
        distances = []
        if top:
            distances.append(ys - top + 1)
        if bottom:
            distances.append(top + h - ys)
        if left:
            distances.append(xs - left + 1)
        if right:
            distances.append(left + w - xs)
        if distances:
            d = torch.stack(distances).min(dim=0).values
            ramp = (1 - (d - 1) / blur).clamp(0, 1)
            mask = torch.where(inside, ramp * (d <= blur), mask)
    return canvas, mask[None]


def canvas_size(seed_w: int, seed_h: int, top: int, right: int, bottom: int, left: int) -> tuple[int, int]:
    return seed_w + left + right, seed_h + top + bottom
