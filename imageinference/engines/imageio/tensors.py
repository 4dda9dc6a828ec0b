"""PIL images <-> ComfyUI IMAGE / MASK tensors (torch only, no ComfyUI)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps


def to_image_tensor(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
    """(IMAGE (1,H,W,3) in [0,1], MASK (1,H,W): 1 where the image is transparent, as ComfyUI's LoadImage)."""
    img = ImageOps.exif_transpose(img) or img
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    if "A" in img.getbands() or "transparency" in img.info:  # palette and colour-key PNGs keep alpha in tRNS
        mask = 1.0 - np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    else:
        mask = np.zeros(rgb.shape[:2], dtype=np.float32)
    return torch.from_numpy(rgb)[None], torch.from_numpy(mask)[None]


def to_mask_tensor(img: Image.Image) -> torch.Tensor:
    """A mask image as MASK (1,H,W): white = edit (the API's convention); alpha, when present, is ignored."""
    img = ImageOps.exif_transpose(img) or img
    return torch.from_numpy(np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None]


def to_pil(image: torch.Tensor) -> Image.Image:
    """One (H,W,C) image in [0,1] -> 8-bit PIL, RGB or RGBA."""
    arr = np.clip(image.detach().cpu().float().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB")
