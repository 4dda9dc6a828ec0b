"""Our Face Detailer beside Impact Pack's FaceDetailer, both running in one real ComfyUI server (Impact Pack and its
detector provider installed from the vendored archives into the server's throwaway custom_nodes/), on the same tiny
SD1.5 and SDXL-shaped checkpoints, the same detector file, the same picture, with the settings mapped one to one
(IMPACT_SETTINGS / OUR_SETTINGS below; docs/face-detailer.md has the table).

The detector (`bbox_frac`, imageinference/testing/tiny_detector.py) reports boxes with fractional edges, on which
Impact's int() rounding of a box and its crop of 3 x the box cover exactly the pixels of our box and our square crop
(box + maskPadding + maskBlur + contextPadding each side): the geometry coincides, so the pixels can be compared.

Tolerances, and why: with Impact's own resize (ComfyUI's 8-bit Lanczos: the crop through a truncated uint8 Pillow
image and back, which is Impact's `tensor_resize`) swapped in for ours, our pixels are Impact's to one 8-bit level
(max 1/255; mean under 1e-4). With our float Lanczos, the faces differ from Impact's by at most 0.08 (mean 0.006):
Impact truncates the crop to 8 bits on the way up and the result on the way down, and the tiny random UNet carries
those 1/255 steps into its output. For scale: each face changes by more than 0.2 (mean) in both.
Where they differ on purpose, a test below shows it.
"""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SIZE = 320
FACES = ((5, 5, 1.0), (13, 12, 0.85))  # detector cells (column, row, level); the brighter is detailed first
SEED = 7
PAD, BLUR, CONTEXT = 4, 4, 25  # 4 + 4 + 25 = 33: Impact's 3 x box on these boxes
OUR_SETTINGS = {"confidence": 0.5, "maskPadding": PAD, "maskBlur": BLUR, "inpaintSize": 128, "steps": 2,
                "CFGScale": 5.0, "strength": 0.5, "scheduler": "Euler", "contextPadding": CONTEXT,
                "minRegionSize": 10}
IMPACT_SETTINGS = {"bbox_threshold": 0.5, "bbox_dilation": 2 * PAD + 1, "feather": BLUR, "guide_size": 128.0,
                   "guide_size_for": False, "max_size": 128.0, "steps": 2, "cfg": 5.0, "denoise": 0.5,
                   "sampler_name": "euler", "scheduler": "normal", "bbox_crop_factor": 3.0, "drop_size": 10,
                   "noise_mask": True, "noise_mask_feather": 0, "force_inpaint": True, "cycle": 1,
                   "inpaint_model": False, "wildcard": "", "sam_detection_hint": "center-1", "sam_dilation": 0,
                   "sam_threshold": 0.93, "sam_bbox_expansion": 0, "sam_mask_hint_threshold": 0.7,
                   "sam_mask_hint_use_negative": "False"}
FRAC = "bbox/tiny_face_cells_frac.pt"
INTEGER = "bbox/tiny_face_cells_d1.pt"


@pytest.fixture(scope="module")
def impact(tiny_models_root, tmp_path_factory):
    """A ComfyUI server with Impact Pack (and its detector provider), this pack, the test nodes and tiny models."""
    from imageinference.comfyui.server_process import ComfyServer
    from imageinference.testing import peers
    from imageinference.testing.tiny_detector import (
        DETECTORS,
        detector_path,
        ensure_tiny_detectors,
        face_image,
    )
    from imageinference.testing.tiny_extras import ensure_tiny_extras, link_extras
    from imageinference.testing.tiny_models import link_models

    base = tmp_path_factory.mktemp("impact-server")
    server = ComfyServer(base)
    server.prepare()
    try:
        peers.install_impact_pack(base / "custom_nodes")
    except peers.PeerMissing as exc:
        pytest.skip(f"Impact Pack archive missing: {exc}")
    nodes = base / "custom_nodes" / "ii_test_nodes"
    nodes.mkdir()
    shutil.copy(Path(__file__).with_name("server_test_nodes.py"), nodes / "__init__.py")
    link_models(tiny_models_root, server.models_dir, ["sd15"])
    link_extras(ensure_tiny_extras(["sdxl_unet"], tiny_models_root), server.models_dir, ["sdxl_unet"])
    ensure_tiny_detectors(tiny_models_root)
    for kind, (sub, name) in DETECTORS.items():
        dest = server.models_dir / "ultralytics" / sub / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(detector_path(kind, tiny_models_root))
    pixels = (face_image(SIZE, FACES, 0)[0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(pixels).save(base / "input" / "faces.png")
    server.start()
    try:
        missing = {"FaceDetailer", "UltralyticsDetectorProvider"} - set(server.object_info())
        assert not missing, (f"Impact Pack did not load ({sorted(missing)} missing; its requirements are in this "
                             f"pack's test extras):\n{server.log_tail(200)}")
        yield server
    finally:
        server.stop()


def models(arch):
    """Graph nodes for the model and prompts: SD1.5 from its checkpoint; SDXL as its UNet with conditioning of
    SDXL's shapes (its CLIP-G is not built), the SD VAE and CLIP of the SD1.5 checkpoint (Impact's `clip` input is
    used only for wildcards, none here)."""
    g = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
         "2": {"class_type": "LoadImage", "inputs": {"image": "faces.png"}}}
    if arch == "sd15":
        g["4"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a detailed face", "clip": ["1", 1]}}
        g["5"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}}
        return g, ["1", 0]
    g["6"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_sdxl_unet.safetensors",
                                                     "weight_dtype": "default"}}
    for nid, seed in (("4", 1), ("5", 2)):
        g[nid] = {"class_type": "IITestConditioning", "inputs": {"seed": seed, "tokens": 77, "context_dim": 2048,
                                                                 "pooled_dim": 1280}}
    return g, ["6", 0]


def side_by_side(arch, eight_bit=None, seed=SEED):
    g, model = models(arch)
    image = ["2", 0]
    if eight_bit is not None:
        g["30"] = {"class_type": "IITestEightBitResize", "inputs": {"image": ["2", 0], "eight_bit": eight_bit}}
        image = ["30", 0]
    g["3"] = {"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": FRAC}}
    g["10"] = {"class_type": "FaceDetailer", "inputs": {
        **IMPACT_SETTINGS, "image": ["2", 0], "model": model, "clip": ["1", 1], "vae": ["1", 2], "seed": seed,
        "positive": ["4", 0], "negative": ["5", 0], "bbox_detector": ["3", 0]}}
    g["20"] = {"class_type": "ImageInferenceFaceDetailer", "inputs": {
        **OUR_SETTINGS, "image": image, "model": model, "vae": ["1", 2], "positive": ["4", 0],
        "negative": ["5", 0], "detector": FRAC, "seed": seed}}
    g["11"] = {"class_type": "IITestSaveTensor", "inputs": {"name": f"impact-{arch}", "images": ["10", 0],
                                                            "mask": ["10", 3]}}
    g["12"] = {"class_type": "IITestSaveTensor", "inputs": {"name": f"impact-alpha-{arch}", "images": ["10", 2]}}
    g["21"] = {"class_type": "IITestSaveTensor", "inputs": {"name": f"ours-{arch}", "images": ["20", 0],
                                                            "mask": ["20", 1], "text": ["20", 2]}}
    g["22"] = {"class_type": "IITestSaveTensor", "inputs": {"name": "input", "images": ["2", 0]}}
    return g


def tensors(server, name):
    import safetensors.torch

    folder = server.base_dir / "output" / "tensors"
    out = safetensors.torch.load_file(str(folder / f"{name}.safetensors"))
    if (folder / f"{name}.json").exists():
        out["json"] = json.loads(json.loads((folder / f"{name}.json").read_text())["text"])
    return out


def run(server, graph):
    result = server.run_prompt(graph)
    assert result.ok, (result.errors, server.log_tail())
    return result


@pytest.fixture(scope="module")
def results(impact):
    found = {}
    for arch in ("sd15", "sdxl"):
        run(impact, side_by_side(arch))
        found[arch] = {"impact": tensors(impact, f"impact-{arch}"), "ours": tensors(impact, f"ours-{arch}"),
                       "alpha": tensors(impact, f"impact-alpha-{arch}")}
    found["input"] = tensors(impact, "input")["images"][0]
    return found


def box_pixels(col, row):
    from imageinference.testing.tiny_detector import fractional_box

    x0, y0, x1, y1 = fractional_box(SIZE, col, row)
    return math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)


def in_box(image, rect):
    x0, y0, x1, y1 = rect
    return image[y0:y1, x0:x1]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_impact_and_ours_detail_both_faces_alike_where_the_semantics_coincide(results, arch):
    impact, ours, original = results[arch]["impact"], results[arch]["ours"], results["input"]
    a, b = impact["images"][0], ours["images"][0]
    info = ours["json"]["images"][0]
    rects = [box_pixels(c, r) for c, r, _level in FACES]
    assert [tuple(box[:4]) for box in info["boxes"]] == rects and info["regionSeeds"] == [SEED, SEED + 1]
    grown = torch.zeros((SIZE, SIZE))
    for x0, y0, x1, y1 in rects:
        grown[y0 - PAD:y1 + PAD, x0 - PAD:x1 + PAD] = 1.0
    assert torch.equal(impact["mask"].reshape(SIZE, SIZE), grown)  # Impact's mask is our grown region, exactly
    untouched = ours["mask"][0] == 0  # both feathers reach exactly maskBlur pixels past the grown region
    assert torch.equal(a[untouched], original[untouched]) and torch.equal(b[untouched], original[untouched])
    for rect in rects:  # where both paste the detailed crop at full weight
        assert bool((in_box(ours["mask"][0], rect) == 1.0).all())
        theirs, mine, before = in_box(a, rect), in_box(b, rect), in_box(original, rect)
        assert (theirs - before).abs().mean() > 0.2 and (mine - before).abs().mean() > 0.2  # both detail it
        diff = (theirs - mine).abs()
        assert diff.mean() <= 0.006 and diff.max() <= 0.08, (rect, float(diff.mean()), float(diff.max()))


def test_with_impacts_8_bit_resize_ours_gives_impacts_pixels(impact, results):
    """The whole remaining difference is the resize precision: with ComfyUI's 8-bit Lanczos (Impact's) in place of
    ours, every pixel both paste at full weight is Impact's to one 8-bit level."""
    try:
        graph = side_by_side("sd15", eight_bit=True)
        for nid in ("10", "11", "12"):  # Impact's run is the one in `results`: only ours runs again
            del graph[nid]
        run(impact, graph)
        eight = tensors(impact, "ours-sd15")
    finally:
        run(impact, {"2": {"class_type": "LoadImage", "inputs": {"image": "faces.png"}},
                     "30": {"class_type": "IITestEightBitResize", "inputs": {"image": ["2", 0], "eight_bit": False}},
                     "31": {"class_type": "IITestSaveTensor", "inputs": {"name": "restore", "images": ["30", 0]}}})
    a, b = results["sd15"]["impact"]["images"][0], eight["images"][0]
    for c, r, _level in FACES:
        diff = (in_box(a, box_pixels(c, r)) - in_box(b, box_pixels(c, r))).abs()
        assert diff.max() <= 1 / 255 + 1e-6 and diff.mean() < 1e-4, (float(diff.max()), float(diff.mean()))
    assert not torch.equal(b, results["sd15"]["ours"]["images"][0])  # the swap took effect, and was undone after


def edge_profile(weights, y, x_from, n):
    return weights[y, x_from:x_from + n]


def step_response(sigma, radius, n):
    """Independent: a hard edge (0 left of the grown region, 1 inside) blurred by a normalised Gaussian of this sigma
    truncated at `radius`, sampled at the n pixels from `radius` outside the edge inwards."""
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    edge = torch.cat([torch.zeros(3 * radius), torch.ones(3 * radius)]).double()
    out = torch.nn.functional.conv1d(edge[None, None], kernel.flip(0)[None, None], padding=radius)[0, 0]
    return out[2 * radius:2 * radius + n].float()


def test_impact_feathers_its_paste_with_sigma_10_ours_with_sigma_blur_over_3(results):
    """Both feathers reach exactly `feather` / maskBlur pixels past the grown region (so the same pixels change),
    but Impact's Gaussian has sigma 10 whatever the width (nearly a box filter: a straight ramp), ours maskBlur / 3
    (a Gaussian edge). Impact's weights are its RGBA crop's alpha (`cropped_enhanced_alpha`)."""
    from imageinference.engines.detailer.engine import detail_crop
    from imageinference.engines.detailer.geometry import Rect
    from imageinference.engines.detailer.settings import detailer_settings

    x0, y0, x1, y1 = box_pixels(*FACES[0][:2])
    settings = detailer_settings({k: OUR_SETTINGS[k] for k in OUR_SETTINGS if k != "scheduler"})
    crop = detail_crop(Rect(x0, y0, x1, y1), settings, SIZE, SIZE)
    alpha = results["sd15"]["alpha"]["images"][0][..., 3]  # the first face's crop
    assert alpha.shape == (crop.height, crop.width)
    row, start, n = (y0 + y1) // 2, x0 - PAD - BLUR, 2 * BLUR + 1  # across the grown region's left edge
    theirs = edge_profile(alpha, row - crop.y0, start - crop.x0, n)
    mine = edge_profile(results["sd15"]["ours"]["mask"][0], row, start, n)
    assert torch.allclose(theirs, step_response(10.0, BLUR, n), atol=1e-4)
    assert torch.allclose(mine, step_response(BLUR / 3, BLUR, n), atol=1e-4)
    assert (theirs - mine).abs().max() > 0.1


def test_impacts_box_covers_one_more_pixel_column_and_row_on_integer_edges(impact):
    """A box [88, 120) x [88, 120) (integer edges): Impact draws it with cv2.rectangle from int(x0) to int(x1)
    inclusive, 33 x 33 pixels; ours covers the pixels the box touches, 32 x 32."""
    g = {"2": {"class_type": "LoadImage", "inputs": {"image": "faces.png"}},
         "3": {"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": INTEGER}},
         "10": {"class_type": "BboxDetectorSEGS", "inputs": {"bbox_detector": ["3", 0], "image": ["2", 0],
                                                             "threshold": 0.5, "dilation": 0, "crop_factor": 3.0,
                                                             "drop_size": 10, "labels": "all"}},
         "11": {"class_type": "SegsToCombinedMask", "inputs": {"segs": ["10", 0]}},
         "12": {"class_type": "IITestSaveTensor", "inputs": {"name": "impact-integer", "mask": ["11", 0]}},
         "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
         "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["1", 1]}},
         "20": {"class_type": "ImageInferenceFaceDetailer", "inputs": {
             **OUR_SETTINGS, "maskPadding": 0, "maskBlur": 0, "strength": 0.0, "image": ["2", 0], "model": ["1", 0],
             "vae": ["1", 2], "positive": ["4", 0], "negative": ["4", 0], "detector": INTEGER, "seed": SEED}},
         "21": {"class_type": "IITestSaveTensor", "inputs": {"name": "ours-integer", "mask": ["20", 1]}}}
    run(impact, g)
    theirs = tensors(impact, "impact-integer")["mask"].reshape(SIZE, SIZE)
    mine = tensors(impact, "ours-integer")["mask"][0]
    from imageinference.testing.tiny_detector import face_box

    for col, row, _level in FACES:
        x0, y0, x1, y1 = face_box(SIZE, col, row)  # integers on a 320-pixel picture
        assert bool(mine[y0:y1, x0:x1].eq(1).all()) and mine[y0:y1 + 1, x0:x1 + 1].sum() == 32 * 32
        assert bool(theirs[y0:y1 + 1, x0:x1 + 1].eq(1).all()) and theirs[y0 - 1:y1 + 2, x0 - 1:x1 + 2].sum() == 33 * 33


def test_impact_crops_three_times_the_box_in_its_shape_ours_is_a_square_with_pixel_margins(impact):
    """A 48 x 32 box (`bbox_wide`): Impact's crop is crop_factor x the box, 144 x 96 (its crops are the images
    Impact's SEGSPreview shows); ours is the square of the box plus maskPadding + maskBlur + contextPadding each
    side, 114 x 114, as ADetailer's crop (the mask's box plus a pixel margin, to the working area's square)."""
    from imageinference.engines.detailer.engine import detail_crop
    from imageinference.engines.detailer.geometry import Rect
    from imageinference.engines.detailer.settings import detailer_settings

    wide = "bbox/tiny_face_cells_wide.pt"
    g = {"2": {"class_type": "LoadImage", "inputs": {"image": "faces.png"}},
         "3": {"class_type": "UltralyticsDetectorProvider", "inputs": {"model_name": wide}},
         "10": {"class_type": "BboxDetectorSEGS", "inputs": {"bbox_detector": ["3", 0], "image": ["2", 0],
                                                             "threshold": 0.5, "dilation": 0, "crop_factor": 3.0,
                                                             "drop_size": 10, "labels": "all"}},
         "11": {"class_type": "SEGSPreview", "inputs": {"segs": ["10", 0], "alpha_mode": False, "min_alpha": 0.0}},
         "12": {"class_type": "IITestSaveTensor", "inputs": {"name": "impact-wide", "images": ["11", 0]}},
         "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
         "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a face", "clip": ["1", 1]}},
         "20": {"class_type": "ImageInferenceFaceDetailer", "inputs": {
             **OUR_SETTINGS, "strength": 0.0, "image": ["2", 0], "model": ["1", 0], "vae": ["1", 2],
             "positive": ["4", 0], "negative": ["4", 0], "detector": wide, "seed": SEED}},
         "21": {"class_type": "IITestSaveTensor", "inputs": {"name": "ours-wide", "mask": ["20", 1],
                                                             "text": ["20", 2]}}}
    run(impact, g)
    theirs = tensors(impact, "impact-wide")
    assert sorted(tuple(v.shape) for k, v in theirs.items() if k.startswith("images.")) == [(1, 96, 144, 3)] * 2
    boxes = tensors(impact, "ours-wide")["json"]["images"][0]["boxes"]
    settings = detailer_settings({k: OUR_SETTINGS[k] for k in OUR_SETTINGS if k != "scheduler"})
    assert [b[2] - b[0] for b in boxes] == [48, 48] and [b[3] - b[1] for b in boxes] == [32, 32]
    crops = [detail_crop(Rect(*b[:4]), settings, SIZE, SIZE) for b in boxes]
    assert [(c.width, c.height) for c in crops] == [(114, 114)] * 2
