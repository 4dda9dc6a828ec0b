"""Builders shared by the in-process ComfyUI tests (tests/comfy). Each feature appends its own section."""


# ---------------------------------------------------------------- face detailer
# The tiny SD1.5 model and tiny YOLO detectors whose answers are known (imageinference/testing/tiny_detector.py):
# faces are bright 16-pixel squares on a 320 x 320 dark background, a face's box is its square grown by 8 pixels
# each side. Test modules import the fixtures they use: `from comfy_helpers import detectors, sd15`.

import json as _json
import os as _os

import pytest as _pytest
import torch as _torch

FD_SIZE = 320
FD_BBOX_FILE = "bbox/tiny_face_cells_d1.pt"
FD_SEGM_FILE = "segm/tiny_face_cells_d1-seg.pt"


@_pytest.fixture(scope="module")
def detectors(comfy, tmp_path_factory):
    """The tiny detectors (and files that are not detectors) in a registered ultralytics folder; catalog entries
    (runware:35@1 is the tiny bbox detector, test:faceseg@1 the segmentation one)."""
    import folder_paths

    from imageinference.testing.tiny_detector import DETECTORS, detector_path, ensure_tiny_detectors

    root = ensure_tiny_detectors()
    folder = tmp_path_factory.mktemp("ultralytics")
    for kind, (sub, name) in DETECTORS.items():
        (folder / sub).mkdir(exist_ok=True)
        (folder / sub / name).symlink_to(detector_path(kind, root))
    _torch.save({"weights": _torch.zeros(3)}, folder / "bbox" / "not_a_detector.pt")
    marker = tmp_path_factory.mktemp("marker") / "pickle-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _torch.save({"model": Payload()}, folder / "bbox" / "payload.pt")
    folder_paths.add_model_folder_path("ultralytics", str(folder), is_default=True)
    path = _os.environ["IMAGEINFERENCE_CATALOG"]
    with open(path) as fh:
        backup = fh.read()
    cat = _json.loads(backup)
    cat["models"].update({
        "runware:35@1": {"kind": "detector", "files": {"model": f"ultralytics/{FD_BBOX_FILE}"}},
        "test:faceseg@1": {"kind": "detector", "files": {"model": f"ultralytics/{FD_SEGM_FILE}"}},
    })
    with open(path, "w") as fh:
        _json.dump(cat, fh)
    yield {"folder": folder, "marker": marker, "payload": folder / "bbox" / "payload.pt"}
    with open(path, "w") as fh:  # the session's catalog is shared by later tests and servers
        fh.write(backup)


@_pytest.fixture(scope="module")
def sd15(comfy):
    """(model, vae, positive, negative) of the tiny SD1.5 checkpoint."""
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a detailed face")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, vae, pos, neg


def detail_run(sd15, image, **kw):
    """The Face Detailer node on `image` with small, test-sized settings; (images, masks, detections dict)."""
    from imageinference.comfyui.nodes.face_detailer import FaceDetailer

    model, vae, pos, neg = sd15
    args = dict(detector="runware:35@1", confidence=0.5, maskPadding=4, maskBlur=4, inpaintSize=128, steps=4,
                CFGScale=5.0, strength=0.7, scheduler="Euler", seed=3)
    args.update(kw)
    images, masks, detections = FaceDetailer.execute(image, model, vae, pos, neg, **args).result
    return images, masks, _json.loads(detections)


def faces_image(faces, seed=0, size=FD_SIZE):
    """A (1, size, size, 3) picture with faces (column, row, level) as detector cells (tiny_detector.face_image)."""
    from imageinference.testing.tiny_detector import face_image

    return face_image(size, tuple(faces), seed)


def face_rect(col, row, size=FD_SIZE):
    """The box the tiny bbox detector reports for the face in cell (col, row): (x0, y0, x1, y1) in pixels."""
    from imageinference.testing.tiny_detector import face_box

    return face_box(size, col, row)


def far_from(rects, grow, size=FD_SIZE):
    """Pixels farther than `grow` from every rect (x0, y0, x1, y1): True where nothing may change."""
    keep = _torch.ones((size, size), dtype=_torch.bool)
    for x0, y0, x1, y1 in rects:
        keep[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = False
    return keep


def pixels_in(image, rect):
    x0, y0, x1, y1 = rect
    return image[:, y0:y1, x0:x1]


def recorded_model_calls(sd15, image, **kw):
    """(the detailer's result, [(latent shape, sigma, cond_or_uncond, x)] of every model call of the detail pass)."""
    import comfy.patcher_extension

    model, vae, pos, neg = sd15
    calls = []
    recording = model.clone()

    def record(executor, x, t, *args, **kwargs):
        # BaseModel.apply_model(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        options = kwargs.get("transformer_options") or (args[3] if len(args) > 3 else {})
        calls.append((tuple(x.shape), float(t.flatten()[0]), tuple(options.get("cond_or_uncond", ())),
                      x.detach().clone()))
        return executor(x, t, *args, **kwargs)

    recording.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_detail_calls", record)
    result = detail_run((recording, vae, pos, neg), image, **kw)
    return result, calls
