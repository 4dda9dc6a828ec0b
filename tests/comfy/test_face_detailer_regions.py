"""Which regions the detail pass works on and how (real ComfyUI, tiny SD1.5, tiny cell detectors): a seed per region
(identical faces come out different), at most maxRegions, size limits, the crop's context and upscale cap, and a
hard noise mask (the sampler's own denoise mask, recorded through ComfyUI's denoise-mask hook)."""

import json

import comfy_helpers
import pytest
import torch
from comfy_helpers import detail_run, face_rect, far_from, pixels_in, recorded_model_calls

detectors = comfy_helpers.detectors  # fixtures
sd15 = comfy_helpers.sd15
SIZE = 320


def twins(level=1.0):
    """Two identical faces whose crops (box + 2 x (4 + 4 + 32)) see exactly the same pixels: a flat background."""
    image = torch.full((1, SIZE, SIZE, 3), 0.1)
    for col in (4, 14):
        x0, y0 = col * 16, 4 * 16
        image[:, y0:y0 + 16, x0:x0 + 16, :] = level
    return image


def test_identical_faces_get_distinct_noise_seed_plus_region_index(detectors, sd15):
    image = twins()
    a, b = face_rect(4, 4), face_rect(14, 4)
    out, _m, det = detail_run(sd15, image, seed=40)
    assert det["images"][0]["regionSeeds"] == [40, 41]
    assert not torch.allclose(pixels_in(out, a), pixels_in(out, b), atol=0.02)  # different noise, different faces
    for rect in (a, b):
        assert (pixels_in(out, rect) - pixels_in(image, rect)).abs().mean() > 0.02
    same, _m, det = detail_run(sd15, image, seed=40, seedPerRegion=False)  # what every face used to get
    assert det["images"][0]["regionSeeds"] == [40, 40]
    assert torch.equal(pixels_in(same, a), pixels_in(same, b))  # the "all faces look alike" defect
    assert torch.equal(pixels_in(same, a), pixels_in(out, a))  # region 0 is sampled with the image's own seed
    alone, _m, _d = detail_run(sd15, image, seed=41, maxRegions=1)  # region 1 of seed 40 == region 0 of seed 41
    assert torch.allclose(pixels_in(alone, a), pixels_in(out, b), atol=1e-5)


def crowd():
    """Twelve faces of distinct brightness (so of distinct scores), a detector cell apart."""
    cells = [(2 + 3 * (i % 4), 2 + 4 * (i // 4), 1.0 - 0.025 * i) for i in range(12)]
    return comfy_helpers.faces_image(cells), cells


def test_at_most_max_regions_are_detailed_and_the_others_are_left_as_generated(detectors, sd15):
    from imageinference.engines.detailer.report import detection_warnings

    image, cells = crowd()
    (out, _m, det), calls = recorded_model_calls(sd15, image, maxRegions=3, steps=2, CFGScale=1.0,
                                                 inpaintSize=128, contextPadding=0)
    info = det["images"][0]
    assert (info["faces"], info["found"], info["skipped"]["limit"]) == (3, 12, 9)
    assert len(calls) == 3 * 2  # 3 regions x 2 steps, one model call each at CFG 1: the work is bounded
    detailed = [tuple(b[:4]) for b in info["boxes"]]
    assert detailed == [face_rect(c, r) for c, r, _ in cells[:3]]  # equal sizes: the highest scores
    keep = far_from(detailed, 8)
    assert torch.equal(out[0][keep], image[0][keep])  # the 9 others untouched, bit for bit
    (warning,) = [w for w in detection_warnings(json.dumps(det)) if w.code == "tooManyRegions"]
    assert "the other 9" in warning.message and "at most 3" in warning.message


def test_regions_outside_the_size_limits_are_ignored(detectors, sd15):
    image = comfy_helpers.faces_image([(6, 6, 1.0)])  # a 32 x 32 box
    out, _m, det = detail_run(sd15, image, minRegionSize=32)  # at most 32 wide: dropped, as Impact's drop_size
    assert (det["images"][0]["faces"], det["images"][0]["skipped"]["small"]) == (0, 1) and torch.equal(out, image)
    out, _m, det = detail_run(sd15, image, maxRegionSize=31)
    assert (det["images"][0]["faces"], det["images"][0]["skipped"]["large"]) == (0, 1) and torch.equal(out, image)
    _o, _m, det = detail_run(sd15, image, minRegionSize=31, maxRegionSize=32, strength=0.0)
    assert det["images"][0]["faces"] == 1


def encoded_crops(monkeypatch, vae):
    seen = []
    encode = vae.encode

    def spy(pixels, *args, **kwargs):
        seen.append(pixels.detach().clone())
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(vae, "encode", spy)
    return seen


def test_the_crop_holds_context_and_grows_to_keep_the_upscale_under_the_cap(detectors, sd15, monkeypatch):
    from imageinference.engines.samplers.lanczos import lanczos_resize

    seen = encoded_crops(monkeypatch, sd15[1])
    image = comfy_helpers.faces_image([(6, 6, 1.0)])  # box (88, 88, 120, 120)
    detail_run(sd15, image, inpaintSize=128, steps=1)  # 32 + 2 x (4 + 4 + 32) = 112 px: 1.14x
    assert torch.allclose(seen[-1], lanczos_resize(image[:, 48:160, 48:160], 128, 128))
    detail_run(sd15, image, inpaintSize=256, maxUpscale=1.5, steps=1)  # 112 px would be 2.3x: grows to 171
    assert torch.allclose(seen[-1], lanczos_resize(image[:, 19:190, 19:190], 256, 256))  # centred on the box
    detail_run(sd15, image, inpaintSize=128, contextPadding=0, steps=1)  # the old crop: box + padding + blur
    assert torch.allclose(seen[-1], lanczos_resize(image[:, 80:128, 80:128], 128, 128))


def test_on_a_picture_too_small_for_the_cap_the_crop_is_sampled_at_the_cap(detectors, sd15, monkeypatch):
    seen = encoded_crops(monkeypatch, sd15[1])
    image = comfy_helpers.faces_image([(6, 6, 1.0)], size=160)  # an 8-px cell, a 16-px box
    detail_run(sd15, image, inpaintSize=256, maxUpscale=1.25, steps=1)  # needs a 205-px crop; the picture is 160
    assert seen[-1].shape == (1, 200, 200, 3)  # 160 x 1.25, not 256
    detail_run(sd15, image, inpaintSize=256, maxUpscale=4.0, steps=1)  # 16 + 80 = 96 px, 64 px needed: fits
    assert seen[-1].shape == (1, 256, 256, 3)


def test_the_noise_mask_is_the_grown_region_hard_and_only_the_paste_is_feathered(detectors, sd15):
    """ComfyUI hands the sampler's denoise mask to model_options['denoise_mask_function'] at every step (the hook
    Differential Diffusion uses); recorded here, it must be the face's box grown by maskPadding, hard at the crop's
    resolution and scaled to the latent as ComfyUI scales any noise mask."""
    import comfy.sampler_helpers

    model, vae, pos, neg = sd15
    masks = []
    recording = model.clone()

    def record(sigma, denoise_mask, extra_options):
        masks.append(denoise_mask.detach().clone())
        return denoise_mask

    recording.set_model_denoise_mask_function(record)
    image = comfy_helpers.faces_image([(6, 6, 1.0)])
    pad, blur = 4, 6
    out, paste, _det = detail_run((recording, vae, pos, neg), image, maskPadding=pad, maskBlur=blur, inpaintSize=128,
                                  steps=2, contextPadding=0)
    assert len(masks) == 2 and torch.equal(masks[0], masks[1])
    crop = 88 - (pad + blur), 120 + (pad + blur)  # box 88..120 grown by padding + blur, no context: 52 px
    hard = torch.zeros((1, 1, 52, 52))
    hard[..., pad + blur - pad:52 - (pad + blur - pad), pad + blur - pad:52 - (pad + blur - pad)] = 1.0
    expected = comfy.sampler_helpers.prepare_mask(hard, masks[0].shape, "cpu")
    assert torch.allclose(masks[0].cpu(), expected, atol=1e-6)
    feathered = paste[0][crop[0]:crop[1], crop[0]:crop[1]]  # what the sampler used to be given
    assert ((feathered > 0) & (feathered < 1)).sum() > 4 * 40 * 2 * blur
    assert not torch.allclose(comfy.sampler_helpers.prepare_mask(feathered[None, None], masks[0].shape, "cpu"),
                              expected, atol=0.05)
    keep = paste[0] == 0
    assert torch.equal(out[0][keep], image[0][keep])


@pytest.mark.parametrize("bad", [{"maxRegions": 0}, {"maxUpscale": 0.5}, {"contextPadding": -1}])
def test_bad_region_options_are_contract_errors_naming_the_input(detectors, sd15, bad):
    from imageinference.contract.errors import ContractError

    with pytest.raises(ContractError) as info:
        detail_run(sd15, comfy_helpers.faces_image([(6, 6, 1.0)]), **bad)
    assert info.value.parameters == list(bad)
