"""The sampling passes of a request: text-to-image, image-to-image (`strength`), inpainting (`maskImage`,
`maskMargin`). Adapter over ComfyUI's own `comfy.sample.sample`, so the plain path is KSampler's computation.

Rules (documented in the README):
- `numberResults` N samples one batch; result i has its own noise drawn from seed_i (see seeds.py), so result i
  equals a single run with seed_i for deterministic samplers.
- CFGScale <= 1: the negative prompt is ignored, by sampling with the positive conditioning in its place.
- Guidance-distilled models (FLUX.1 dev/schnell, FLUX.2): `CFGScale` is the model's distilled guidance (what
  core's FluxGuidance node sets) and the sampler runs without real CFG, so the negative prompt is ignored, unless
  `trueCFGScale` asks for real classifier-free guidance with the negative prompt on top (cfg = trueCFGScale).
- A seed image of another size is scaled to cover width x height and centre-cropped; its mask (same size as the
  seed image, checked by the node) goes through the same scaling.
- Inpainting changes only masked pixels: the decoded result is blended into the seed image with the mask, so
  pixels where the mask is 0 are the seed image's exactly. With `maskMargin`, only the mask's bounding box plus
  that margin is sampled, scaled to the request's working area, then scaled back and pasted (both ways with
  Lanczos, see lanczos.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import comfy.model_base
import comfy.sample
import comfy.utils
import latent_preview
import node_helpers
import torch

from .hires import DEFAULT_STRENGTH, HiresOptions, native_area, upscale_image, vae_decode, vae_encode
from .lanczos import lanczos_resize
from .outpaint import pad_canvas
from .refiner import RefinerOptions, sample_with_refiner
from .schedulers import lookup
from .sigmas import model_family
from .sizes import first_pass_size


@dataclass(frozen=True)
class SamplingSettings:
    steps: int
    cfg: float
    scheduler: str  # imageInference scheduler name
    seeds: list[int]
    true_cfg: float | None = None  # guidance-distilled models: real CFG scale with the negative prompt
    refiner: RefinerOptions | None = None  # takes over this pass at its start step (not the hires second pass)


def guidance_distilled(model: Any) -> bool:
    """Models whose guidance is an input of the network (FLUX.1, FLUX.2), not classifier-free guidance."""
    return type(model.model) in (comfy.model_base.Flux, comfy.model_base.Flux2)


def _noise(latent: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    return torch.cat([comfy.sample.prepare_noise(latent[i:i + 1], seed) for i, seed in enumerate(seeds)])


def sample(model: Any, positive: Any, negative: Any, latent: torch.Tensor, s: SamplingSettings,
           denoise: float = 1.0, noise_mask: torch.Tensor | None = None) -> torch.Tensor:
    sampler_name, schedule = lookup(s.scheduler).resolve(model_family(model))
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    cfg = s.cfg
    if guidance_distilled(model):
        positive = node_helpers.conditioning_set_values(positive, {"guidance": s.cfg})
        negative = node_helpers.conditioning_set_values(negative, {"guidance": s.cfg})
        cfg = s.true_cfg if s.true_cfg is not None else 1.0
    if cfg <= 1.0 and "sampler_cfg_function" not in model.model_options:
        negative = positive  # guidance off: uncond == cond, so the negative prompt cannot act
    callback = latent_preview.prepare_callback(model, s.steps)
    run = comfy.sample.sample if s.refiner is None else partial(sample_with_refiner, refiner=s.refiner)
    return run(model, _noise(latent, s.seeds), s.steps, cfg, sampler_name, schedule, positive, negative, latent,
               denoise=denoise, noise_mask=noise_mask, callback=callback,
               disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=s.seeds[0])


def empty_latent(batch: int, width: int, height: int) -> torch.Tensor:
    return torch.zeros([batch, 4, height // 8, width // 8])


def fit(image: torch.Tensor, width: int, height: int, crop: str = "center") -> torch.Tensor:
    """Scale a (B,H,W,C) image to width x height: cover and centre-crop, or stretch with crop="disabled"."""
    if image.shape[1] == height and image.shape[2] == width:
        return image
    return comfy.utils.common_upscale(image.movedim(-1, 1), width, height, "bicubic", crop).movedim(1, -1).clamp(0, 1)


def fit_mask(mask: torch.Tensor, width: int, height: int, crop: str = "center") -> torch.Tensor:
    m = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])
    if m.shape[-2:] != (height, width):
        m = comfy.utils.common_upscale(m, width, height, "bilinear", crop)
    return m[:, 0].clamp(0, 1)


def text_to_image(model: Any, vae: Any, positive: Any, negative: Any, width: int, height: int,
                  s: SamplingSettings, hires: HiresOptions | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, the sampled latent of the final pass)."""
    if hires is None:
        latent = sample(model, positive, negative, empty_latent(len(s.seeds), width, height), s)
        return vae_decode(vae, latent), latent
    w1, h1 = first_pass_size(width, height, native_area(model))
    first = vae_decode(vae, sample(model, positive, negative, empty_latent(len(s.seeds), w1, h1), s))
    return hires_second_pass(model, vae, positive, negative, first, width, height, hires, s)


def hires_second_pass(model: Any, vae: Any, positive: Any, negative: Any, first: torch.Tensor, width: int,
                      height: int, hires: HiresOptions, s: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    upscaled = fit(upscale_image(hires.upscaler, first), width, height)  # RGBA from a transparent VAE stays RGBA
    steps = hires.steps or s.steps
    strength = DEFAULT_STRENGTH if hires.strength is None else hires.strength
    second = replace(s, steps=steps, refiner=None)
    latent = sample(model, positive, negative, vae_encode(vae, upscaled), second, denoise=strength)
    return vae_decode(vae, latent), latent


def outpaint(model: Any, vae: Any, positive: Any, negative: Any, seed_image: torch.Tensor, sides: dict[str, int],
             strength: float, s: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the seed image, then inpaint the new area (the canvas is width x height, checked by the node)."""
    canvas, mask = pad_canvas(seed_image[..., :3], sides["top"], sides["right"], sides["bottom"], sides["left"],
                              sides["blur"])
    return inpaint(model, vae, positive, negative, canvas, mask, canvas.shape[2], canvas.shape[1], strength, None, s)


def image_to_image(model: Any, vae: Any, positive: Any, negative: Any, seed_image: torch.Tensor, width: int,
                   height: int, strength: float, s: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    # an alpha channel stays: a transparent VAE (layerDiffuse) encodes it; ComfyUI's VAEs take the RGB themselves
    pixels = fit(seed_image[:1], width, height)
    latent = vae.encode(pixels).repeat(len(s.seeds), 1, 1, 1)
    samples = sample(model, positive, negative, latent, s, denoise=strength)
    return vae.decode(samples), samples


def mask_box(mask: torch.Tensor, margin: int) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) of the mask's non-zero area grown by margin and clamped; None for an empty mask."""
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    if len(xs) == 0:
        return None
    h, w = mask.shape[-2:]
    return (max(0, int(xs.min()) - margin), max(0, int(ys.min()) - margin),
            min(w, int(xs.max()) + 1 + margin), min(h, int(ys.max()) + 1 + margin))


def working_size(box_w: int, box_h: int, width: int, height: int) -> tuple[int, int]:
    """The crop scaled to the request's area (width x height), aspect kept, multiples of 8."""
    scale = math.sqrt(width * height / max(1, box_w * box_h))
    return max(64, round(box_w * scale / 8) * 8), max(64, round(box_h * scale / 8) * 8)


def inpaint(model: Any, vae: Any, positive: Any, negative: Any, seed_image: torch.Tensor, mask: torch.Tensor,
            width: int, height: int, strength: float, mask_margin: int | None,
            s: SamplingSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, the sampled latent: of the working area, which is the whole image only without maskMargin)."""
    original = fit(seed_image[:1, :, :, :3], width, height)
    m = fit_mask(mask[:1] if mask.ndim == 3 else mask, width, height)[0]
    box = mask_box(m, mask_margin) if mask_margin is not None else (0, 0, width, height)
    if box is None:  # nothing to edit
        return original.repeat(len(s.seeds), 1, 1, 1), vae.encode(original).repeat(len(s.seeds), 1, 1, 1)
    x0, y0, x1, y1 = box
    crop, crop_mask = original[:, y0:y1, x0:x1], m[y0:y1, x0:x1]
    ww, wh = (x1 - x0, y1 - y0) if mask_margin is None else working_size(x1 - x0, y1 - y0, width, height)
    # stretch, not crop: the way back must land on the same pixels; Lanczos, as the crop may shrink several times
    work = lanczos_resize(crop, ww, wh)
    work_mask = fit_mask(crop_mask[None], ww, wh, "disabled")
    latent = vae.encode(work).repeat(len(s.seeds), 1, 1, 1)
    samples = sample(model, positive, negative, latent, s, denoise=strength,
                     noise_mask=work_mask.reshape(1, 1, wh, ww))
    generated = lanczos_resize(vae.decode(samples)[..., :3].float(), x1 - x0, y1 - y0).to(original.dtype)
    out = original.repeat(len(s.seeds), 1, 1, 1).clone()
    blend = crop_mask[None, :, :, None]
    out[:, y0:y1, x0:x1] = original[:, y0:y1, x0:x1] * (1 - blend) + generated * blend
    return out, samples
