"""The detail pass (adapter over ComfyUI's sampling, through samplers.passes): for each image of a batch, detect,
then re-sample every face in its square crop at inpaintSize and paste it back through its feathered mask.

Rules (documented in the README; geometry in geometry.py, masks in masks.py):
- Result i of a batch is detailed with seed_i (the sampler's seeds: seed + i); every face of that image uses it.
- An image with no face, and every image when `strength` is 0, comes back unchanged, bit for bit.
- Pixels where a face's feathered mask is 0 keep their values exactly; elsewhere the result is
  original * (1 - mask) + detailed * mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import torch

from ..samplers.hires import vae_decode, vae_encode
from ..samplers.passes import SamplingSettings, fit, fit_mask, sample
from .detector import detect
from .geometry import Detection, Rect, kept, pixel_rect, square_crop, working_size
from .masks import box_mask, paste_mask
from .report import ImageReport
from .settings import DetailerSettings


@dataclass
class DetailResult:
    images: torch.Tensor  # (B, H, W, C)
    masks: torch.Tensor  # (B, H, W): the largest paste weight any face gave each pixel
    reports: list[ImageReport] = field(default_factory=list)


def _region(face: Detection, rect: Rect, segments: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
    """The face's region: its segment for segmentation detectors (its box when the segment is empty), else its box."""
    if segments is not None and face.index < segments.shape[0]:
        segment = segments[face.index]
        if bool(segment.any()):
            return segment.float()
    return box_mask(height, width, rect)


def detail_face(model: Any, vae: Any, positive: Any, negative: Any, image: torch.Tensor, region: torch.Tensor,
                rect: Rect, s: DetailerSettings, scheduler: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image with this face detailed, the face's paste mask (H, W)) for a (1, H, W, C) image."""
    height, width = image.shape[1:3]
    crop = square_crop(rect, s.maskPadding + s.maskBlur, width, height)
    ys, xs = slice(crop.y0, crop.y1), slice(crop.x0, crop.x1)
    weight = paste_mask(region[ys, xs].to(image.device), s.maskPadding, s.maskBlur)
    full = torch.zeros((height, width), dtype=weight.dtype, device=weight.device)
    full[ys, xs] = weight
    if s.strength <= 0 or not bool((weight > 0).any()):
        return image, full
    pixels = image[:, ys, xs, :3]
    ww, wh = working_size(crop.width, crop.height, s.inpaintSize)
    work = fit(pixels, ww, wh, "disabled")
    work_mask = fit_mask(weight[None], ww, wh, "disabled")
    settings = SamplingSettings(s.steps, s.CFGScale, scheduler, [seed])
    samples = sample(model, positive, negative, vae_encode(vae, work), settings, denoise=s.strength,
                     noise_mask=work_mask.reshape(1, 1, wh, ww))
    detailed = fit(vae_decode(vae, samples)[..., :3], crop.width, crop.height, "disabled")
    detailed = detailed.to(device=image.device, dtype=image.dtype)
    blend = weight[None, :, :, None].to(dtype=image.dtype)
    out = image.clone()
    out[:, ys, xs, :3] = torch.where(blend > 0, pixels * (1 - blend) + detailed * blend, pixels)
    return out, full


def detail(model: Any, vae: Any, positive: Any, negative: Any, images: torch.Tensor, detector: Any,
           s: DetailerSettings, scheduler: str, seeds: list[int]) -> DetailResult:
    """Detail every image of a (B, H, W, C) batch; image i uses seeds[i]."""
    batch, height, width = images.shape[:3]
    device = comfy.model_management.get_torch_device()
    outs: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    reports: list[ImageReport] = []
    for i in range(batch):
        image = images[i:i + 1]
        found, segments = detect(detector, image[0], s.confidence, device)
        report = ImageReport(seeds[i])
        used = torch.zeros((height, width))
        for face in kept(found, s.confidence, width, height):
            comfy.model_management.throw_exception_if_processing_interrupted()
            rect = pixel_rect(face.box, width, height)
            assert rect is not None  # kept() keeps boxes that cover a pixel
            region = _region(face, rect, segments, height, width)
            image, weight = detail_face(model, vae, positive, negative, image, region, rect, s, scheduler, seeds[i])
            used = torch.maximum(used, weight.cpu().float())
            report.boxes.append((rect, face.score))
        outs.append(image)
        masks.append(used)
        reports.append(report)
    return DetailResult(torch.cat(outs), torch.stack(masks), reports)
