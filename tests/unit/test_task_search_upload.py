"""modelSearch over a real catalog file; imageUpload into a real image store."""

import base64
import io
import json

import pytest
from PIL import Image

from imageinference.engines.imageio.limits import Limits
from imageinference.engines.imageio.store import ImageStore
from imageinference.engines.models.catalog import Catalog
from imageinference.server.search import model_search
from imageinference.server.uploads import stored_filename, upload_image

UUID = "0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f"


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"version": 1, "models": {
        "test:sd15@1": {"kind": "checkpoint", "architecture": "sd-1-5", "name": "Tiny SD",
                        "files": {"model": "checkpoints/tiny.safetensors"}},
        "test:lora@2": {"kind": "lora", "architecture": "sd-1-5", "files": {"model": "loras/l.safetensors"}},
        "test:flux@1": {"kind": "diffusionModel", "architecture": "flux-1-dev", "files": {"model": "unet/f.sft"}},
    }}))
    return Catalog.load(path, builtin=False)


def search(catalog, **fields):
    item, errors = model_search({"taskType": "modelSearch", "taskUUID": UUID, **fields}, catalog)
    assert not errors, errors
    return item


def test_model_search_filters_and_pages(catalog):
    everything = search(catalog)
    assert everything["totalResults"] == 3 and everything["taskUUID"] == UUID
    assert [m["air"] for m in everything["results"]] == ["test:flux@1", "test:lora@2", "test:sd15@1"]
    sd = search(catalog, search="tiny")["results"]
    assert [m["air"] for m in sd] == ["test:sd15@1"]
    m = sd[0]
    assert (m["name"], m["version"], m["category"], m["architecture"], m["architectureSlug"]) == \
        ("Tiny SD", "1", "checkpoint", "sd1x", "sd-1-5")
    assert {"tags", "heroImage", "private", "comment", "type"} <= set(m)  # what the SDKs' model type requires
    assert [m["air"] for m in search(catalog, architecture="flux1d")["results"]] == ["test:flux@1"]
    assert [m["air"] for m in search(catalog, architecture="sd-1-5", category="lora")["results"]] == ["test:lora@2"]
    page = search(catalog, limit=1, offset=1, sort="-air")
    assert page["totalResults"] == 3 and [m["air"] for m in page["results"]] == ["test:lora@2"]
    assert search(catalog, search="nothing like it") == {"taskType": "modelSearch", "taskUUID": UUID,
                                                          "results": [], "totalResults": 0}


@pytest.mark.parametrize("fields, code", [({"limit": 0}, "invalidLimit"), ({"limit": "5"}, "invalidLimit"),
                                          ({"offset": -1}, "invalidOffset"), ({"search": 5}, "invalidSearch"),
                                          ({"tags": "x"}, "invalidTags"), ({"sort": "random"}, "invalidSort"),
                                          ({"limit": True}, "invalidLimit")])
def test_model_search_refuses_bad_fields(catalog, fields, code):
    item, errors = model_search({"taskType": "modelSearch", "taskUUID": UUID, **fields}, catalog)
    assert item is None and [e.code for e in errors] == [code] and errors[0].task_uuid == UUID


def png(w=8, h=8):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_an_uploaded_image_is_stored_as_sent_and_found_by_its_uuid(tmp_path):
    store = ImageStore(tmp_path / "images")
    data = png()
    for value in (base64.b64encode(data).decode(), "data:image/png;base64," + base64.b64encode(data).decode()):
        item, errors = upload_image({"taskType": "imageUpload", "taskUUID": UUID, "image": value}, store,
                                    "http://127.0.0.1:8188", Limits())
        assert not errors
        assert item["imageURL"] == f"http://127.0.0.1:8188/imageinference/v1/image/{item['imageUUID']}.png"
        assert store.find(item["imageUUID"]).read_bytes() == data
    again, _ = upload_image({"taskType": "imageUpload", "taskUUID": UUID, "image": item["imageUUID"]}, store,
                            "http://h", Limits())
    assert again["imageUUID"] != item["imageUUID"] and store.find(again["imageUUID"]).read_bytes() == data


@pytest.mark.parametrize("value, limits, code", [
    (None, Limits(), "missingImage"), (7, Limits(), "invalidImage"), ("not an image", Limits(), "invalidImage"),
    (base64.b64encode(png(64, 64)).decode(), Limits(max_pixels=100), "invalidImage"),
    (base64.b64encode(png()).decode(), Limits(max_bytes=10), "invalidImage"),
    ("0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e30", Limits(), "unknownImage"),
    ("http://127.0.0.1:1/x.png", Limits(), "invalidImage"),  # loopback is refused before any connection
])
def test_bad_uploads_are_documented_errors(tmp_path, value, limits, code):
    raw = {"taskType": "imageUpload", "taskUUID": UUID}
    if value is not None:
        raw["image"] = value
    item, errors = upload_image(raw, ImageStore(tmp_path), "http://h", limits)
    assert item is None and [e.code for e in errors] == [code]
    assert errors[0].task_uuid == UUID and errors[0].task_type == "imageUpload"


def test_only_uuid_file_names_are_served():
    assert stored_filename("0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f.png") == ("0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f",
                                                                          "png")
    for bad in ("../x.png", "expiry.json", "0b9a4b8e-7e53-4c1c-9b0e-3f2f1c1d2e3f.exe", "x.png", ""):
        assert stored_filename(bad) is None
