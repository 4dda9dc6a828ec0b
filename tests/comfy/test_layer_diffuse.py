"""LayerDiffuse against real ComfyUI: the tiny LoRA and transparent VAE files in the published key layouts,
KSampler -> Transparent VAE Decode -> RGBA kept by PNG and WEBP, the file rules (safetensors only, the published
pickle converted weights-only) and the contract errors. Comparisons with the reference implementation's own code
are in test_layer_diffuse_vs_peer.py; image-to-image and hires fix in test_layer_diffuse_img2img.py."""

import base64
import io
import json

import comfy_helpers
import numpy as np
import pytest
import torch
from comfy_helpers import ld_flux_conds as flux_conds
from PIL import Image

from imageinference.contract.errors import ContractError

ld_files, ld_catalog, flux, vae16 = (comfy_helpers.ld_files, comfy_helpers.ld_catalog, comfy_helpers.ld_flux,
                                     comfy_helpers.ld_vae16)
UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
FLUX_SCALE, FLUX_SHIFT = 0.3611, 0.1159  # the FLUX VAE's scaling and shift factors (diffusers config)


@pytest.fixture
def catalog_entry(ld_catalog):
    """Point an AIR elsewhere for one test."""
    changed = {}

    def point(air, entry):
        changed.update({k: v for k, v in comfy_helpers.ld_set_catalog({air: entry}).items() if k not in changed})

    yield point
    comfy_helpers.ld_restore_catalog({air: ld_catalog.get(air) for air in changed})


@pytest.fixture(scope="module")
def nodes_ld(comfy):
    from imageinference.comfyui.nodes import output, transparent_decode

    return transparent_decode, output.ImageInferenceOutput


@pytest.fixture(scope="module")
def tiny_decoder(ld_files):
    import comfy.utils

    from imageinference.engines.layerdiffuse.decoder import load_decoder

    return load_decoder(comfy.utils.load_torch_file(str(ld_files["transparentVae"]), safe_load=True))


def test_sizes_and_latents_the_decoder_cannot_take_are_contract_errors(tiny_decoder):
    from imageinference.engines.layerdiffuse.transparent_vae import check_latent

    # the constraint is real: 72 px breaks the skip concatenation
    with pytest.raises(RuntimeError), torch.no_grad():
        tiny_decoder(torch.rand(1, 3, 64, 72), torch.randn(1, 16, 8, 9))
    for shape, codes, params in [((1, 16, 8, 9), ["invalidWidth"], ["width"]),
                                 ((1, 16, 12, 8), ["invalidHeight"], ["height"]),
                                 ((1, 16, 4, 4), ["invalidWidth", "invalidHeight"], ["width", "height"]),
                                 ((1, 4, 8, 8), ["unsupportedLayerDiffuse"], ["layerDiffuse"]),
                                 ((1, 16, 1, 8, 8), ["unsupportedLayerDiffuse"], ["layerDiffuse"])]:
        with pytest.raises(ContractError) as info:
            check_latent(torch.zeros(shape), 16)
        assert (info.value.codes, info.value.parameters) == (codes, params), shape
    check_latent(torch.zeros(1, 16, 8, 16), 16)  # 64 x 128 is fine


def test_the_node_refuses_a_bad_size_before_decoding(ld_catalog, nodes_ld, vae16):
    transparent_decode, _output = nodes_ld
    with pytest.raises(ContractError) as info:
        transparent_decode.TransparentVAEDecode.execute({"samples": torch.zeros(1, 16, 9, 8)}, vae16, False)
    assert info.value.parameters == ["height"] and "multiples of 64" in info.value.errors[0].message


def test_the_transparent_vae_refuses_a_vae_of_another_latent_size(ld_catalog, nodes_ld, comfy):
    transparent_decode, _output = nodes_ld
    sd15_vae = comfy.CheckpointLoaderSimple().load_checkpoint("tiny_sd15.safetensors")[2]
    with pytest.raises(ContractError) as info:
        transparent_decode.TransparentVAENode.execute(sd15_vae, True)
    assert info.value.codes == ["unsupportedLayerDiffuse"] and "16-channel" in info.value.errors[0].message


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


def test_ksampler_then_transparent_decode_gives_rgba(sampled, nodes_ld, vae16, tiny_decoder, comfy):
    from imageinference.engines.layerdiffuse.decoder import decode_rgba

    transparent_decode, _output = nodes_ld
    rgba, mask = transparent_decode.TransparentVAEDecode.execute(sampled, vae16, False).result
    assert rgba.shape == (2, 64, 64, 4) and mask.shape == (2, 64, 64)
    assert torch.equal(mask, 1.0 - rgba[..., 3])  # ComfyUI's MASK convention: 1 = transparent
    alpha = rgba[..., 3]
    assert alpha.min() < 0.9 and alpha.max() > 0.1 and ((alpha > 0.02) & (alpha < 0.98)).float().mean() > 0.5
    with torch.no_grad():
        unclipped = torch.cat([vae16.first_stage_model.decode(z[None]) * 0.5 + 0.5 for z in sampled["samples"]])
    unclipped = unclipped.movedim(1, -1)  # image by image, as the reference decodes
    expected = decode_rgba(tiny_decoder, unclipped, sampled["samples"], augment=False)
    assert torch.equal(rgba, expected)  # the VAE's unclipped decode and the LATENT as given, no second un-scaling
    assert not torch.equal(rgba[0], rgba[1])
    # the Transparent VAE on core's VAE Decode node decodes the same RGBA
    transparent = transparent_decode.TransparentVAENode.execute(vae16, False).result[0]
    assert torch.equal(comfy.VAEDecode().decode(transparent, sampled)[0], rgba)


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


def test_the_published_pickle_is_refused_and_its_weights_only_conversion_decodes_the_same(
        ld_catalog, nodes_ld, sampled, vae16, ld_files, catalog_entry, tmp_path):
    import safetensors.torch

    from imageinference.engines.layerdiffuse.convert import main
    from imageinference.testing.tiny_layerdiffuse import transparent_vae_state_dict

    transparent_decode, _output = nodes_ld
    one = {"samples": sampled["samples"][:1]}
    reference = transparent_decode.TransparentVAEDecode.execute(one, vae16, False).result[0]
    vae_dir = ld_files["transparentVae"].parent
    pth = vae_dir / "tiny_transparent_vae.test-published.pth"  # the published form: a torch.save pickle
    published = transparent_vae_state_dict()
    published["sd_vae.decoder.conv_in.weight"] = torch.zeros(2)  # other keys the release's file may hold
    torch.save(published, pth)
    target = vae_dir / "tiny_transparent_vae.test-conversion.safetensors"
    try:
        catalog_entry("runware:120@4", {"kind": "vae", "files": {"model": f"vae/{pth.name}"}})
        with pytest.raises(ContractError) as info:
            transparent_decode.TransparentVAEDecode.execute(one, vae16, False)
        assert info.value.codes == ["invalidModelFile"] and "layerdiffuse.convert" in info.value.errors[0].message
        assert main([str(pth), str(target)]) == 0
        written = safetensors.torch.load_file(str(target))
        assert set(written) == {k for k in published if not k.startswith("sd_vae.")}
        catalog_entry("runware:120@4", {"kind": "vae", "files": {"model": f"vae/{target.name}"}})
        converted = transparent_decode.TransparentVAEDecode.execute(one, vae16, False).result[0]
    finally:
        pth.unlink()
        target.unlink(missing_ok=True)
    assert torch.equal(reference, converted)
    # a file that is not a TransparentVAE is refused before anything is written
    other = tmp_path / "other.pth"
    torch.save({"decoder.conv_in.weight": torch.zeros(1)}, other)
    assert main([str(other), str(tmp_path / "out.safetensors")]) == 1
    assert not (tmp_path / "out.safetensors").exists()


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
    # with the Transparent VAE as its VAE the sampler itself answers RGBA: the same decode of the same latent
    transparent = transparent_decode.TransparentVAENode.execute(vae16, False).result[0]
    rgba_images, _seeds, latent2 = ImageInference.execute(model, transparent, pos, neg, 64, 64, 5, 3, "Euler", 1.0, 2,
                                                          0.8, 0).result[:3]
    assert torch.equal(latent2["samples"], latent["samples"]) and torch.equal(rgba_images, rgba)
