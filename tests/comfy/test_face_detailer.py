"""The face detailer against real ComfyUI, real ultralytics and kornia, with the tiny SD1.5 model and tiny YOLO
detectors whose answers are known (imageinference/testing/tiny_detector.py): faces are bright 16-pixel squares
on a 320 x 320 dark background, a face's box is its square grown by 8 pixels each side."""

import json
import os
from pathlib import Path

import pytest
import torch

from imageinference.contract.errors import ContractError

SIZE = 320
BBOX_FILE = "bbox/tiny_face_cells_d1.pt"
SEGM_FILE = "segm/tiny_face_cells_d1-seg.pt"


@pytest.fixture(scope="module")
def detectors(comfy, tmp_path_factory):
    """The tiny detectors (and files that are not detectors) in a registered ultralytics folder; catalog entries."""
    import folder_paths

    from imageinference.testing.tiny_detector import DETECTORS, detector_path, ensure_tiny_detectors

    root = ensure_tiny_detectors()
    folder = tmp_path_factory.mktemp("ultralytics")
    for kind, (sub, name) in DETECTORS.items():
        (folder / sub).mkdir(exist_ok=True)
        (folder / sub / name).symlink_to(detector_path(kind, root))
    torch.save({"weights": torch.zeros(3)}, folder / "bbox" / "not_a_detector.pt")
    marker = tmp_path_factory.mktemp("marker") / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"model": Payload()}, folder / "bbox" / "payload.pt")
    folder_paths.add_model_folder_path("ultralytics", str(folder), is_default=True)
    path = os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        backup = fh.read()
    cat = json.loads(backup)
    cat["models"].update({
        "runware:35@1": {"kind": "detector", "files": {"model": f"ultralytics/{BBOX_FILE}"}},
        "test:faceseg@1": {"kind": "detector", "files": {"model": f"ultralytics/{SEGM_FILE}"}},
    })
    with open(path, "w") as fh:
        json.dump(cat, fh)
    yield {"folder": folder, "marker": marker}
    with open(path, "w") as fh:  # the session's catalog is shared by later tests and servers
        fh.write(backup)


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a detailed face")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, vae, pos, neg


def run(sd15, image, **kw):
    from imageinference.comfyui.nodes.face_detailer import FaceDetailer

    model, vae, pos, neg = sd15
    args = dict(detector="runware:35@1", confidence=0.5, maskPadding=4, maskBlur=4, inpaintSize=128, steps=4,
                CFGScale=5.0, strength=0.7, scheduler="Euler", seed=3)
    args.update(kw)
    images, masks, detections = FaceDetailer.execute(image, model, vae, pos, neg, **args).result
    return images, masks, json.loads(detections)


def face_image(faces, seed=0):
    from imageinference.testing.tiny_detector import face_image as draw

    return draw(SIZE, tuple(faces), seed)


def box(col, row):
    from imageinference.testing.tiny_detector import face_box

    return face_box(SIZE, col, row)


def outside(rects, grow):
    """Pixels farther than `grow` from every rect (x0, y0, x1, y1): True where nothing may change."""
    keep = torch.ones((SIZE, SIZE), dtype=torch.bool)
    for x0, y0, x1, y1 in rects:
        keep[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = False
    return keep


def region(image, rect):
    x0, y0, x1, y1 = rect
    return image[:, y0:y1, x0:x1]


# ---------------------------------------------------------------- the tiny detectors and the mask work


def test_tiny_detectors_answer_as_designed(detectors):
    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector

    image = face_image([(6, 6, 1.0), (12, 3, 0.7), (3, 14, 0.6)])
    yolo = load_detector(resolve_detector("runware:35@1"))
    found, masks = detect(yolo, image[0], 0.05)
    assert masks is None
    got = sorted(((round(d.box.x0), round(d.box.y0), round(d.box.x1), round(d.box.y1)), d.score) for d in found)
    assert [b for b, _ in got] == sorted([box(6, 6), box(12, 3), box(3, 14)])
    score = {b: s for b, s in got}
    assert score[box(6, 6)] > 0.95 > score[box(12, 3)] > 0.75 > score[box(3, 14)] > 0.55
    seg = load_detector(resolve_detector("test:faceseg@1"))
    assert seg.task == "segment"
    found, masks = detect(seg, image[0], 0.9)
    assert len(found) == 1 and masks is not None and masks.shape == (1, SIZE, SIZE)
    x0, y0, x1, y1 = box(6, 6)
    inside_box = torch.zeros((SIZE, SIZE), dtype=torch.bool)
    inside_box[y0:y1, x0:x1] = True
    assert masks[0][~inside_box].sum() == 0  # the segment lies in its box
    assert masks[0][96:112, 96:112].all()  # and covers the bright cell
    assert masks[0][inside_box].sum() < inside_box.sum() * 0.75  # but not the whole box


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
    import comfy.patcher_extension

    model, vae, pos, neg = sd15
    calls = []
    recording = model.clone()

    def record(executor, x, t, *args, **kwargs):
        # BaseModel.apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        options = kwargs.get("transformer_options") or (args[3] if len(args) > 3 else {})
        calls.append((tuple(x.shape), float(t.flatten()[0]), tuple(options.get("cond_or_uncond", ()))))
        return executor(x, t, *args, **kwargs)

    recording.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_detail_calls", record)
    run((recording, vae, pos, neg), face_image([(6, 6, 1.0)]), **kw)
    return calls


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
    assert det["images"] == [{"seed": 3, "faces": 0, "boxes": []}]
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


# ---------------------------------------------------------------- bad input


def test_the_node_offers_every_documented_detector_air_and_the_files_in_the_folders(detectors):
    import imageinference
    from imageinference.comfyui.nodes.face_detailer import detector_options

    options = detector_options()
    assert options[0] == "runware:35@1"  # the request's default first
    documented = {"runware:35@1": "bbox/face_yolov8n.pt", "runware:35@2": "bbox/face_yolov8s.pt",
                  "runware:35@3": "bbox/hand_yolov8n.pt", "runware:35@4": "segm/person_yolov8n-seg.pt",
                  "runware:35@5": "segm/person_yolov8s-seg.pt"}  # reference section 6.6
    builtin = json.loads((Path(imageinference.__file__).parent / "data" / "catalog_builtin.json").read_text())
    for air, file in documented.items():  # the built-in catalog (this module's catalog maps @1 to a tiny detector)
        assert air in options
        assert builtin["models"][air]["kind"] == "detector"
        assert builtin["models"][air]["files"]["model"] == f"ultralytics/{file}"
    found = {str(path.relative_to(detectors["folder"])) for path in detectors["folder"].glob("*/*")
             if path.suffix in (".pt", ".onnx")}
    assert found and found <= set(options)  # every detector file in the folders can be picked too


def test_a_missing_detector_file_says_which_file_and_where(detectors, sd15):
    with pytest.raises(ContractError) as info:
        run(sd15, face_image([(6, 6, 1.0)]), detector="runware:35@2")  # face_yolov8s: built-in entry, no file
    err = info.value.errors[0]
    assert (err.code, err.parameter) == ("missingModelFile", "ultralytics")
    assert "bbox/face_yolov8s.pt" in err.message and str(detectors["folder"]) in err.message
    assert "huggingface.co/Bingsu/adetailer" in err.message


@pytest.mark.parametrize("detector", ["bbox/not_a_detector.pt", "bbox/payload.pt", "https://example.com/x.pt",
                                      "/etc/passwd", "../bbox/tiny_face_cells_d1.pt", "bbox/x.safetensors"])
def test_what_is_not_a_yolo_detector_is_refused(detectors, sd15, detector):
    with pytest.raises(ContractError) as info:
        run(sd15, face_image([(6, 6, 1.0)]), detector=detector)
    assert info.value.codes == ["invalidUltralytics"] and info.value.parameters == ["ultralytics"]
    assert not detectors["marker"].exists()  # the pickle's payload never ran


@pytest.mark.parametrize("missing", ["safe_only", "weights_only_loader"])
def test_without_restricted_loading_a_pt_detector_needs_the_users_word(detectors, sd15, monkeypatch, missing):
    """An ultralytics without safe_only, or whose safe_only is not torch's weights-only loader (older releases swap
    unknown classes; on torch < 2.5 it loads the plain pickle), would unpickle a .pt file as it is."""
    from ultralytics.nn import tasks

    monkeypatch.delenv("IMAGEINFERENCE_TRUST_DETECTORS", raising=False)
    if missing == "safe_only":
        real = tasks.torch_safe_load
        monkeypatch.setattr(tasks, "torch_safe_load", lambda weight, *a, **kw: real(weight, *a, **kw))
    else:
        monkeypatch.setattr(tasks._SafeLoad, "SUPPORTED", False)
    with pytest.raises(ContractError) as info:
        run(sd15, face_image([(6, 6, 1.0)]), detector="bbox/payload.pt")
    assert info.value.codes == ["invalidUltralytics"] and "IMAGEINFERENCE_TRUST_DETECTORS" in info.value.errors[0].message
    with pytest.raises(ContractError):
        run(sd15, face_image([(6, 6, 1.0)]))  # the good tiny detector too: no .pt without restricted loading
    assert not detectors["marker"].exists()
    monkeypatch.setenv("IMAGEINFERENCE_TRUST_DETECTORS", "1")
    _images, _masks, det = run(sd15, face_image([(6, 6, 1.0)]), strength=0.0)
    assert det["images"][0]["faces"] == 1  # a trusted file loads as before


@pytest.mark.parametrize(("field", "value"), [("inpaintSize", 4096), ("inpaintSize", 64), ("maskPadding", 25)])
def test_out_of_range_settings_are_contract_errors(detectors, sd15, field, value):
    with pytest.raises(ContractError) as info:
        run(sd15, face_image([(6, 6, 1.0)]), **{field: value})
    assert info.value.parameters == [f"ultralytics.{field}"]


def test_ultralytics_leaves_the_process_alone(detectors):
    """ultralytics sets torch's thread count on every CPU prediction, OMP_NUM_THREADS and PIL.Image.open on import;
    the rest of ComfyUI must not feel any of it."""
    import PIL.Image

    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector
    from imageinference.engines.detailer.ultralytics_env import import_ultralytics

    before = (PIL.Image.open, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS"))
    torch.set_num_threads(3)
    try:
        import_ultralytics()
        detect(load_detector(resolve_detector("runware:35@1")), face_image([(6, 6, 1.0)])[0], 0.5)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before[1])
    assert (PIL.Image.open, torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")) == before
    assert os.environ.get("YOLO_OFFLINE") == "1"


def test_onnx_detectors_run_through_ultralytics_onnx_backend(detectors, sd15, tmp_path):
    pytest.importorskip("onnxruntime", reason="ultralytics' ONNX backend needs onnxruntime")
    pytest.importorskip("onnx", reason="exporting the tiny detector to ONNX needs onnx")
    from ultralytics import YOLO

    from imageinference.engines.detailer.ultralytics_env import process_left_alone
    from imageinference.testing.tiny_detector import detector_path

    with process_left_alone():
        exported = YOLO(str(detector_path("bbox"))).export(format="onnx", imgsz=640, dynamic=False, simplify=False)
    target = detectors["folder"] / "bbox" / "tiny_face_cells_d1.onnx"
    os.replace(exported, target)
    image = face_image([(6, 6, 1.0)])
    out, _masks, det = run(sd15, image, detector="bbox/tiny_face_cells_d1.onnx")
    assert det["images"][0]["boxes"][0][:4] == list(box(6, 6))
    keep = outside([box(6, 6)], 8)
    assert torch.equal(out[0][keep], image[0][keep])
