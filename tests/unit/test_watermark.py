"""The watermark engine (Pillow + numpy): where the mark goes, what it changes, colours, opacity, tiling, errors."""

import base64
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from imageinference.contract.errors import ContractError
from imageinference.contract.request import WATERMARK_POSITIONS
from imageinference.contract.validate import validate_task
from imageinference.engines.watermark.render import (
    apply_watermark,
    composite,
    mark_tile,
    position,
    render_layer,
)
from imageinference.engines.watermark.spec import WatermarkSpec, parse_watermark

W, H = 320, 224
UUID = "0b5e4c1a-2d3f-4a6b-8c9d-0e1f2a3b4c5d"


def noise(channels=3, seed=0, shape=(H, W)):
    return np.random.default_rng(seed).random((*shape, channels), dtype=np.float32)


def spec(**kw):
    return parse_watermark({"text": "Made locally", **kw})


def test_pixels_outside_the_mark_are_unchanged_bit_for_bit_and_inside_changed():
    img = noise()
    out = apply_watermark(img, spec(opacity=1.0, bgColor="#102030"))
    layer = render_layer(W, H, spec(opacity=1.0, bgColor="#102030"))
    changed = np.any(out != img, axis=-1)
    assert changed.any()
    assert np.array_equal(out[~layer.covered], img[~layer.covered])
    assert not np.any(changed & ~layer.covered)
    x0, y0, x1, y1 = layer.box
    box = np.zeros((H, W), bool)
    box[y0:y1, x0:x1] = True
    assert np.array_equal(layer.covered, box)  # the background box covers exactly its rectangle
    assert changed[box].mean() > 0.99


@pytest.mark.parametrize("where", WATERMARK_POSITIONS)
def test_the_mark_is_where_the_position_says(where):
    layer = render_layer(W, H, spec(displayPosition=where))
    ys, xs = np.nonzero(layer.covered)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    x0, y0, x1, y1 = layer.box
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1
    vertical, horizontal = where.split("-")
    margin = round(min(W, H) * 0.02)
    expect_x = {"left": x0 == margin, "center": abs((x0 + x1) / 2 - W / 2) <= 1, "right": x1 == W - margin}
    expect_y = {"top": y0 == margin, "center": abs((y0 + y1) / 2 - H / 2) <= 1, "bottom": y1 == H - margin}
    assert expect_x[horizontal] and expect_y[vertical], (where, layer.box)
    third_x = {"left": cx < W / 3, "center": W / 3 < cx < 2 * W / 3, "right": cx > 2 * W / 3}
    third_y = {"top": cy < H / 3, "center": H / 3 < cy < 2 * H / 3, "bottom": cy > 2 * H / 3}
    assert third_x[horizontal] and third_y[vertical]


def test_colours_and_opacity_follow_the_compositing_formula():
    w, h = 1024, 768  # glyph strokes several pixels wide
    img = np.full((h, w, 3), 0.25, np.float32)
    s = spec(opacity=0.5, fontColor="#FF0000", bgColor="#0000FF")
    layer = render_layer(w, h, s)
    out = apply_watermark(img, s)
    # where the layer is opaque box/text, the result is 50% of the layer colour over 0.25 grey
    expected = img * (1 - layer.alpha[..., None]) + layer.rgb * layer.alpha[..., None]
    assert np.allclose(out, expected, atol=1e-6)
    solid = layer.alpha == np.float32(0.5)
    colours = {tuple(np.round(c, 3)) for c in out[solid].reshape(-1, 3)}
    assert (0.625, 0.125, 0.125) in colours  # pure text: 0.5 * red + 0.5 * grey
    assert (0.125, 0.125, 0.625) in colours  # pure box: 0.5 * blue + 0.5 * grey


def test_font_colour_defaults_to_white_and_transparent_background_draws_no_box():
    w, h = 1024, 768
    img = np.zeros((h, w, 3), np.float32)
    plain = render_layer(w, h, spec(opacity=1.0))
    clear = render_layer(w, h, spec(opacity=1.0, bgColor="transparent"))
    assert np.array_equal(plain.alpha, clear.alpha)
    full = plain.alpha == 1.0
    assert full.any() and np.all(apply_watermark(img, spec(opacity=1.0))[full] == 1.0)
    x0, y0, x1, y1 = plain.box
    assert plain.covered[y0:y1, x0:x1].mean() < 0.5  # only the glyphs, not the box


def test_opacity_scales_alpha():
    a = render_layer(W, H, spec(opacity=1.0)).alpha
    b = render_layer(W, H, spec(opacity=0.3)).alpha
    assert np.allclose(b, a * np.float32(0.3), atol=1e-7) and np.array_equal(a > 0, b > 0)


def test_rgba_images_get_the_mark_over_their_alpha():
    img = noise(4)
    img[..., 3] = 0.0  # fully transparent background (a LayerDiffuse result)
    img[:40, :40, 3] = 1.0
    s = spec(opacity=0.8, displayPosition="bottom-left")
    layer = render_layer(W, H, s)
    out = apply_watermark(img, s)
    assert out.shape == img.shape
    assert np.array_equal(out[~layer.covered], img[~layer.covered])
    cov = layer.covered
    assert np.allclose(out[cov, 3], layer.alpha[cov], atol=1e-6)  # over a transparent pixel: the mark's alpha
    assert np.allclose(out[cov, :3], layer.rgb[cov], atol=1e-5)  # ... and the mark's colour


def test_composite_over_semi_transparent_pixels_is_porter_duff_over():
    img = np.array([[[0.2, 0.4, 0.6, 0.5]]], np.float32)
    from imageinference.engines.watermark.render import MarkLayer

    layer = MarkLayer(np.array([[[1.0, 0.0, 0.0]]], np.float32), np.array([[0.25]], np.float32), (0, 0, 1, 1))
    out = composite(img, layer)[0, 0]
    a = 0.25 + 0.5 * 0.75
    assert np.allclose(out, [(1.0 * 0.25 + 0.2 * 0.5 * 0.75) / a, (0.4 * 0.5 * 0.75) / a, (0.6 * 0.5 * 0.75) / a, a])


def test_a_batch_gets_the_same_mark_on_every_image():
    batch = np.stack([noise(seed=1), noise(seed=2)])
    out = apply_watermark(batch, spec())
    layer = render_layer(W, H, spec())
    for i in range(2):
        assert np.array_equal(out[i], composite(batch[i], layer))


def test_tiled_marks_cover_the_whole_image_along_a_rising_diagonal():
    s = spec(text="-" * 24, tiled=True, opacity=1.0)
    layer = render_layer(W, H, s)
    assert layer.box is None
    cov = layer.covered
    for part in (cov[: H // 2, : W // 2], cov[: H // 2, W // 2:], cov[H // 2:, : W // 2], cov[H // 2:, W // 2:]):
        assert part.mean() > 0.01  # every quadrant has marks
    # the dashes are bars; their gradients point across them. Bars running from bottom-left up to top-right
    # (-45 degrees with y down) have gradients along (1, 1): sum(gx * gy) > 0 and |gx| ~ |gy|.
    gy, gx = np.gradient(layer.alpha.astype(np.float64))
    jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
    angle = np.degrees(0.5 * np.arctan2(2 * jxy, jxx - jyy))  # gradient direction
    assert 35 < angle < 55, angle
    img = noise()
    out = apply_watermark(img, s)
    assert np.array_equal(out[~cov], img[~cov])


def test_long_text_is_shrunk_to_fit_the_image_then_clipped():
    s = spec(text="W" * 32)
    normal = mark_tile(1024, 1024, s)
    tile = mark_tile(512, 512, s)
    assert tile.width <= 512 - 2 * 10 and tile.height < normal.height  # shrunk to fit inside the margins
    layer = render_layer(96, 96, s)  # too small even at the smallest font: the mark is clipped, not an error
    assert layer.box[0] == 0 and layer.box[2] == 96 - 2 and layer.covered.any()


def png_uri(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_image_watermark_keeps_its_transparency_and_is_scaled_to_the_image():
    logo = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle([10, 5, 29, 14], fill=(0, 255, 0, 255))
    s = parse_watermark({"image": png_uri(logo), "displayPosition": "top-left", "opacity": 1.0})
    layer = render_layer(W, H, s, logo)
    ys, xs = np.nonzero(layer.alpha > 0.99)
    long_side = round(min(W, H) * 0.2)
    scale = long_side / 40
    assert abs((xs.max() - xs.min() + 1) - 20 * scale) <= 2 and abs((ys.max() - ys.min() + 1) - 10 * scale) <= 2
    assert np.allclose(layer.rgb[layer.alpha > 0.99], [0, 1, 0])
    img = noise()
    out = apply_watermark(img, s, logo)
    assert np.array_equal(out[~layer.covered], img[~layer.covered])
    assert layer.covered.sum() < (xs.max() - xs.min() + 5) * (ys.max() - ys.min() + 5)  # not the logo's clear part
    with pytest.raises(ValueError):
        render_layer(W, H, s)  # the decoded image is needed


def test_positions_of_a_mark_larger_than_the_image_are_clipped():
    x, y = position(64, 64, 100, 30, "bottom-right")
    assert x < 0
    layer = render_layer(64, 64, parse_watermark({"image": png_uri(Image.new("RGB", (4, 4))),
                                                  "displayPosition": "center-center"}), Image.new("RGB", (4, 4)))
    assert layer.box[0] >= 0 and layer.box[2] <= 64


@pytest.mark.parametrize(("obj", "code", "parameter"), [
    ({"text": "x"}, "invalidText", "watermark.text"),
    ({"text": "x" * 33}, "invalidText", "watermark.text"),
    ({"text": "ok", "image": "59a2edc2-45e6-429f-be5f-7ded59b92046"}, "invalidWatermark", "watermark"),
    ({}, "invalidWatermark", "watermark"),
    ({"text": "ok", "displayPosition": "middle"}, "invalidDisplayPosition", "watermark.displayPosition"),
    ({"text": "ok", "opacity": 0.05}, "invalidOpacity", "watermark.opacity"),
    ({"text": "ok", "opacity": 1.5}, "invalidOpacity", "watermark.opacity"),
    ({"text": "ok", "fontColor": "red"}, "invalidFontColor", "watermark.fontColor"),
    ({"text": "ok", "bgColor": "#12345"}, "invalidBgColor", "watermark.bgColor"),
    ({"text": "ok", "tiled": "yes"}, "invalidTiled", "watermark.tiled"),
    ({"text": "ok", "image": "not an image"}, "invalidImage", "watermark.image"),
    ({"text": "ok", "size": 3}, "unknownParameter", "watermark.size"),
])
def test_bad_watermarks_are_contract_errors_naming_the_parameter(obj, code, parameter):
    with pytest.raises(ContractError) as info:
        parse_watermark(obj)
    assert (info.value.codes[0], info.value.parameters[0]) == (code, parameter)
    # the request validator agrees (same model), under the legacy container too
    req = {"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1", "positivePrompt": "a cat",
           "watermark": obj}
    with pytest.raises(ContractError) as info:
        validate_task(req)
    assert parameter in info.value.parameters
    legacy = dict(req, advancedFeatures={"watermark": req.pop("watermark")})
    with pytest.raises(ContractError) as info:
        validate_task(legacy)
    assert "advancedFeatures." + parameter in info.value.parameters


def test_spec_round_trips_to_the_canonical_request_object():
    obj = {"text": "hello", "displayPosition": "top-center", "tiled": True, "opacity": 0.35, "fontColor": "#00ff00",
           "bgColor": "transparent"}
    s = parse_watermark(obj)
    assert s.to_json() == obj
    assert isinstance(s, WatermarkSpec) and s.font_rgb == (0, 255, 0) and s.bg_rgb is None
    canonical = validate_task({"taskType": "imageInference", "taskUUID": UUID, "model": "runware:5@1",
                               "positivePrompt": "a cat", "watermark": {"text": "hello"}}).to_json()["watermark"]
    assert parse_watermark(canonical).to_json() == canonical


def test_a_tiled_image_mark_repeats_and_leaves_the_rest_untouched():
    logo = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle([4, 4, 11, 11], fill=(255, 255, 0, 255))
    s = parse_watermark({"image": png_uri(logo), "tiled": True, "opacity": 1.0})
    layer = render_layer(W, H, s, logo)
    img = noise()
    out = apply_watermark(img, s, logo)
    assert np.array_equal(out[~layer.covered], img[~layer.covered])
    solid = layer.alpha > 0.5
    quadrants = (solid[: H // 2, : W // 2], solid[: H // 2, W // 2:], solid[H // 2:, : W // 2], solid[H // 2:, W // 2:])
    assert all(q.any() for q in quadrants)  # copies all over the image
    single = render_layer(W, H, parse_watermark({"image": png_uri(logo), "opacity": 1.0}), logo).alpha > 0.5
    assert solid.sum() > 6 * single.sum() * 0.8  # several copies of the same mark (rotation blurs the edges)
