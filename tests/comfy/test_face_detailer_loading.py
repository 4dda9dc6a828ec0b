"""Face-detailer detectors against real ComfyUI and real ultralytics: the tiny detectors answer as designed, the node
offers the documented detectors, what is not a YOLO detector is refused without its pickle ever running, a .pt file
is read once (from what was checked), and a detector saved the way the published face_yolov8n.pt was loads through
the restricted path."""

import json
import os
import shutil
from pathlib import Path

import comfy_helpers
import pytest
import torch
from comfy_helpers import (
    detail_run,
    face_rect,
    faces_image,
    far_from,
)

from imageinference.contract.errors import ContractError

detectors = comfy_helpers.detectors  # fixtures
sd15 = comfy_helpers.sd15
SIZE = 320
run = detail_run
face_image = faces_image
box = face_rect
outside = far_from


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


# ---------------------------------------------------------------- read once; the published layout


def test_a_pt_detector_is_read_once_and_built_from_what_was_checked(detectors, monkeypatch, tmp_path):
    """A file that changes after the restricted check (here: replaced by a pickle whose loading runs code) must not
    be read again: the YOLO model is the object the restricted read returned."""
    from ultralytics.nn import tasks

    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector
    from imageinference.testing.tiny_detector import detector_path

    monkeypatch.delenv("IMAGEINFERENCE_TRUST_DETECTORS", raising=False)
    own = detectors["folder"] / "bbox" / "swapped_after_check.pt"
    shutil.copyfile(detector_path("bbox"), own)  # a real file: the swap must not reach the cached detector
    real = tasks.torch_safe_load
    reads = []

    def check_then_swap(weight, safe_only=None):
        reads.append(safe_only)
        out = real(weight, safe_only=safe_only)
        if safe_only:
            shutil.copyfile(detectors["payload"], weight)  # the file changes between the check and any later read
        return out

    monkeypatch.setattr(tasks, "torch_safe_load", check_then_swap)
    yolo = load_detector(resolve_detector("bbox/swapped_after_check.pt"))
    assert reads == [True]  # one read, the restricted one
    assert not detectors["marker"].exists()  # the swapped-in pickle never ran
    found, _ = detect(yolo, face_image([(6, 6, 1.0)])[0], 0.5)
    assert [(round(d.box.x0), round(d.box.y0), round(d.box.x1), round(d.box.y1)) for d in found] == [box(6, 6)]
    assert tasks.torch_safe_load is check_then_swap  # ultralytics is left as it was found


@pytest.fixture(scope="module")
def published(detectors):
    from imageinference.testing.tiny_detector import build_published_layout

    path = detectors["folder"] / "bbox" / "face_yolov8n.pt"
    build_published_layout(path)
    return path


def test_a_detector_saved_the_way_face_yolov8n_was_published_loads_restrictedly(published, monkeypatch):
    """runware:35@1 names face_yolov8n.pt (ultralytics 8.0.x, April 2023): a file of that layout (legacy module
    names, the trainer's namespace object, half precision) passes the restricted path with no user action."""
    import pickle

    from imageinference.engines.detailer.detector import detect, load_detector, resolve_detector
    from imageinference.testing.tiny_detector import LEGACY_MODULES, LEGACY_UTILS

    monkeypatch.delenv("IMAGEINFERENCE_TRUST_DETECTORS", raising=False)
    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(published)))
    assert f"{LEGACY_UTILS}.IterableSimpleNamespace" in names and f"{LEGACY_MODULES}.C2f" in names
    assert {n.rpartition(".")[0] for n in names} <= {LEGACY_MODULES, LEGACY_UTILS, "ultralytics.nn.tasks"} | {
        n.rpartition(".")[0] for n in names if n.startswith("torch.nn.modules.")}
    with pytest.raises(pickle.UnpicklingError):  # not loadable by torch's weights-only default alone
        torch.load(published, weights_only=True)
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    yolo = load_detector(resolve_detector("bbox/face_yolov8n.pt"))
    assert loads == [True]  # read once, weights-only
    assert yolo.task == "detect" and yolo.names == {0: "face"}
    found, masks = detect(yolo, face_image([(6, 6, 1.0)])[0], 0.0)  # random weights: any boxes; it runs
    assert masks is None and all(0.0 <= d.score <= 1.0 for d in found)
