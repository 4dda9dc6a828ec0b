"""The Watermark node against real ComfyUI tensors and the real Output node: marks only where the mark is."""

import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from imageinference.contract.errors import ContractError

UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"
DEFAULTS = dict(text="", image="", displayPosition="bottom-right", tiled=False, opacity=0.6, fontColor="",
                bgColor="")


@pytest.fixture(scope="module")
def nodes_wm(comfy):
    from imageinference.comfyui.nodes import output, watermark

    return watermark.WatermarkNode, output.ImageInferenceOutput


def images(channels=3, n=2, h=192, w=256):
    g = torch.Generator().manual_seed(7)
    return torch.rand((n, h, w, channels), generator=g)


def run(node, imgs, **kw):
    return node.execute(imgs, **{**DEFAULTS, **kw}).result


def test_pixels_change_only_where_the_mark_is(nodes_wm):
    from imageinference.engines.watermark.render import render_layer
    from imageinference.engines.watermark.spec import parse_watermark

    node, _output = nodes_wm
    imgs = images()
    out, applied = run(node, imgs, text="Local render", displayPosition="top-center", opacity=0.9, bgColor="#000000")
    assert out.shape == imgs.shape and out.dtype == imgs.dtype
    layer = render_layer(256, 192, parse_watermark(json.loads(applied)))
    covered = torch.from_numpy(layer.covered)
    assert torch.equal(out[:, ~covered], imgs[:, ~covered])  # bit for bit
    assert (out[:, covered] != imgs[:, covered]).any(dim=-1).float().mean() > 0.99
    ys, xs = torch.nonzero(covered, as_tuple=True)
    assert ys.max() < 192 // 3 and abs((xs.min() + xs.max()) / 2 - 128) <= 2  # top, centred
    assert json.loads(applied) == {"text": "Local render", "displayPosition": "top-center", "tiled": False,
                                   "opacity": 0.9, "bgColor": "#000000"}


def test_rgba_images_stay_rgba_and_keep_alpha_outside_the_mark(nodes_wm):
    node, _output = nodes_wm
    imgs = images(4, n=1)
    out, _ = run(node, imgs, text="alpha", tiled=True)
    assert out.shape == imgs.shape
    changed = (out != imgs).any(dim=-1)
    assert changed.any() and not changed.all()
    assert torch.equal(out[~changed], imgs[~changed])


def png_uri(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_an_image_watermark_from_an_image_string(nodes_wm):
    node, _output = nodes_wm
    logo = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse([0, 0, 29, 29], fill=(255, 0, 0, 255))
    imgs = torch.zeros(1, 192, 256, 3)
    out, applied = run(node, imgs, image=png_uri(logo), displayPosition="center-left", opacity=1.0)
    red = (out[0, ..., 0] > 0.99) & (out[0, ..., 1] < 0.01)
    ys, xs = torch.nonzero(red, as_tuple=True)
    assert red.sum() > 300 and xs.max() < 256 // 3 and abs((ys.min() + ys.max()) / 2 - 96) <= 2
    assert json.loads(applied)["image"] == png_uri(logo)


@pytest.mark.parametrize(("kw", "code", "parameter"), [
    ({"text": "x"}, "invalidText", "watermark.text"),
    ({}, "invalidWatermark", "watermark"),
    ({"text": "ok", "image": png_uri(Image.new("RGB", (4, 4)))}, "invalidWatermark", "watermark"),
    ({"text": "ok", "fontColor": "white"}, "invalidFontColor", "watermark.fontColor"),
    ({"text": "ok", "bgColor": "#1234567"}, "invalidBgColor", "watermark.bgColor"),
    ({"text": "ok", "opacity": 0.0}, "invalidOpacity", "watermark.opacity"),
    ({"image": "data:image/png;base64,AAAA"}, "invalidImage", "watermark.image"),
    ({"image": "59a2edc2-45e6-429f-be5f-7ded59b92046"}, "unknownImage", "watermark.image"),
])
def test_bad_widgets_are_contract_errors_naming_the_parameter(nodes_wm, kw, code, parameter):
    node, _output = nodes_wm
    with pytest.raises(ContractError) as info:
        run(node, images(n=1), **kw)
    assert (info.value.codes[0], info.value.parameters[0]) == (code, parameter)


def files(output_node, imgs, **kw):
    text = output_node.execute(imgs, "PNG", 95, "base64Data", 0, False, seeds="[1, 2]", taskUUID=UUID, request="",
                               **kw).result[0]
    data = json.loads(text)["data"]
    return data, [base64.b64decode(item["imageBase64Data"]) for item in data]


def test_saved_files_differ_from_unmarked_ones_only_inside_the_mark(nodes_wm):
    from imageinference.engines.watermark.render import render_layer
    from imageinference.engines.watermark.spec import parse_watermark

    node, output_node = nodes_wm
    imgs = images()
    marked, applied = run(node, imgs, text="Preview", displayPosition="bottom-left", opacity=0.7)
    _d, plain_files = files(output_node, imgs)
    _d, marked_files = files(output_node, marked)
    covered = render_layer(256, 192, parse_watermark(json.loads(applied))).covered
    for a, b in zip(plain_files, marked_files, strict=True):
        pa, pb = np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b)))
        differs = (pa != pb).any(axis=-1)
        assert differs.any() and not (differs & ~covered).any()


def test_the_output_node_records_the_watermark(nodes_wm):
    from imageinference.engines.imageio.encode import read_metadata

    node, output_node = nodes_wm
    assert "watermark" in {i.id for i in output_node.define_schema().inputs}  # compiled graphs link [watermark, 1]
    marked, applied = run(node, images(), text="Preview")
    data, blobs = files(output_node, marked, watermark=applied)
    assert all(item["watermarked"] is True for item in data)
    assert all(read_metadata(b)["watermark"] == json.loads(applied) for b in blobs)
    plain, plain_blobs = files(output_node, images())
    assert all("watermarked" not in item for item in plain)
    assert all("watermark" not in read_metadata(b) for b in plain_blobs)
