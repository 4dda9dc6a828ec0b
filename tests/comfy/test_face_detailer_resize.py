"""The crops of the face detailer and of `maskMargin` inpainting are scaled with Lanczos, in float, both ways:
checked against Pillow's own Lanczos on 32-bit float images (an independent implementation), on the resize
function itself and on the pixels the real VAE is given and the pixels that are pasted back."""

import comfy_helpers
import numpy as np
import pytest
import torch
from comfy_helpers import detail_run, faces_image
from PIL import Image

detectors = comfy_helpers.detectors  # fixtures
sd15 = comfy_helpers.sd15


def pillow_lanczos(image, width, height):
    """(B, H, W, C) float -> Pillow's Lanczos on each channel as a 32-bit float ("F") image; clamped like ours."""
    out = []
    for b in range(image.shape[0]):
        chans = [np.asarray(Image.fromarray(image[b, :, :, c].double().numpy().astype(np.float32)).resize(
            (width, height), Image.Resampling.LANCZOS)) for c in range(image.shape[-1])]
        out.append(np.stack(chans, -1))
    return torch.from_numpy(np.stack(out)).clamp(0, 1)


@pytest.mark.parametrize(("w", "h", "width", "height"), [(37, 53, 200, 150), (200, 200, 28, 28), (140, 140, 1024, 1024),
                                                       (1024, 1024, 140, 140), (96, 64, 96, 200), (5, 3, 2, 1)])
def test_lanczos_matches_pillow_on_float_images(comfy, w, h, width, height):
    from imageinference.engines.samplers.lanczos import lanczos_resize

    image = torch.rand((1, h, w, 3), generator=torch.Generator().manual_seed(w * 1000 + h))
    ours = lanczos_resize(image, width, height)
    assert ours.shape == (1, height, width, 3) and ours.dtype == image.dtype
    assert torch.allclose(ours, pillow_lanczos(image, width, height), atol=2e-6)
    assert lanczos_resize(image, w, h) is image  # same size: untouched


def test_shrinking_a_fine_pattern_averages_it_instead_of_aliasing(comfy):
    """A 1-pixel checkerboard shrunk 7x is mid-grey to a resize that reads every pixel; bicubic interpolation
    (what the detail pass used before) reads 4 of each 49 and returns a pattern of its own."""
    import comfy.utils

    from imageinference.engines.samplers.lanczos import lanczos_resize

    y, x = torch.meshgrid(torch.arange(700), torch.arange(700), indexing="ij")
    board = ((x + y) % 2).float()[None, :, :, None].repeat(1, 1, 1, 3)
    small = lanczos_resize(board, 100, 100)
    assert (small - 0.5).abs().max() < 0.01
    bicubic = comfy.utils.common_upscale(board.movedim(-1, 1), 100, 100, "bicubic", "disabled").movedim(1, -1)
    assert (bicubic - 0.5).abs().max() > 0.2  # the defect this replaces


def capture(monkeypatch, vae):
    """Record what the real VAE encodes and decodes (the calls go through unchanged)."""
    seen = {"encode": [], "decode": []}
    encode, decode = vae.encode, vae.decode

    def spy_encode(pixels, *args, **kwargs):
        seen["encode"].append(pixels.detach().clone())
        return encode(pixels, *args, **kwargs)

    def spy_decode(samples, *args, **kwargs):
        out = decode(samples, *args, **kwargs)
        seen["decode"].append(out.detach().clone())
        return out

    monkeypatch.setattr(vae, "encode", spy_encode)
    monkeypatch.setattr(vae, "decode", spy_decode)
    return seen


def test_the_detail_pass_scales_its_crop_with_lanczos_both_ways(detectors, sd15, monkeypatch):
    from imageinference.engines.detailer.engine import detail_crop
    from imageinference.engines.detailer.geometry import Rect
    from imageinference.engines.detailer.settings import detailer_settings

    seen = capture(monkeypatch, sd15[1])
    image = faces_image([(6, 6, 1.0)])
    out, masks, det = detail_run(sd15, image, inpaintSize=200, maskPadding=4, maskBlur=4)
    (x0, y0, x1, y1, _score), = det["images"][0]["boxes"]
    s = detailer_settings({"confidence": 0.5, "maskPadding": 4, "maskBlur": 4, "inpaintSize": 200, "steps": 4,
                           "CFGScale": 5.0, "strength": 0.7})
    crop = detail_crop(Rect(x0, y0, x1, y1), s, 320, 320)
    assert crop == Rect(48, 48, 160, 160)  # the 32-px box + 4 + 4 + 32 (contextPadding) on every side
    (encoded,) = seen["encode"]
    source = image[:, crop.y0:crop.y1, crop.x0:crop.x1]
    assert torch.allclose(encoded, pillow_lanczos(source, 200, 200), atol=2e-6)  # up: 112 -> 200
    (decoded,) = seen["decode"]
    full = masks[0][crop.y0:crop.y1, crop.x0:crop.x1] >= 1.0  # where the paste is the detailed crop alone
    back = pillow_lanczos(decoded[..., :3].float(), crop.width, crop.height)  # down: 200 -> 112
    assert full.sum() > 500
    assert torch.allclose(out[0, crop.y0:crop.y1, crop.x0:crop.x1][full], back[0][full], atol=2e-6)


def test_mask_margin_inpainting_scales_its_crop_with_lanczos_both_ways(comfy, sd15, monkeypatch):
    from imageinference.engines.samplers.passes import SamplingSettings, inpaint, working_size

    model, vae, pos, neg = sd15
    seen = capture(monkeypatch, vae)
    gen = torch.Generator().manual_seed(5)
    seed_image = torch.rand((1, 256, 256, 3), generator=gen)
    mask = torch.zeros((1, 256, 256))
    mask[:, 100:130, 90:140] = 1.0
    margin = 10
    images, _latent = inpaint(model, vae, pos, neg, seed_image, mask, 256, 256, 0.8, margin,
                              SamplingSettings(2, 5.0, "Euler", [4]))
    x0, y0, x1, y1 = 80, 90, 150, 140  # the mask's box grown by the margin
    ww, wh = working_size(x1 - x0, y1 - y0, 256, 256)
    (encoded,) = seen["encode"]
    assert encoded.shape == (1, wh, ww, 3) and (ww, wh) != (x1 - x0, y1 - y0)
    assert torch.allclose(encoded, pillow_lanczos(seed_image[:, y0:y1, x0:x1], ww, wh), atol=2e-6)
    (decoded,) = seen["decode"]
    back = pillow_lanczos(decoded[..., :3].float(), x1 - x0, y1 - y0)
    inside = mask[0, y0:y1, x0:x1] >= 1.0
    assert torch.allclose(images[0, y0:y1, x0:x1][inside], back[0][inside], atol=2e-6)
    outside = mask[0] == 0
    assert torch.equal(images[0][outside], seed_image[0][outside])
