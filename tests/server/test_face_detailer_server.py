"""`ultralytics` requests compiled and run on a real ComfyUI server (tiny SD1.5, tiny cell detector): the detail
pass changes the faces and nothing far from them, a 1024-pixel group photo gets distinct noise per face, a crowd
costs at most maxRegions detail passes and says how many it skipped, bad detector input is a contract error, the
server keeps serving."""

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from imageinference.interop.compiler import compile_request

SIZE = 320
UUID = "4b3c2d1e-0f9a-4b8c-8d7e-6f5a4b3c2d1e"
FACES = ((6, 6, 1.0), (14, 12, 1.0))


@pytest.fixture(scope="module")
def detector_on_server(server):
    import os

    from imageinference.testing.tiny_detector import DETECTORS, detector_path, ensure_tiny_detectors

    root = ensure_tiny_detectors()
    for kind, (sub, name) in DETECTORS.items():
        dest = server.models_dir / "ultralytics" / sub / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(detector_path(kind, root))
    path = os.environ["IMAGEINFERENCE_CATALOG"]  # the server reads the catalog file on every request
    with open(path) as fh:
        cat = json.load(fh)
    cat["models"]["runware:35@1"] = {"kind": "detector",
                                     "files": {"model": f"ultralytics/{DETECTORS['bbox'][0]}/{DETECTORS['bbox'][1]}"}}
    with open(path, "w") as fh:
        json.dump(cat, fh)
    return server


def face_png(faces, size=SIZE, background=None):
    from imageinference.testing.tiny_detector import face_image

    pixels = (face_image(size, faces, background=background)[0].numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return pixels.astype(np.int16), "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def request(**fields):
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "test:sd15@1", "positivePrompt": "two faces",
           "width": 128, "height": 128, "seed": 21, "steps": 2, "scheduler": "Euler", "CFGScale": 4.0,
           "outputFormat": "PNG", "ultralytics": {"inpaintSize": 128, "steps": 4, "strength": 0.8,
                                                  "confidence": 0.5, "maskPadding": 4, "maskBlur": 4}}
    req.update(fields)
    return req


def run(server, req, faces=FACES, change=None, size=SIZE, background=None):
    """The compiled request, with the picture the detailer works on replaced by one whose faces are known (the
    tiny models' own pictures are noise, with 'faces' anywhere)."""
    canonical, prompt = compile_request(req)
    original, uri = face_png(faces, size, background)
    prompt["69"] = {"class_type": "ImageInferenceLoadImage", "inputs": {"image": uri, "role": "seedImage"}}
    prompt["70"]["inputs"]["image"] = ["69", 0]
    if change:
        change(prompt)
    return original, server.run_prompt(prompt)


def output_pixels(result):
    (image,) = [img for img in result.images if img.node_id == "5"]
    return np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.int16)


def test_a_face_detailer_request_details_the_faces_and_nothing_far_from_them(detector_on_server):
    from imageinference.testing.tiny_detector import face_box

    server = detector_on_server
    original, result = run(server, request())
    assert result.ok, result.errors
    (item,) = json.loads(result.outputs["5"]["response"][0])["data"]
    assert item["seed"] == 21 and item["taskUUID"] == UUID
    after = output_pixels(result)
    keep = np.ones((SIZE, SIZE), dtype=bool)
    for col, row, _level in FACES:
        x0, y0, x1, y1 = face_box(SIZE, col, row)
        keep[max(0, y0 - 8):y1 + 8, max(0, x0 - 8):x1 + 8] = False
        assert np.abs(after[y0:y1, x0:x1] - original[y0:y1, x0:x1]).mean() > 2
    assert np.array_equal(after[keep], original[keep])  # PNG is lossless: bit for bit far from the faces


def test_bad_detector_input_is_a_contract_error_and_the_server_keeps_serving(detector_on_server):
    server = detector_on_server

    def missing(prompt):
        prompt["70"]["inputs"]["detector"] = "runware:35@2"  # face_yolov8s: in the catalog, no file

    _o, result = run(server, request(), change=missing)
    assert result.status == "error", result.errors
    err = json.loads(result.errors[0]["exception_message"])["errors"][0]
    assert err["code"] == "missingModelFile" and err["parameter"] == "ultralytics"
    assert "face_yolov8s.pt" in err["message"]

    def too_big(prompt):
        prompt["70"]["inputs"]["inpaintSize"] = 4096

    _o, result = run(server, request(), change=too_big)
    assert result.status == "rejected" and any("inpaintSize" in json.dumps(e) for e in result.errors)
    _o, result = run(server, request(), faces=((6, 6, 1.0),))
    assert result.ok, result.errors


def test_no_face_comes_back_unchanged_with_a_warning(detector_on_server):
    server = detector_on_server
    original, result = run(server, request(), faces=())
    assert result.ok, result.errors
    assert np.array_equal(output_pixels(result), original)
    info = server.object_info()["ImageInferenceOutput"]["input"]
    assert "detections" in info.get("optional", {})
    body = json.loads(result.outputs["5"]["response"][0])
    assert [w["code"] for w in body["warnings"]] == ["nothingDetected"]


# ---------------------------------------------------------------- group photos (1024 px, as users send them)

GROUP = 1024


def reach(faces, grow):
    """True where no face's box grown by `grow` reaches: the pixels that must come back bit for bit."""
    from imageinference.testing.tiny_detector import face_box

    keep = np.ones((GROUP, GROUP), dtype=bool)
    for col, row, _level in faces:
        x0, y0, x1, y1 = face_box(GROUP, col, row)
        keep[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = False
    return keep


def face_pixels(image, col, row):
    from imageinference.testing.tiny_detector import face_box

    x0, y0, x1, y1 = face_box(GROUP, col, row)
    return image[y0:y1, x0:x1]


def test_a_group_photo_gets_distinct_noise_per_face_and_nothing_else_changes(detector_on_server):
    """Four identical faces on a flat background: each crop sees the same pixels, so only the noise can tell them
    apart (one seed for every face made them come out pixel-identical)."""
    twins = tuple((col, 8, 1.0) for col in (2, 7, 12, 17))  # 256 px apart: no crop holds another face
    original, result = run(detector_on_server, request(), faces=twins, size=GROUP, background=0.1)
    assert result.ok, result.errors
    after = output_pixels(result)
    assert after.shape == (GROUP, GROUP, 3)
    crops = [face_pixels(after, col, row) for col, row, _level in twins]
    for crop, (col, row, _level) in zip(crops, twins, strict=True):
        assert np.abs(crop - face_pixels(original, col, row)).mean() > 2  # every face detailed
    for i in range(len(crops)):
        for j in range(i + 1, len(crops)):
            assert np.abs(crops[i] - crops[j]).mean() > 2, (i, j)  # and each differently
    keep = reach(twins, 4 + 4 + 1)  # maskPadding + maskBlur (+1: the detector's float box edges)
    assert np.array_equal(after[keep], original[keep])
    body = json.loads(result.outputs["5"]["response"][0])
    assert body.get("warnings", []) == []


def test_a_crowd_costs_at_most_max_regions_and_the_response_says_how_many_were_skipped(detector_on_server):
    """30 faces: the request's default maxRegions (10) bounds the work: 10 faces are detailed, the 20 others come
    back as generated, bit for bit. (Which 10: the largest boxes. Here all are one detector cell, but on a 1024-px
    picture the detector's float boxes differ in area by rounding, so the ties are not the scores' order; the order
    itself is tested where boxes are exact, tests/comfy/test_face_detailer_regions.py and the geometry unit tests.)"""
    crowd = tuple((1 + 3 * (i % 6), 1 + 4 * (i // 6), 1.0 - 0.01 * i) for i in range(30))
    one_step = request(ultralytics={**request()["ultralytics"], "steps": 1})  # what is counted is faces, not steps
    original, result = run(detector_on_server, one_step, faces=crowd, size=GROUP)
    assert result.ok, result.errors
    after = output_pixels(result)
    changed = [np.abs(face_pixels(after, c, r) - face_pixels(original, c, r)).mean() > 2 for c, r, _l in crowd]
    assert sum(changed) == 10, changed
    keep = reach([face for face, hit in zip(crowd, changed, strict=True) if hit], 4 + 4 + 1)
    assert np.array_equal(after[keep], original[keep])  # the 20 others, and everything else, bit for bit
    body = json.loads(result.outputs["5"]["response"][0])
    (warning,) = body["warnings"]
    assert warning["code"] == "tooManyRegions" and warning["parameter"] == "ultralytics"
    assert "found 30 regions" in warning["message"] and "the other 20" in warning["message"]
