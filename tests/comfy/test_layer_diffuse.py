"""LayerDiffuse against real ComfyUI: our decoder vs diffusers' blocks, the tiny LoRA and decoder files in the
published key layouts, KSampler -> Transparent VAE Decode -> RGBA kept by PNG and WEBP, and the contract errors."""

import base64
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from imageinference.contract.errors import ContractError

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
FLUX_SCALE, FLUX_SHIFT = 0.3611, 0.1159  # the FLUX VAE's scaling and shift factors (diffusers config)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ld_files(comfy):
    from imageinference.testing.tiny_layerdiffuse import ensure_tiny_layerdiffuse

    return ensure_tiny_layerdiffuse()


def set_catalog(entries):
    path = os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        data = json.load(fh)
    old = {air: data["models"].get(air) for air in entries}
    data["models"].update(entries)
    with open(path, "w") as fh:
        json.dump(data, fh)
    return old


def restore_catalog(old):
    path = os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        data = json.load(fh)
    for air, entry in old.items():
        if entry is None:
            data["models"].pop(air, None)
        else:
            data["models"][air] = entry
    with open(path, "w") as fh:
        json.dump(data, fh)


LD_CATALOG = {
    "runware:120@2": {"kind": "lora", "architecture": "flux-1-dev",
                      "files": {"model": "loras/tiny_layerdiffuse_flux_lora.safetensors"}},
    "runware:120@4": {"kind": "vae", "architecture": "flux-1-dev", "files": {"model": "vae/tiny_transparent_vae.pth"}},
}


@pytest.fixture(scope="module")
def ld_catalog(comfy, ld_files):
    """The LayerDiffuse AIRs pointed at the tiny files (in the session's user catalog), their folders registered."""
    import folder_paths

    root = ld_files["lora"].parents[1]
    folder_paths.add_model_folder_path("loras", str(root / "loras"))
    folder_paths.add_model_folder_path("vae", str(root / "vae"))
    old = set_catalog(LD_CATALOG)
    yield LD_CATALOG
    restore_catalog(old)


@pytest.fixture
def catalog_entry(ld_catalog):
    """Point an AIR elsewhere for one test."""
    changed = {}

    def point(air, entry):
        changed.update({k: v for k, v in set_catalog({air: entry}).items() if k not in changed})

    yield point
    restore_catalog({air: ld_catalog.get(air) for air in changed})


@pytest.fixture(scope="module")
def flux(comfy):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY, cache_root

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(cache_root())))


@pytest.fixture(scope="module")
def vae16(comfy):
    return comfy.VAELoader().load_vae("tiny_vae16.safetensors")[0]


@pytest.fixture(scope="module")
def nodes_ld(comfy):
    from imageinference.comfyui.nodes import output, transparent_decode

    return transparent_decode, output.ImageInferenceOutput


@pytest.fixture(scope="module")
def tiny_decoder(ld_files):
    import comfy.utils

    from imageinference.engines.layerdiffuse.decoder import load_decoder

    return load_decoder(comfy.utils.load_torch_file(str(ld_files["transparentVae"]), safe_load=True))


def flux_conds():
    g = torch.Generator().manual_seed(1)
    c = [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g), "guidance": 3.5}]]
    return c, c


# ---------------------------------------------------------------- the decoder against diffusers' blocks


def reference_decoder(widths, latent_channels=16):
    """The published decoder's structure (down: 4 plain + 3 attention levels, 2 blocks; up: 3 attention + 4 plain,
    3 blocks; GroupNorm 4, head size 8, eps 1e-5; latent added before level 3) from diffusers' own blocks."""
    diffusers_blocks = pytest.importorskip("diffusers.models.unets.unet_2d_blocks")
    from torch import nn

    n = len(widths)
    common = dict(temb_channels=None, resnet_eps=1e-5, resnet_act_fn="silu", resnet_groups=4, attention_head_dim=8,
                  resnet_time_scale_shift="default", dropout=0.0)

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_in = nn.Conv2d(3, widths[0], 3, padding=1)
            self.latent_conv_in = nn.Conv2d(latent_channels, widths[2], 1)
            self.down_blocks = nn.ModuleList(
                diffusers_blocks.get_down_block("AttnDownBlock2D" if i >= n - 3 else "DownBlock2D", num_layers=2,
                                                in_channels=widths[max(i - 1, 0)], out_channels=widths[i],
                                                add_downsample=i < n - 1, downsample_padding=1,
                                                downsample_type="conv", **common) for i in range(n))
            self.mid_block = diffusers_blocks.UNetMidBlock2D(
                in_channels=widths[-1], temb_channels=None, dropout=0.0, resnet_eps=1e-5, resnet_act_fn="silu",
                output_scale_factor=1, resnet_time_scale_shift="default", attention_head_dim=8, resnet_groups=4,
                add_attention=True)
            rev = list(reversed(widths))
            self.up_blocks = nn.ModuleList(
                diffusers_blocks.get_up_block("AttnUpBlock2D" if i < 3 else "UpBlock2D", num_layers=3,
                                              in_channels=rev[min(i + 1, n - 1)], out_channels=rev[i],
                                              prev_output_channel=rev[max(i - 1, 0)], add_upsample=i < n - 1,
                                              upsample_type="conv", **common) for i in range(n))
            self.conv_norm_out = nn.GroupNorm(4, widths[0], eps=1e-5)
            self.conv_out = nn.Conv2d(widths[0], 4, 3, padding=1)

        def forward(self, x, latent):
            h = self.conv_in(x)
            skips = (h,)
            for i, block in enumerate(self.down_blocks):
                if i == 3:
                    h = h + self.latent_conv_in(latent)
                h, more = block(hidden_states=h, temb=None)
                skips += more
            h = self.mid_block(h, None)
            for block in self.up_blocks:
                k = len(block.resnets)
                h, skips = block(h, skips[-k:], None), skips[:-k]
            return self.conv_out(torch.nn.functional.silu(self.conv_norm_out(h)))

    return Reference()


def test_our_decoder_computes_what_diffusers_blocks_compute_with_the_same_weights(tiny_decoder, ld_files):
    reference = reference_decoder(tiny_decoder.config.widths)
    sd = torch.load(str(ld_files["transparentVae"]), weights_only=True)
    reference.load_state_dict({k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")},
                              strict=True)  # the tiny file's decoder keys are diffusers' keys
    g = torch.Generator().manual_seed(3)
    x, z = torch.rand(1, 3, 64, 128, generator=g), torch.randn(1, 16, 8, 16, generator=g)
    with torch.no_grad():
        ours, theirs = tiny_decoder(x, z), reference.eval()(x, z)
    assert ours.shape == (1, 4, 64, 128)
    assert torch.allclose(ours, theirs, atol=2e-5), (ours - theirs).abs().max()


def test_the_full_size_decoder_has_the_published_layout(comfy):
    from imageinference.engines.layerdiffuse.decoder import TransparentDecoder

    with torch.device("meta"):
        ours, theirs = TransparentDecoder(), reference_decoder((32, 32, 64, 128, 256, 512, 512))
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert sum(v.numel() for v in ours.parameters()) == 104_105_572


def test_augmented_decode_is_the_lower_median_of_the_eight_views(tiny_decoder):
    from imageinference.engines.layerdiffuse.decoder import decode_rgba

    g = torch.Generator().manual_seed(4)
    pixels, latent = torch.rand(1, 64, 128, 3, generator=g), torch.randn(1, 16, 8, 16, generator=g)
    ours = decode_rgba(tiny_decoder, pixels, latent, augment=True)
    x, z = pixels.movedim(-1, 1).numpy(), latent.numpy()
    views = []
    for flip in (False, True):
        for turns in range(4):
            fx, fz = (x[..., ::-1], z[..., ::-1]) if flip else (x, z)
            fx, fz = np.rot90(fx, turns, axes=(2, 3)), np.rot90(fz, turns, axes=(2, 3))
            with torch.no_grad():
                y = tiny_decoder(torch.from_numpy(fx.copy()), torch.from_numpy(fz.copy())).clamp(0, 1).numpy()
            y = np.rot90(y, -turns, axes=(2, 3))
            views.append(y[..., ::-1] if flip else y)
    expected = np.sort(np.stack(views), axis=0)[3]  # the lower of the two middle values, as torch.median
    assert np.allclose(ours.movedim(-1, 1).numpy(), expected, atol=1e-5)
    single = decode_rgba(tiny_decoder, pixels, latent, augment=False)
    with torch.no_grad():
        assert torch.equal(single, tiny_decoder(pixels.movedim(-1, 1), latent).clamp(0, 1).movedim(1, -1))
    assert not torch.equal(single, ours)


def test_sizes_and_latents_the_decoder_cannot_take_are_contract_errors(tiny_decoder, nodes_ld):
    transparent_decode, _output = nodes_ld
    # the constraint is real: 72 px breaks the skip concatenation
    with pytest.raises(RuntimeError), torch.no_grad():
        tiny_decoder(torch.rand(1, 3, 64, 72), torch.randn(1, 16, 8, 9))
    for shape, codes, params in [((1, 16, 8, 9), ["invalidWidth"], ["width"]),
                                 ((1, 16, 12, 8), ["invalidHeight"], ["height"]),
                                 ((1, 16, 4, 4), ["invalidWidth", "invalidHeight"], ["width", "height"]),
                                 ((1, 4, 8, 8), ["unsupportedLayerDiffuse"], ["layerDiffuse"]),
                                 ((1, 16, 1, 8, 8), ["unsupportedLayerDiffuse"], ["layerDiffuse"])]:
        with pytest.raises(ContractError) as info:
            transparent_decode.check_latent(torch.zeros(shape), 16)
        assert (info.value.codes, info.value.parameters) == (codes, params), shape
    transparent_decode.check_latent(torch.zeros(1, 16, 8, 16), 16)  # 64 x 128 is fine


def test_the_node_refuses_a_bad_size_before_decoding(ld_catalog, nodes_ld, vae16):
    transparent_decode, _output = nodes_ld
    with pytest.raises(ContractError) as info:
        transparent_decode.TransparentVAEDecode.execute({"samples": torch.zeros(1, 16, 9, 8)}, vae16, False)
    assert info.value.parameters == ["height"] and "multiples of 64" in info.value.errors[0].message


# ---------------------------------------------------------------- the LoRA and sampling


def test_the_lora_node_patches_the_flux_model_with_every_key(ld_catalog, nodes_ld, flux, comfy):
    transparent_decode, _output = nodes_ld
    model, report = transparent_decode.LayerDiffuseLoRA.execute(flux).result
    assert json.loads(report) == {"model": "runware:120@2", "unmatchedKeys": []}
    patched = set(model.patches) - set(flux.patches)
    assert len(patched) == 10  # qkv, proj and both MLP layers of each stream, linear1/linear2 of the single block
    assert {"diffusion_model.double_blocks.0.img_attn.qkv.weight",
            "diffusion_model.single_blocks.0.linear1.weight"} <= patched
    sd15 = comfy.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[0]
    with pytest.raises(ContractError) as info:
        transparent_decode.LayerDiffuseLoRA.execute(sd15)
    assert info.value.codes == ["unsupportedLayerDiffuse"] and info.value.parameters == ["layerDiffuse"]


def test_a_comfy_latent_is_the_reference_demos_unscaled_latent(ld_catalog, nodes_ld, flux):
    """The reference decodes `latent / scaling_factor + shift_factor` of the sampler's output; ComfyUI's samplers
    already return that (process_out), so the decode node must take the LATENT as it is."""
    import comfy.sample

    transparent_decode, _output = nodes_ld
    model = transparent_decode.LayerDiffuseLoRA.execute(flux).result[0]
    latent = torch.zeros(1, 16, 8, 8)
    seen = []
    pos, neg = flux_conds()
    out = comfy.sample.sample(model, comfy.sample.prepare_noise(latent, 3), 3, 1.0, "euler", "simple", pos, neg,
                              latent, callback=lambda step, x0, x, total: seen.append(x0.clone()), disable_pbar=True,
                              seed=3)
    model_space = seen[-1]  # the final denoised sample, in the model's (scaled) space
    assert torch.allclose(out, model_space / FLUX_SCALE + FLUX_SHIFT, atol=1e-5)
    assert not torch.allclose(out, model_space, atol=1e-2)


@pytest.fixture(scope="module")
def sampled(ld_catalog, nodes_ld, flux, comfy):
    """KSampler with the LayerDiffuse LoRA on the tiny FLUX, 64 x 64, two images (seeds 5, 6)."""
    transparent_decode, _output = nodes_ld
    model = transparent_decode.LayerDiffuseLoRA.execute(flux).result[0]
    pos, neg = flux_conds()
    empty = {"samples": torch.zeros(1, 16, 8, 8)}  # EmptySD3LatentImage at 64 x 64
    latents = [comfy.KSampler().sample(model, seed, 3, 1.0, "euler", "simple", pos, neg, empty)[0]["samples"]
               for seed in (5, 6)]
    return {"samples": torch.cat(latents)}


def test_ksampler_then_transparent_decode_gives_rgba(sampled, nodes_ld, vae16, tiny_decoder):
    from imageinference.engines.layerdiffuse.decoder import decode_rgba

    transparent_decode, _output = nodes_ld
    rgba, mask = transparent_decode.TransparentVAEDecode.execute(sampled, vae16, False).result
    assert rgba.shape == (2, 64, 64, 4) and mask.shape == (2, 64, 64)
    assert torch.equal(mask, 1.0 - rgba[..., 3])  # ComfyUI's MASK convention: 1 = transparent
    alpha = rgba[..., 3]
    assert alpha.min() < 0.9 and alpha.max() > 0.1 and ((alpha > 0.02) & (alpha < 0.98)).float().mean() > 0.5
    expected = decode_rgba(tiny_decoder, vae16.decode(sampled["samples"]), sampled["samples"], augment=False)
    assert torch.equal(rgba, expected)  # the VAE's RGB and the LATENT as given, no second un-scaling
    assert not torch.equal(rgba[0], rgba[1])


def decoded_files(output_node, images, fmt):
    text = output_node.execute(images, fmt, 90, "base64Data", 0, False, seeds="[5, 6]", taskUUID=UUID,
                               request="").result[0]
    return [Image.open(io.BytesIO(base64.b64decode(item["imageBase64Data"]))) for item in json.loads(text)["data"]]


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_png_and_webp_keep_the_alpha(sampled, nodes_ld, vae16, fmt):
    transparent_decode, output_node = nodes_ld
    rgba = transparent_decode.TransparentVAEDecode.execute(sampled, vae16, False).result[0]
    files = decoded_files(output_node, rgba, fmt)
    for img, expected in zip(files, rgba, strict=True):
        assert img.format == fmt and img.mode == "RGBA"
        alpha = np.asarray(img.getchannel("A"), dtype=np.int32)
        want = np.clip(expected[..., 3].numpy() * 255.0 + 0.5, 0, 255).astype(np.int32)
        assert np.array_equal(alpha, want)  # PNG and WEBP (lossless alpha plane) keep alpha exactly
        if fmt == "PNG":
            rgb = np.asarray(img.convert("RGB"), dtype=np.int32)
            assert np.array_equal(rgb, np.clip(expected[..., :3].numpy() * 255.0 + 0.5, 0, 255).astype(np.int32))


def test_augmented_node_decode_runs_and_differs_from_single_pass(sampled, nodes_ld, vae16):
    transparent_decode, _output = nodes_ld
    one = {"samples": sampled["samples"][:1]}
    aug = transparent_decode.TransparentVAEDecode.execute(one, vae16, True).result[0]
    single = transparent_decode.TransparentVAEDecode.execute(one, vae16, False).result[0]
    assert aug.shape == single.shape == (1, 64, 64, 4) and not torch.equal(aug, single)
    assert (aug - single).abs().mean() < 0.2  # the same picture, averaged over views


# ---------------------------------------------------------------- files and catalog


def test_a_safetensors_conversion_decodes_the_same(ld_catalog, nodes_ld, sampled, vae16, ld_files, catalog_entry):
    import safetensors.torch

    transparent_decode, _output = nodes_ld
    one = {"samples": sampled["samples"][:1]}
    from_pth = transparent_decode.TransparentVAEDecode.execute(one, vae16, False).result[0]
    sd = torch.load(str(ld_files["transparentVae"]), weights_only=True)
    target = ld_files["transparentVae"].parent / "tiny_transparent_vae.test-conversion.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(target))
    try:
        catalog_entry("runware:120@4", {"kind": "vae", "files": {"model": f"vae/{target.name}"}})
        from_st = transparent_decode.TransparentVAEDecode.execute(one, vae16, False).result[0]
    finally:
        target.unlink()
    assert torch.equal(from_pth, from_st)


@pytest.mark.parametrize(("file", "code"), [("vae/tiny_vae16.safetensors", "invalidModelFile"),
                                            ("vae/not_there.pth", "missingModelFile")])
def test_a_wrong_or_missing_decoder_file_is_a_contract_error(ld_catalog, nodes_ld, sampled, vae16, catalog_entry,
                                                             file, code):
    transparent_decode, _output = nodes_ld
    catalog_entry("runware:120@4", {"kind": "vae", "files": {"model": file}})
    with pytest.raises(ContractError) as info:
        transparent_decode.TransparentVAEDecode.execute(sampled, vae16, False)
    assert info.value.codes == [code] and info.value.parameters == ["layerDiffuse"]


def test_the_image_inference_sampler_latent_feeds_the_decode(ld_catalog, nodes_ld, flux, vae16):
    """The compiled graph: LayerDiffuse LoRA -> Image Inference sampler (its `latent` output) -> decode."""
    from imageinference.comfyui.nodes.image_inference import ImageInference

    assert len(ImageInference.define_schema().outputs) >= 3  # compiled graphs link the latent as [sampler, 2]
    transparent_decode, _output = nodes_ld
    model = transparent_decode.LayerDiffuseLoRA.execute(flux).result[0]
    pos, neg = flux_conds()
    images, seeds, latent = ImageInference.execute(model, vae16, pos, neg, 64, 64, 5, 3, "Euler", 1.0, 2, 0.8,
                                                   0).result[:3]
    assert latent["samples"].shape == (2, 16, 8, 8) and json.loads(seeds) == [5, 6]
    rgba = transparent_decode.TransparentVAEDecode.execute(latent, vae16, False).result[0]
    assert rgba.shape == (2, 64, 64, 4)
    assert torch.equal(vae16.decode(latent["samples"]), images)  # the latent is the one the images were decoded from
