"""LayerDiffuse image-to-image and hires fix: an RGBA seed image keeps its alpha, and the hires fix's intermediate
image keeps its alpha, because both go through the transparent VAE (the published TransparentVAE's encode).

What these tests prove with random tiny weights: the alpha reaches the transparent encoder exactly (from a PNG,
WEBP or palette PNG string, through the Load Image String node or a MASK), the latent the sampler starts from is
that encoding, and each decode is the transparent decoder's. Whether a trained LoRA and VAE then reproduce a
seed's transparency is the published model's property, not something random weights can show.
"""

import base64
import io

import comfy_helpers
import numpy as np
import pytest
import torch
from comfy_helpers import ld_flux_conds, ld_rgba
from PIL import Image

from imageinference.testing.photos import photo

ld_files, ld_catalog, ld_flux, ld_vae16 = (comfy_helpers.ld_files, comfy_helpers.ld_catalog, comfy_helpers.ld_flux,
                                           comfy_helpers.ld_vae16)


@pytest.fixture(scope="module")
def nodes(comfy):
    from imageinference.comfyui.nodes import image_inference, load_image, transparent_decode

    return transparent_decode, image_inference.ImageInference, load_image.LoadImageString


@pytest.fixture(scope="module")
def lora_model(ld_catalog, nodes, ld_flux):
    return nodes[0].LayerDiffuseLoRA.execute(ld_flux).result[0]


class Recording:
    """Wraps a Transparent VAE: records what the sampler asks it to encode and decode."""

    def __init__(self, tvae):
        self.encoded, self.decoded = [], []
        encode, decode = tvae.encode, tvae.decode

        def rec_encode(pixels):
            self.encoded.append(pixels.clone())
            return encode(pixels)

        def rec_decode(samples, *args, **kwargs):
            out = decode(samples)
            self.decoded.append((samples.clone(), out.clone()))
            return out

        tvae.encode, tvae.decode, tvae.decode_tiled = rec_encode, rec_decode, rec_decode
        tvae.encode_tiled = lambda pixels, *a, **k: rec_encode(pixels)
        self.vae = tvae


def rgba_photo(size, seed=0):
    """A 1024-px photo as users send, with a soft-edged transparent background (RGBA)."""
    img = photo(size, seed).convert("RGBA")
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    alpha = np.clip((0.42 - np.hypot(yy, xx)) / 0.08, 0, 1)
    img.putalpha(Image.fromarray((alpha * 255).astype(np.uint8)))
    return img


def as_string(img, fmt, **save):
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- the seed image's alpha


def test_load_image_string_keeps_the_alpha_of_png_webp_and_palette_pngs(nodes):
    _td, _sampler, load = nodes
    img = rgba_photo(1024)
    want = 1.0 - np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0
    for text in (as_string(img, "PNG"), as_string(img, "WEBP", quality=90)):  # WEBP's alpha plane is lossless
        image, mask = load.execute(text, "seedImage").result
        assert image.shape == (1, 1024, 1024, 3) and np.array_equal(mask[0].numpy(), want)
    palette = img.convert("RGB").quantize(64)  # a palette PNG: its transparency lives in the tRNS chunk
    text = as_string(palette, "PNG", transparency=bytes(range(0, 256, 4)))  # one alpha per palette entry
    _image, mask = load.execute(text, "seedImage").result
    reopened = Image.open(io.BytesIO(base64.b64decode(text)))
    assert reopened.mode == "P" and "A" not in reopened.getbands() and "transparency" in reopened.info
    expected = 1.0 - np.asarray(reopened.convert("RGBA").getchannel("A"), np.float32) / 255.0
    assert np.array_equal(mask[0].numpy(), expected) and mask.max() > 0.5


def test_the_encode_node_takes_alpha_from_the_image_or_from_load_images_mask(ld_catalog, nodes, ld_vae16, comfy):
    transparent_decode, _sampler, _load = nodes
    rgba = ld_rgba(64, 128, seed=3)
    mask = 1.0 - rgba[..., 3]  # Load Image's convention
    rgba = torch.cat([rgba[..., :3], 1.0 - mask[..., None]], dim=-1)
    from_rgba = transparent_decode.TransparentVAEEncode.execute(rgba, ld_vae16).result[0]["samples"]
    from_mask = transparent_decode.TransparentVAEEncode.execute(rgba[..., :3], ld_vae16, mask).result[0]["samples"]
    tvae = transparent_decode.TransparentVAENode.execute(ld_vae16, True).result[0]
    core = comfy.VAEEncode().encode(tvae, rgba)[0]["samples"]  # core's VAE Encode with the Transparent VAE
    assert from_rgba.shape == (1, 16, 8, 16)
    assert torch.equal(from_rgba, from_mask) and torch.equal(from_rgba, core)
    opaque = transparent_decode.TransparentVAEEncode.execute(rgba[..., :3], ld_vae16).result[0]["samples"]
    assert not torch.allclose(opaque, from_rgba, atol=1e-3)  # the alpha changes the latent
    plain = ld_vae16.encode(rgba[..., :3])
    assert not torch.allclose(plain, from_rgba, atol=1e-3)  # and it is not the ordinary VAE's latent
    with pytest.raises(Exception) as info:
        transparent_decode.TransparentVAEEncode.execute(ld_rgba(64, 72), ld_vae16)
    assert getattr(info.value, "codes", None) == ["invalidWidth"]


def test_image_to_image_starts_from_the_transparent_encoding_of_the_rgba_seed(ld_catalog, nodes, lora_model,
                                                                             ld_vae16):
    from imageinference.engines.samplers.passes import SamplingSettings, sample

    transparent_decode, sampler, load = nodes
    seed_image, seed_mask = load.execute(as_string(rgba_photo(1024, seed=1), "PNG"), "seedImage").result
    from_graph = torch.cat([seed_image, 1.0 - seed_mask[..., None]], dim=-1)  # core's Join Image with Alpha
    rgba = torch.nn.functional.interpolate(from_graph.movedim(-1, 1), size=(64, 64), mode="area").movedim(1, -1)
    pos, neg = ld_flux_conds()
    rec = Recording(transparent_decode.TransparentVAENode.execute(ld_vae16, False).result[0])
    images, _seeds, latent = sampler.execute(lora_model, rec.vae, pos, neg, 64, 64, 5, 3, "Euler", 1.0, 1, 0.6, 0,
                                             seedImage=rgba).result[:3]
    (given,) = rec.encoded
    assert given.shape == (1, 64, 64, 4) and torch.equal(given, rgba)  # right size: passed on as it is, alpha too
    start = transparent_decode.TransparentVAEEncode.execute(rgba, ld_vae16).result[0]["samples"]
    want = sample(lora_model, pos, neg, start, SamplingSettings(3, 1.0, "Euler", [5]), denoise=0.6)
    assert torch.equal(latent["samples"], want)
    assert images.shape == (1, 64, 64, 4) and torch.equal(images, rec.decoded[-1][1])
    # the same seed without its alpha starts elsewhere; a plain VAE ignores the alpha as before
    opaque = sampler.execute(lora_model, rec.vae, pos, neg, 64, 64, 5, 3, "Euler", 1.0, 1, 0.6, 0,
                             seedImage=rgba[..., :3]).result[2]["samples"]
    assert not torch.allclose(opaque, latent["samples"], atol=1e-3)
    plain_rgba, plain_rgb = (sampler.execute(lora_model, ld_vae16, pos, neg, 64, 64, 5, 3, "Euler", 1.0, 1, 0.6, 0,
                                             seedImage=s).result[2]["samples"] for s in (rgba, rgba[..., :3]))
    assert torch.equal(plain_rgba, plain_rgb)


# ---------------------------------------------------------------- hires fix


def test_hires_fix_carries_the_first_pass_alpha_into_the_second_pass(ld_catalog, nodes, lora_model, ld_vae16):
    """Text-to-image 128 x 128 with hires fix: first pass at 64 x 64, its transparent decode (RGBA), the colour
    upscaled by the upscaler (as without LayerDiffuse) and the alpha bicubic, both fitted to 128 x 128, the
    transparent encode of that RGBA, the second pass, the transparent decode of its latent."""
    import comfy.utils

    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.models.loader import load_upscaler
    from imageinference.engines.samplers.hires import HiresOptions, upscale_image
    from imageinference.engines.samplers.passes import fit

    transparent_decode, sampler, _load = nodes
    upscaler = load_upscaler("runware:504@1", Catalog.load())
    hires = HiresOptions(upscaler, "runware:504@1", 2, 0.5)
    pos, neg = ld_flux_conds()
    rec = Recording(transparent_decode.TransparentVAENode.execute(ld_vae16, False).result[0])
    images, _seeds, latent = sampler.execute(lora_model, rec.vae, pos, neg, 128, 128, 7, 2, "Euler", 1.0, 1, 0.8, 0,
                                             hiresFix=hires).result[:3]
    (first_latent, first_rgba), (last_latent, last_rgba) = rec.decoded
    assert first_latent.shape == (1, 16, 8, 8) and first_rgba.shape == (1, 64, 64, 4)
    (second_input,) = rec.encoded
    assert second_input.shape == (1, 128, 128, 4)
    colour = fit(upscale_image(upscaler, first_rgba[..., :3]), 128, 128)  # the colour's path, unchanged
    alpha = comfy.utils.common_upscale(first_rgba[..., 3:].movedim(-1, 1), 256, 256, "bicubic", "disabled").clamp(0, 1)
    alpha = comfy.utils.common_upscale(alpha, 128, 128, "bicubic", "center").movedim(1, -1).clamp(0, 1)
    assert torch.equal(second_input[..., :3], colour)
    assert torch.allclose(second_input[..., 3:], alpha, atol=1e-6)
    assert (second_input[..., 3] < 0.98).float().mean() > 0.1  # a real alpha went in, not an opaque image
    assert torch.equal(last_latent, latent["samples"]) and torch.equal(images, last_rgba)
    assert last_rgba.shape == (1, 128, 128, 4)
