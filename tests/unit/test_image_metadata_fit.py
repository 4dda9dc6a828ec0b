"""Saved images carry their request and graph whatever the inputs' size: inline images are named by the UUID of
a stored copy, and what still does not fit a format is left out whole and named (never a failed delivery)."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from imageinference.contract.validate import validate_task
from imageinference.engines.imageio.deliver import deliver
from imageinference.engines.imageio.encode import JPG_EXIF_LIMIT, encode_fitted, read_graph, read_metadata
from imageinference.engines.imageio.metadata import INLINE_MIN_CHARS, content_uuid
from imageinference.engines.imageio.store import ImageStore
from imageinference.testing.photos import as_base64, as_data_uri, large_workflow, long_prompt, mask, photo

FORMATS = ("JPG", "PNG", "WEBP")
TASK = "3f1c2a4e-8b7d-4c6e-9a1f-2b3c4d5e6f70"


@pytest.fixture(scope="module")
def seed_b64() -> str:
    return as_base64(photo(1024, seed=1), "JPEG")


@pytest.fixture(scope="module")
def mask_uri() -> str:
    return as_data_uri(mask(1024, seed=2), "PNG")


def request_with(seed_b64: str, mask_uri: str) -> dict:
    return {"taskType": "imageInference", "taskUUID": TASK, "model": "civitai:4384@128713",
            "positivePrompt": long_prompt(3000), "negativePrompt": long_prompt(3000, seed=1), "width": 1024,
            "height": 1024, "inputs": {"seedImage": seed_b64, "maskImage": mask_uri}, "strength": 0.7}


def graph_with(request: dict) -> dict:
    """The API prompt as ComfyUI records it: each image string in its Load Image String node, the request again in
    the Output node's widget; the frontend's workflow holds the same widget values a third time."""
    prompt = {"6": {"class_type": "ImageInferenceLoadImage", "inputs": {"image": request["inputs"]["seedImage"],
                                                                          "role": "seedImage"}},
              "7": {"class_type": "ImageInferenceLoadImage", "inputs": {"image": request["inputs"]["maskImage"],
                                                                          "role": "maskImage"}},
              "5": {"class_type": "ImageInferenceOutput", "inputs": {"request": json.dumps(request)}}}
    workflow = {"nodes": [{"id": int(k), "type": v["class_type"], "widgets_values": list(v["inputs"].values())}
                          for k, v in prompt.items()], "links": [], "version": 0.4}
    return {"prompt": prompt, "workflow": workflow}


def stored_bytes(store: ImageStore, image_uuid: str) -> bytes:
    found = store.find(image_uuid)
    assert found is not None, f"no stored copy for {image_uuid}"
    return found.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_photo_sized_request_delivers_in_every_format_with_its_graph(tmp_path, seed_b64, mask_uri, fmt):
    assert len(seed_b64) > 300_000  # an ordinary photo, several times JPG's whole EXIF block
    store = ImageStore(tmp_path)
    request = request_with(seed_b64, mask_uri)
    delivered = deliver([photo(256, seed=3)], [7], TASK, store, "http://127.0.0.1:8188", "URL", fmt, 90,
                        request=request, graph=graph_with(request))
    assert delivered.left_out == []
    data = stored_bytes(store, delivered.results[0].imageUUID)
    embedded = read_metadata(data)
    seed_uuid = content_uuid(base64.b64decode(seed_b64))
    mask_uuid = content_uuid(base64.b64decode(mask_uri.split(",", 1)[1]))
    assert embedded["request"]["inputs"] == {"seedImage": seed_uuid, "maskImage": mask_uuid}
    assert embedded["request"]["positivePrompt"] == request["positivePrompt"]
    graph = read_graph(data)
    assert graph["prompt"]["6"]["inputs"]["image"] == seed_uuid
    assert json.loads(graph["prompt"]["5"]["inputs"]["request"])["inputs"]["seedImage"] == seed_uuid
    assert graph["workflow"]["nodes"][0]["widgets_values"][0] == seed_uuid
    # the copies are the very bytes sent, so a re-run by UUID sees the same image
    assert stored_bytes(store, seed_uuid) == base64.b64decode(seed_b64)
    assert stored_bytes(store, mask_uuid) == base64.b64decode(mask_uri.split(",", 1)[1])
    # and the embedded request is a valid request that names its images by UUID
    assert validate_task(embedded["request"]).to_json()["inputs"]["seedImage"] == seed_uuid


def test_an_image_sent_twice_is_stored_once(tmp_path, seed_b64):
    store = ImageStore(tmp_path)
    request = {"inputs": {"seedImage": seed_b64}, "controlNet": [{"guideImage": f"data:image/jpeg;base64,{seed_b64}"}]}
    delivered = deliver([photo(64)], [1], TASK, store, "http://x", "URL", "PNG", request=request)
    metadata = read_metadata(stored_bytes(store, delivered.results[0].imageUUID))
    assert metadata["request"]["inputs"]["seedImage"] == metadata["request"]["controlNet"][0]["guideImage"]
    assert len([p for p in tmp_path.iterdir() if p.suffix in (".jpg", ".png")]) == 2  # the output and one copy


def test_small_inline_images_stay_inline(tmp_path):
    buf = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buf, "PNG")
    tiny = base64.b64encode(buf.getvalue()).decode()
    assert len(tiny) < INLINE_MIN_CHARS
    store = ImageStore(tmp_path)
    delivered = deliver([photo(64)], [1], TASK, store, "http://x", "URL", "JPG", request={"inputs": {"maskImage": tiny}})
    assert read_metadata(stored_bytes(store, delivered.results[0].imageUUID))["request"]["inputs"]["maskImage"] == tiny


def test_what_does_not_fit_jpg_is_left_out_whole_and_named(tmp_path, seed_b64, mask_uri):
    request = request_with(seed_b64, mask_uri)
    graph = graph_with(request)
    graph["workflow"] = large_workflow(2_000_000)
    store = ImageStore(tmp_path)
    jpg = deliver([photo(128)], [7], TASK, store, "http://x", "URL", "JPG", request=request, graph=graph)
    assert jpg.left_out == ["workflow"]
    data = stored_bytes(store, jpg.results[0].imageUUID)
    assert set(read_graph(data)) == {"prompt"} and read_metadata(data)["seed"] == 7
    for fmt in ("PNG", "WEBP"):  # no such limit: everything is embedded
        other = deliver([photo(128)], [7], TASK, store, "http://x", "URL", fmt, request=request, graph=graph)
        assert other.left_out == []
        assert len(read_graph(stored_bytes(store, other.results[0].imageUUID))["workflow"]["nodes"]) == len(
            graph["workflow"]["nodes"])


def test_jpg_keeps_the_seed_and_uuids_when_even_the_request_does_not_fit():
    metadata = {"request": {"positivePrompt": "x" * (JPG_EXIF_LIMIT + 10)}, "seed": 5, "imageUUID": "u", "taskUUID": "t"}
    out = encode_fitted(photo(64), "JPG", 90, metadata, {"prompt": {"1": {"inputs": {"t": "y" * 40_000}}}})
    assert out.left_out == ["prompt", "request"]
    assert read_metadata(out.data) == {"seed": 5, "imageUUID": "u", "taskUUID": "t"}
