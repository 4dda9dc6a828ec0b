"""Image strings in, image files out: strict decoding, safe fetching, the UUID store, metadata, delivery."""

import base64
import http.server
import io
import json
import threading
import time
import uuid

import pytest
from PIL import Image

from imageinference.contract.errors import ContractError
from imageinference.engines.imageio.decode import decode_image_string
from imageinference.engines.imageio.deliver import deliver
from imageinference.engines.imageio.encode import encode_image, read_metadata
from imageinference.engines.imageio.fetch import FetchError, fetch_bytes
from imageinference.engines.imageio.limits import Limits
from imageinference.engines.imageio.store import ImageStore
from imageinference.engines.samplers.seeds import SEED_MAX, result_seeds


def png_bytes(w=16, h=8, color=(10, 200, 30)):
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "PNG")
    return buf.getvalue()


B64 = base64.b64encode(png_bytes()).decode()


def test_decodes_base64_and_data_uri():
    assert decode_image_string(B64, "inputs.seedImage").size == (16, 8)
    assert decode_image_string(f"data:image/png;base64,{B64}", "inputs.seedImage").getpixel((0, 0)) == (10, 200, 30)


@pytest.mark.parametrize(("value", "limits", "code"), [
    ("not an image", Limits(), "invalidSeedImage"),
    (base64.b64encode(b"GIF89a" + b"\0" * 40).decode(), Limits(), "invalidSeedImage"),
    (B64, Limits(max_bytes=20), "invalidSeedImage"),
    (B64, Limits(max_pixels=100), "invalidSeedImage"),
    (base64.b64encode(png_bytes()[:40]).decode(), Limits(), "invalidSeedImage"),
    ("6a1f0c3e-2b7d-4c59-9e84-0d3b5f1a7c26", Limits(), "unknownImage"),
])
def test_bad_images_are_contract_errors(value, limits, code, tmp_path):
    with pytest.raises(ContractError) as info:
        decode_image_string(value, "inputs.seedImage", ImageStore(tmp_path), limits)
    assert info.value.codes == [code]
    assert info.value.parameters == ["inputs.seedImage"]


@pytest.mark.parametrize("url", ["http://100.64.0.1/latest/meta-data", "http://[2002:7f00:1::1]/a.png",
                                 "http://[64:ff9b::a9fe:a9fe]/a", "http://192.0.2.10/a.png",
                                 "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/a", "http://198.18.0.1/a.png"])
def test_only_globally_routable_addresses_are_fetched(url):
    """Shared space (100.64/10, where cloud metadata can live), 6to4 / NAT64 / Teredo forms of inner addresses,
    documentation and benchmarking ranges: none is globally routable."""
    with pytest.raises(FetchError, match="refusing"):
        fetch_bytes(url, Limits())


def test_public_address_rule_looks_inside_ipv6_forms():
    from imageinference.engines.imageio.fetch import is_public_address

    assert is_public_address("8.8.8.8") and is_public_address("2606:4700:4700::1111")
    assert is_public_address("2002:808:808::1")  # 6to4 of 8.8.8.8
    assert not is_public_address("2002:a00:1::1")  # 6to4 of 10.0.0.1
    assert not is_public_address("::ffff:169.254.169.254")


@pytest.mark.parametrize("url", ["http://127.0.0.1/a.png", "http://localhost:9/a.png", "http://10.0.0.1/a.png",
                                 "http://169.254.169.254/latest/meta-data", "http://[::1]/a.png",
                                 "http://192.168.1.1/a.png", "http://0.0.0.0/a.png", "http://[::ffff:127.0.0.1]/a"])
def test_private_addresses_are_refused_before_connecting(url):
    with pytest.raises(FetchError, match="refusing"):
        fetch_bytes(url, Limits())


def test_non_http_schemes_are_refused():
    for url in ("file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"):
        with pytest.raises(FetchError):
            fetch_bytes(url, Limits())


@pytest.fixture
def local_server():
    body = png_bytes()
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path == "/drip":  # headers at once, then one byte every 0.2 s: each read is quick
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                for byte in body:
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return
                    time.sleep(0.2)
                return
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/a.png")
                self.end_headers()
                return
            if self.path == "/loop":
                self.send_response(302)
                self.send_header("Location", "/loop")
                self.end_headers()
                return
            self.send_response(200 if self.path != "/missing" else 404)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(body * (100 if self.path == "/big" else 1))

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", body, hits
    srv.shutdown()


def test_fetch_from_loopback_only_when_allowed(local_server):
    base, body, hits = local_server
    with pytest.raises(FetchError):
        fetch_bytes(f"{base}/a.png", Limits())
    assert hits == []  # refused before any connection
    allowed = Limits(allow_private_urls=True)
    assert fetch_bytes(f"{base}/a.png", allowed) == body
    assert fetch_bytes(f"{base}/redirect", allowed) == body
    with pytest.raises(FetchError, match="redirects"):
        fetch_bytes(f"{base}/loop", allowed)
    with pytest.raises(FetchError, match="404"):
        fetch_bytes(f"{base}/missing", allowed)
    with pytest.raises(FetchError, match="limit"):
        fetch_bytes(f"{base}/big", Limits(allow_private_urls=True, max_bytes=len(body) * 10))
    img = decode_image_string(f"{base}/a.png", "controlNet.0.guideImage", None, allowed)
    assert img.size == (16, 8)


def test_a_slow_drip_cannot_outlast_the_fetch_deadline(local_server):
    base, body, _hits = local_server
    limits = Limits(allow_private_urls=True, fetch_timeout_s=5, fetch_deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(FetchError, match="longer than 1 s"):
        fetch_bytes(f"{base}/drip", limits)
    assert time.monotonic() - started < 3  # the body would take len(body) * 0.2 s
    assert len(body) * 0.2 > 10


def test_decoding_does_not_depend_on_image_open(monkeypatch):
    """ultralytics replaces PIL.Image.open with a version that imports an optional HEIF plugin on failure;
    decoding must keep its own strict formats and errors whatever Image.open has become."""
    def broken_open(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'pi_heif'")

    monkeypatch.setattr(Image, "open", broken_open)
    assert decode_image_string(B64, "inputs.seedImage").size == (16, 8)
    with pytest.raises(ContractError) as info:
        decode_image_string(base64.b64encode(png_bytes()[:40]).decode(), "inputs.seedImage")
    assert info.value.codes == ["invalidSeedImage"]


@pytest.mark.parametrize("fmt", ["PNG", "JPG", "WEBP"])
def test_metadata_round_trip(fmt):
    request = {"taskUUID": str(uuid.uuid4()), "positivePrompt": "a café (at dusk:1.2)", "seed": 2**40}
    data = encode_image(Image.new("RGBA", (32, 32), (1, 2, 3, 128)), fmt, 80, request)
    assert read_metadata(data) == request
    assert Image.open(io.BytesIO(data)).format == {"JPG": "JPEG"}.get(fmt, fmt)


@pytest.mark.parametrize("output_type", ["URL", "dataURI", "base64Data"])
def test_deliver_builds_documented_results(output_type, tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEINFERENCE_COST_PER_IMAGE", "0.002")
    store = ImageStore(tmp_path)
    task = str(uuid.uuid4())
    imgs = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(3)]
    results = deliver(imgs, [5, 6, 7], task, store, "http://127.0.0.1:8188", output_type, "PNG", 90, None, True,
                      {"taskUUID": task}).results
    assert [r.seed for r in results] == [5, 6, 7]
    assert len({r.imageUUID for r in results}) == 3
    for r in results:
        body = r.model_dump(exclude_none=True)
        assert body["cost"] == 0.002 and body["taskUUID"] == task
        stored = store.find(r.imageUUID)
        assert stored is not None and read_metadata(stored.read_bytes())["seed"] == r.seed
        if output_type == "URL":
            assert r.imageURL.startswith("http://127.0.0.1:8188/view?filename=") and "subfolder=imageinference" in r.imageURL
        elif output_type == "dataURI":
            assert r.imageDataURI.startswith("data:image/png;base64,")
        else:
            assert base64.b64decode(r.imageBase64Data) == stored.read_bytes()


def test_result_seeds_rule():
    assert result_seeds(10, 3) == [10, 11, 12]
    assert result_seeds(SEED_MAX, 2) == [SEED_MAX, 0]
    drawn = result_seeds(None, 2)
    assert 0 <= drawn[0] < 2**32 and drawn[1] == drawn[0] + 1


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPG"])
def test_the_graph_is_embedded_as_core_saveimage_does(fmt):
    """PNG text chunks `prompt`/`workflow`; WEBP/JPG EXIF 0x0110 `prompt:<json>` and 0x010F `workflow:<json>`."""
    prompt = {"1": {"class_type": "KSampler", "inputs": {"seed": 5}}}
    workflow = {"nodes": [{"id": 1, "type": "KSampler"}], "links": [], "version": 0.4}
    data = encode_image(Image.new("RGB", (8, 8)), fmt, 90, {"seed": 5}, {"prompt": prompt, "workflow": workflow})
    img = Image.open(io.BytesIO(data))
    if fmt == "PNG":
        assert json.loads(img.info["prompt"]) == prompt and json.loads(img.info["workflow"]) == workflow
    else:
        exif = img.getexif()
        assert exif[0x0110] == "prompt:" + json.dumps(prompt)
        assert exif[0x010F] == "workflow:" + json.dumps(workflow)
    from imageinference.engines.imageio.encode import read_graph

    assert read_graph(data) == {"prompt": prompt, "workflow": workflow}
    assert read_metadata(data) == {"seed": 5}
