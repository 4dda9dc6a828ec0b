"""Requests of the size users send, on a real server, in every output format and output type: 1024 px photos as
base64, data URI, URL and uploaded UUID for the seed, mask, ControlNet guide, IP-Adapter guide and PuLID face;
prompts of the documented maximum length; numberResults at its maximum. The models are tiny; the inputs are not.

Each response is checked against what was sent: the images decode in the asked format at the asked size, the
seeds are the request's, and each saved file carries the request with its input images named by the UUID of a
stored copy whose bytes are the bytes sent.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from imageinference.engines.imageio.encode import read_metadata
from imageinference.engines.imageio.metadata import content_uuid
from imageinference.server.client import EndpointClient, image_task, new_uuid
from imageinference.server.localrun import endpoint_server
from imageinference.testing.photos import as_base64, as_data_uri, encoded, long_prompt, mask, photo

SD15, CN, IPA = "test:sd15@1", "test:cn@1", "test:ipadapter-sd15@1"
SIZE = 128
PIL_FORMAT = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


class ImageHost:
    """A loopback HTTP server standing in for the public image hosts users link to."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        files = self.files

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                mime, body = files.get(self.path, ("text/plain", b""))
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", mime)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def put(self, name: str, data: bytes, mime: str) -> str:
        self.files[f"/{name}"] = (mime, data)
        return f"http://127.0.0.1:{self.httpd.server_port}/{name}"


@pytest.fixture(scope="module")
def host():
    served = ImageHost()
    yield served
    served.httpd.shutdown()


def _link_tree(root, models_dir, folders):
    for folder in folders:
        for src in (root / folder).rglob("*"):
            if src.is_file():
                dst = models_dir / src.relative_to(root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    dst.symlink_to(src)


@pytest.fixture(scope="module")
def server(tiny_models_root, tmp_path_factory, test_catalog):
    """A server of its own, allowed to fetch from loopback (the image host), with the tiny IP-Adapter and PuLID
    files and a catalog that names them beside the session's."""
    from imageinference.testing import tiny_ipadapter, tiny_pulid

    ipa_root = tiny_ipadapter.ensure_tiny_ipadapters(["clip_vision_vitl", "ipadapter_sd15"])
    pulid_root = tiny_pulid.ensure_tiny_pulid()
    base = tmp_path_factory.mktemp("realistic")
    catalog = json.loads(test_catalog.read_text())
    catalog["models"].update(tiny_ipadapter.catalog_entries())
    catalog["models"].update(tiny_pulid.catalog_entries())
    # a request's `pulid` names no model: the default PuLID-FLUX AIR, here the tiny one with its tiny encoders
    catalog["models"]["pulid:flux@v0.9.1"] = catalog["models"]["test:pulid@1"]
    (base / "catalog.json").write_text(json.dumps(catalog))
    env = {"IMAGEINFERENCE_ALLOW_PRIVATE_URLS": "1", "IMAGEINFERENCE_CATALOG": str(base / "catalog.json")}
    with endpoint_server(base / "comfy", tiny_models_root, env) as srv:
        _link_tree(ipa_root, srv.models_dir, ("ipadapter", "clip_vision"))
        _link_tree(pulid_root, srv.models_dir, ("pulid", "insightface", "clip_vision"))
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return EndpointClient(server.url, timeout_s=900)


@pytest.fixture(scope="module")
def photos():
    return {"seed": photo(1024, seed=11), "guide": photo(1024, seed=12), "face": photo(1024, seed=13, faces=1),
            "mask": mask(1024, seed=14)}


def sent_bytes(value: str, host: ImageHost) -> bytes:
    if value.startswith("http"):
        return host.files["/" + value.rsplit("/", 1)[1]][1]
    return base64.b64decode(value.split(",", 1)[1] if value.startswith("data:") else value)


def image_of(item: dict, client: EndpointClient) -> bytes:
    if "imageURL" in item:
        code, data = client.get(item["imageURL"])
        assert code == 200
        return data
    if "imageDataURI" in item:
        head, body = item["imageDataURI"].split(",", 1)
        assert head.startswith("data:image/")
        return base64.b64decode(body)
    return base64.b64decode(item["imageBase64Data"])


def check(body: dict, task: dict, client: EndpointClient, server, inline: dict[str, str], host: ImageHost) -> None:
    """Every result decodes in the asked format and size; each file names its inline inputs by the UUID of a
    stored copy holding the very bytes sent."""
    assert "errors" not in body, body["errors"]
    items = body["data"]
    assert len(items) == task.get("numberResults", 1)
    assert [i["seed"] for i in items] == [task["seed"] + k for k in range(len(items))]
    store = server.base_dir / "output" / "imageinference"
    for item in items:
        data = image_of(item, client)
        img = Image.open(io.BytesIO(data))
        assert (img.format, img.size) == (PIL_FORMAT[task["outputFormat"]], (task["width"], task["height"]))
        saved = next(store.glob(f"{item['imageUUID']}.*")).read_bytes()
        assert saved == data
        embedded = read_metadata(saved)["request"]
        for path, value in inline.items():
            got = embedded
            for key in path.split("."):
                got = got[int(key)] if isinstance(got, list) else got[key]
            if value.startswith("http") or len(value) == 36:  # URLs and UUIDs are kept as sent
                assert got == value
                continue
            copy = next(store.glob(f"{got}.*"))
            assert got == content_uuid(sent_bytes(value, host)) and copy.read_bytes() == sent_bytes(value, host)


def run(client: EndpointClient, task: dict) -> dict:
    status, body = client.post([task])
    assert status == 200, body
    return body


def sd15(fmt: str, out: str, seed: int, **fields) -> dict:
    return image_task(SD15, width=SIZE, height=SIZE, steps=2, seed=seed, outputFormat=fmt, outputType=out,
                      positivePrompt=long_prompt(3000, seed), negativePrompt=long_prompt(3000, seed + 1), **fields)


def test_jpg_url_img2img_with_a_base64_photo(client, server, host, photos):
    """The default format with an ordinary photo: before the fix, `EXIF data is too long` after sampling."""
    seed_image = as_base64(photos["seed"], "JPEG")
    task = sd15("JPG", "URL", 100, inputs={"seedImage": seed_image}, strength=0.6)
    check(run(client, task), task, client, server, {"inputs.seedImage": seed_image}, host)


def test_jpg_data_uri_inpainting_with_data_uri_photo_and_mask(client, server, host, photos):
    seed_image, mask_image = as_data_uri(photos["seed"], "PNG"), as_data_uri(photos["mask"], "PNG")
    task = sd15("JPG", "dataURI", 110, inputs={"seedImage": seed_image, "maskImage": mask_image}, maskMargin=32)
    check(run(client, task), task, client, server, {"inputs.seedImage": seed_image, "inputs.maskImage": mask_image},
          host)


def test_jpg_base64_controlnet_with_a_guide_by_url(client, server, host, photos):
    guide = host.put("guide.jpg", encoded(photos["guide"], "JPEG"), "image/jpeg")
    task = sd15("JPG", "base64Data", 120, controlNet=[{"model": CN, "guideImage": guide, "weight": 0.8}])
    check(run(client, task), task, client, server, {"controlNet.0.guideImage": guide}, host)


def test_png_url_inpainting_with_an_uploaded_seed_and_a_base64_mask(client, server, host, photos):
    status, body = client.post([{"taskType": "imageUpload", "taskUUID": new_uuid(),
                                 "image": as_data_uri(photos["seed"], "JPEG")}])
    assert status == 200, body
    uploaded = body["data"][0]["imageUUID"]
    mask_image = as_base64(photos["mask"], "PNG")
    task = sd15("PNG", "URL", 130, inputs={"seedImage": uploaded, "maskImage": mask_image})
    check(run(client, task), task, client, server, {"inputs.seedImage": uploaded, "inputs.maskImage": mask_image},
          host)


def test_png_data_uri_ip_adapter_with_a_base64_guide(client, server, host, photos):
    guide = as_base64(photos["guide"], "JPEG")
    task = sd15("PNG", "dataURI", 140, ipAdapters=[{"model": IPA, "guideImage": guide, "weight": 0.7}])
    check(run(client, task), task, client, server, {"ipAdapters.0.guideImages.0": guide}, host)


def test_png_base64_the_most_results_with_the_longest_prompts(client, server, host, photos):
    seed_image = as_base64(photos["seed"], "JPEG")
    task = sd15("PNG", "base64Data", 150, numberResults=20, inputs={"seedImage": seed_image}, strength=0.5)
    assert len(task["positivePrompt"]) == len(task["negativePrompt"]) == 3000
    check(run(client, task), task, client, server, {"inputs.seedImage": seed_image}, host)


def test_webp_url_pulid_with_a_base64_face(client, server, host, photos):
    face = as_base64(photos["face"], "JPEG")
    task = image_task("test:flux-full@1", width=SIZE, height=SIZE, steps=2, seed=160, outputFormat="WEBP",
                      outputType="URL", positivePrompt=long_prompt(3000, 160),
                      pulid={"images": [face], "idWeight": 1.0})
    check(run(client, task), task, client, server, {"pulid.images.0": face}, host)


def test_webp_data_uri_controlnet_inpainting_all_as_data_uris(client, server, host, photos):
    seed_image, mask_image = as_data_uri(photos["seed"], "WEBP"), as_data_uri(photos["mask"], "PNG")
    guide = as_data_uri(photos["guide"], "JPEG")
    task = sd15("WEBP", "dataURI", 170, inputs={"seedImage": seed_image, "maskImage": mask_image},
                controlNet=[{"model": CN, "guideImage": guide}])
    check(run(client, task), task, client, server, {"inputs.seedImage": seed_image, "inputs.maskImage": mask_image,
                                                    "controlNet.0.guideImage": guide}, host)


def test_webp_base64_img2img_with_a_png_by_url(client, server, host, photos):
    seed_url = host.put("seed.png", encoded(photos["seed"], "PNG"), "image/png")
    task = sd15("WEBP", "base64Data", 180, inputs={"seedImage": seed_url}, strength=0.7)
    check(run(client, task), task, client, server, {"inputs.seedImage": seed_url}, host)
