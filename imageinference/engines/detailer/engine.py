"""The detail pass (adapter over ComfyUI's sampling, through samplers.passes): for each image of a batch, detect,
choose the regions (geometry.select), then re-sample each one in its square crop and paste it back through its
feathered mask.

Rules (documented in docs/face-detailer.md; geometry in geometry.py, masks in masks.py):
- Result i of a batch is detailed with seed_i (the sampler's seeds: seed + i); region j of it (in detailing order)
  is sampled with seed_i + j, so two faces never get the same noise (seedPerRegion off: every region uses seed_i).
- The crop is scaled to its working size and back with Lanczos (samplers/lanczos.py), in float.
- The noise mask is the face's region grown by maskPadding, hard (0 or 1): the sampler changes the latent inside
  it and leaves it alone outside. Only the paste is feathered (by maskBlur), so no feather band is blended into the
  latent at every step.
- An image with no region, and every image when `strength` is 0, comes back unchanged, bit for bit.
- Pixels where a region's paste mask is 0 keep their values exactly; elsewhere the result is
  original * (1 - mask) + detailed * mask.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import comfy.model_management
import torch

from ..samplers.hires import vae_decode, vae_encode
from ..samplers.lanczos import lanczos_resize
from ..samplers.passes import SamplingSettings, sample
from .detector import detect
from .geometry import Detection, Rect, min_crop_side, pixel_rect, select, square_crop, working_size
from .masks import box_mask, feather, grow
from .report import ImageReport
from .settings import DetailerSettings

log = logging.getLogger(__name__)


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


def detail_crop(rect: Rect, s: DetailerSettings, width: int, height: int) -> Rect:
    """The square crop a region is sampled in (see geometry.py)."""
    margin = s.maskPadding + s.maskBlur + s.contextPadding
    return square_crop(rect, margin, width, height, min_crop_side(s.inpaintSize, s.maxUpscale))


def detail_face(model: Any, vae: Any, positive: Any, negative: Any, image: torch.Tensor, region: torch.Tensor,
                rect: Rect, s: DetailerSettings, scheduler: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image with this face detailed, the face's paste mask (H, W)) for a (1, H, W, C) image."""
    height, width = image.shape[1:3]
    crop = detail_crop(rect, s, width, height)
    ys, xs = slice(crop.y0, crop.y1), slice(crop.x0, crop.x1)
    grown = grow(region[ys, xs].to(image.device), s.maskPadding)  # hard: the sampled area
    weight = feather(grown, s.maskBlur)  # the paste
    full = torch.zeros((height, width), dtype=weight.dtype, device=weight.device)
    full[ys, xs] = weight
    if s.strength <= 0 or not bool((weight > 0).any()):
        return image, full
    pixels = image[:, ys, xs, :3]
    ww, wh = working_size(crop.width, crop.height, s.inpaintSize, s.maxUpscale)
    work = lanczos_resize(pixels, ww, wh)
    settings = SamplingSettings(s.steps, s.CFGScale, scheduler, [seed])
    # the crop-sized mask: ComfyUI scales it to the latent as it does a KSampler's noise mask
    samples = sample(model, positive, negative, vae_encode(vae, work), settings, denoise=s.strength,
                     noise_mask=(grown > 0.5).float().reshape(1, 1, crop.height, crop.width))
    detailed = lanczos_resize(vae_decode(vae, samples)[..., :3].float(), crop.width, crop.height)
    detailed = detailed.to(device=image.device, dtype=image.dtype)
    blend = weight[None, :, :, None].to(dtype=image.dtype)
    out = image.clone()
    out[:, ys, xs, :3] = torch.where(blend > 0, pixels * (1 - blend) + detailed * blend, pixels)
    return out, full


def detail(model: Any, vae: Any, positive: Any, negative: Any, images: torch.Tensor, detector: Any,
           s: DetailerSettings, scheduler: str, seeds: list[int]) -> DetailResult:
    """Detail every image of a (B, H, W, C) batch; image i uses seeds[i], its region j seeds[i] + j."""
    batch, height, width = images.shape[:3]
    device = comfy.model_management.get_torch_device()
    found = [detect(detector, images[i], s.confidence, device) for i in range(batch)]
    chosen = [select(boxes, s.confidence, width, height, s.maxRegions, s.minRegionSize, s.maxRegionSize)
              for boxes, _segments in found]
    outs: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    reports: list[ImageReport] = []
    for i in range(batch):
        image = images[i:i + 1]
        segments = found[i][1]
        selection = chosen[i]
        report = ImageReport(seeds[i], found=selection.found,
                             skipped={"limit": selection.limit, "small": selection.small, "large": selection.large})
        if selection.limit:
            log.info("face detailer: image %d has %d regions; detailing the %d largest (maxRegions), skipping %d",
                     i, selection.found - selection.small - selection.large, len(selection.regions), selection.limit)
        used = torch.zeros((height, width))
        for j, face in enumerate(selection.regions):
            comfy.model_management.throw_exception_if_processing_interrupted()
            rect = pixel_rect(face.box, width, height)
            assert rect is not None  # select() keeps boxes that cover a pixel
            seed = seeds[i] + j if s.seedPerRegion else seeds[i]
            region = _region(face, rect, segments, height, width)
            image, weight = detail_face(model, vae, positive, negative, image, region, rect, s, scheduler, seed)
            used = torch.maximum(used, weight.cpu().float())
            report.boxes.append((rect, face.score))
            report.seeds.append(seed)
        outs.append(image)
        masks.append(used)
        reports.append(report)
    return DetailResult(torch.cat(outs), torch.stack(masks), reports)
