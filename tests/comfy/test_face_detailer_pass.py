"""The detail pass against real ComfyUI, real ultralytics and kornia, with the tiny SD1.5 model and tiny YOLO
detectors whose answers are known (imageinference/testing/tiny_detector.py): what changes and what does not, how it
samples, confidence, several faces, segments, batches and seeds, flow models."""

import json

import comfy_helpers
import pytest
import torch
from comfy_helpers import (
    FD_SEGM_FILE,
    FD_SIZE,
    detail_run,
    face_rect,
    faces_image,
    far_from,
    pixels_in,
    recorded_model_calls,
)

detectors = comfy_helpers.detectors  # fixtures
sd15 = comfy_helpers.sd15
SIZE = FD_SIZE
SEGM_FILE = FD_SEGM_FILE
run = detail_run
face_image = faces_image
box = face_rect
outside = far_from
region = pixels_in

# ---------------------------------------------------------------- the mask work


def test_grow_and_feather_match_references(comfy):
    import torchvision.transforms.functional as tvf

    from imageinference.engines.detailer.geometry import Rect
    from imageinference.engines.detailer.masks import box_mask, feather, grow, paste_mask

    rect = Rect(40, 50, 70, 64)
    for pad in (0, 1, 7, 20):
        assert torch.equal(grow(box_mask(128, 128, rect), pad), box_mask(128, 128, rect.grown(pad, 128, 128)))
    blob = torch.zeros((128, 128))
    blob[60:70, 50:58] = 1.0
    blob[72, 75] = 1.0
    for blur in (1, 4, 9):
        ours = feather(blob, blur)
        theirs = tvf.gaussian_blur(blob[None, None], [2 * blur + 1] * 2, [blur / 3] * 2)[0, 0]
        assert torch.allclose(ours, theirs, atol=1e-5)  # same Gaussian away from the border
    m = paste_mask(box_mask(128, 128, rect), 5, 6)
    keep = torch.ones((128, 128), dtype=torch.bool)
    keep[50 - 11:64 + 11, 40 - 11:70 + 11] = False
    assert m[keep].sum() == 0 and m[~keep].sum() > 0  # exactly 0 beyond padding + blur
    assert torch.all(m[50:64, 40:70] > 0.99)  # the box itself at full weight
    assert 0 < float(m[50, 40 - 5]) < 1  # the grown edge is feathered


# ---------------------------------------------------------------- the node


def test_pixels_beyond_padding_and_blur_are_unchanged_and_the_face_is_detailed(detectors, sd15):
    image = face_image([(6, 6, 1.0)])
    out, masks, det = run(sd15, image, maskPadding=5, maskBlur=3)
    assert det["images"][0]["faces"] == 1
    assert det["images"][0]["boxes"][0][:4] == list(box(6, 6))
    keep = outside([box(6, 6)], 5 + 3)
    assert torch.equal(out[0][keep], image[0][keep])
    assert (region(out, box(6, 6)) - region(image, box(6, 6))).abs().mean() > 0.02
    assert masks.shape == (1, SIZE, SIZE) and masks[0][keep].sum() == 0 and masks[0][~keep].max() > 0.999
    assert out.shape == image.shape and out.dtype == image.dtype


def recorded_detail_pass(sd15, **kw):
    """(latent shape, sigma, cond_or_uncond) of every model call of one detail pass on one face."""
    _result, calls = recorded_model_calls(sd15, face_image([(6, 6, 1.0)]), **kw)
    return [c[:3] for c in calls]


def test_the_detail_pass_samples_at_inpaint_size_with_its_steps_cfg_and_strength(detectors, sd15):
    model = sd15[0]
    calls = recorded_detail_pass(sd15, inpaintSize=192, steps=5, CFGScale=5.0, strength=0.6)
    assert {shape[-2:] for shape, _t, _c in calls} == {(24, 24)}  # a square crop scaled to 192 px: a 24x24 latent
    sigmas = sorted({t for _s, t, _c in calls}, reverse=True)
    assert len(sigmas) == 5  # `steps` (euler: one call per step)
    assert {c for _s, _t, cu in calls for c in cu} == {0, 1}  # CFGScale 5: the negative prompt is evaluated
    top = float(model.get_model_object("model_sampling").sigma_max)
    assert sigmas[0] < 0.9 * top  # strength 0.6 starts part way down the schedule
    calls = recorded_detail_pass(sd15, inpaintSize=128, steps=3, CFGScale=1.0, strength=1.0)
    assert {shape[-2:] for shape, _t, _c in calls} == {(16, 16)}
    sigmas = sorted({t for _s, t, _c in calls}, reverse=True)
    assert len(sigmas) == 3 and sigmas[0] > 0.9 * top  # strength 1 starts from the top of the schedule
    assert {c for _s, _t, cu in calls for c in cu} == {0}  # CFGScale 1: the positive prompt alone


def test_strength_zero_leaves_the_image_unchanged(detectors, sd15):
    image = face_image([(6, 6, 1.0), (12, 12, 1.0)])
    out, _masks, det = run(sd15, image, strength=0.0)
    assert torch.equal(out, image)
    assert det["images"][0]["faces"] == 2


def test_boxes_at_or_below_confidence_are_ignored(detectors, sd15):
    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector

    image = face_image([(6, 6, 1.0), (14, 12, 0.7)])
    found, _ = detect(load_detector(resolve_detector("runware:35@1")), image[0], 0.05)
    dim = min(d.score for d in found)
    out, _masks, det = run(sd15, image, confidence=dim)  # a score equal to confidence does not count
    assert det["images"][0]["faces"] == 1 and det["images"][0]["boxes"][0][:4] == list(box(6, 6))
    keep = outside([box(6, 6)], 8)
    assert torch.equal(out[0][keep], image[0][keep])  # the dim face is untouched
    out, _masks, det = run(sd15, image, confidence=dim - 0.01)
    assert det["images"][0]["faces"] == 2
    assert (region(out, box(14, 12)) - region(image, box(14, 12))).abs().mean() > 0.02


def test_two_faces_are_both_detailed_one_after_the_other(detectors, sd15):
    image = face_image([(4, 4, 1.0), (14, 13, 0.9)])
    out, masks, det = run(sd15, image)
    boxes = [b[:4] for b in det["images"][0]["boxes"]]
    assert boxes == [list(box(4, 4)), list(box(14, 13))]  # highest score first
    for b in (box(4, 4), box(14, 13)):
        assert (region(out, b) - region(image, b)).abs().mean() > 0.02
        assert region(masks[..., None], b).min() > 0.99
    keep = outside([box(4, 4), box(14, 13)], 8)
    assert torch.equal(out[0][keep], image[0][keep])


def test_segmentation_masks_are_honoured(detectors, sd15):
    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector
    from imageinference.engines.detailer.masks import grow

    image = face_image([(6, 6, 1.0)])
    _found, segments = detect(load_detector(resolve_detector(SEGM_FILE)), image[0], 0.5)
    pad, blur = 1, 1
    out, masks, det = run(sd15, image, detector=SEGM_FILE, maskPadding=pad, maskBlur=blur)
    assert det["detector"] == SEGM_FILE and det["images"][0]["faces"] == 1
    reach = grow(segments[0], pad + blur) > 0  # computed from ultralytics' own segment
    keep = ~reach
    x0, y0, x1, y1 = box(6, 6)
    in_box_not_segment = keep.clone()
    in_box_not_segment[:, :] = False
    in_box_not_segment[y0:y1, x0:x1] = keep[y0:y1, x0:x1]
    assert in_box_not_segment.sum() > 50  # the box has pixels the segment's reach does not
    assert torch.equal(out[0][keep], image[0][keep])
    assert masks[0][keep].sum() == 0
    assert (out[0][segments[0] > 0] - image[0][segments[0] > 0]).abs().mean() > 0.02
    bbox_out, _m, _d = run(sd15, image, maskPadding=pad, maskBlur=blur)  # the box detector changes those pixels
    assert not torch.equal(bbox_out[0][in_box_not_segment], image[0][in_box_not_segment])


def test_no_face_gives_the_image_back_bit_for_bit_and_says_so(detectors, sd15):
    from imageinference.engines.detailer.report import nothing_detected_warnings

    image = face_image([])
    out, masks, det = run(sd15, image)
    assert torch.equal(out, image) and masks.sum() == 0
    assert det["images"] == [{"seed": 3, "faces": 0, "boxes": [], "regionSeeds": [], "found": 0,
                              "skipped": {"limit": 0, "small": 0, "large": 0}}]
    warnings = nothing_detected_warnings(json.dumps(det))
    assert [w.code for w in warnings] == ["nothingDetected"]


def test_each_result_gets_its_own_detail_pass_and_seed(detectors, sd15):
    a = face_image([(6, 6, 1.0)], seed=1)
    b = face_image([], seed=2)
    batch = torch.cat([a, a, b])
    out, _masks, det = run(sd15, batch, seeds=json.dumps([40, 41, 42]))
    assert [img["seed"] for img in det["images"]] == [40, 41, 42]
    assert [img["faces"] for img in det["images"]] == [1, 1, 0]
    single40, _m, _d = run(sd15, a, seed=40)
    single41, _m, _d = run(sd15, a, seed=41)
    assert torch.allclose(out[0], single40[0], atol=1e-5) and torch.allclose(out[1], single41[0], atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)
    assert torch.equal(out[2], b[0])
    unlinked, _m, det = run(sd15, torch.cat([a, a]), seed=40)  # no seeds linked: seed + i
    assert [img["seed"] for img in det["images"]] == [40, 41]
    assert torch.allclose(unlinked, out[:2], atol=1e-5)


@pytest.mark.parametrize("air", ["test:sd3@1", "test:flux@1"])
def test_flow_models_with_16_channel_vaes_are_detailed_too(comfy, detectors, air):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute(air).result
    if clip is not None:
        pos = comfy.CLIPTextEncode().encode(clip, "a detailed face")[0]
        neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    else:  # the tiny FLUX has no text encoders: conditioning of FLUX's shapes
        gen = torch.Generator().manual_seed(0)
        pos = [[torch.randn((1, 8, 4096), generator=gen), {"pooled_output": torch.randn((1, 768), generator=gen)}]]
        neg = [[torch.zeros((1, 8, 4096)), {"pooled_output": torch.zeros((1, 768))}]]
    image = face_image([(6, 6, 1.0)])
    out, _masks, det = run((model, vae, pos, neg), image, steps=2, scheduler="FlowMatchEulerDiscreteScheduler",
                           CFGScale=1.0)
    assert det["images"][0]["faces"] == 1
    keep = outside([box(6, 6)], 8)
    assert torch.equal(out[0][keep], image[0][keep])
    assert (region(out, box(6, 6)) - region(image, box(6, 6))).abs().mean() > 0.02


