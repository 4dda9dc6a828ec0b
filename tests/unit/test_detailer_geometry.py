"""Face-detailer geometry: which detections are detailed (confidence, sizes, maxRegions, order), the square crop
with its context and upscale cap, the working size, the feather kernel."""

import math

from hypothesis import given
from hypothesis import strategies as st

from imageinference.engines.detailer.geometry import (
    Box,
    Detection,
    Rect,
    feather_kernel,
    kept,
    min_crop_side,
    pixel_rect,
    select,
    square_crop,
    working_size,
)


@st.composite
def image_and_rect(draw):
    width, height = draw(st.integers(1, 600)), draw(st.integers(1, 600))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    return width, height, Rect(x0, y0, x1, y1)


@given(image_and_rect(), st.integers(0, 120))
def test_square_crop_holds_everything_that_can_change_and_stays_in_the_image(case, margin):
    width, height, rect = case
    crop = square_crop(rect, margin, width, height)
    assert Rect(0, 0, width, height).contains(crop)
    assert crop.contains(rect.grown(margin, width, height))  # the whole feathered region fits in the crop


@given(image_and_rect(), st.integers(0, 120))
def test_square_crop_is_the_smallest_square_centred_on_the_box_when_the_image_allows(case, margin):
    width, height, rect = case
    crop = square_crop(rect, margin, width, height)
    side = max(rect.width, rect.height) + 2 * margin
    assert crop.width == min(side, width) and crop.height == min(side, height)
    if side <= width and side <= height:
        assert crop.width == crop.height
    for lo, hi, c0, c1, size in ((rect.x0, rect.x1, crop.x0, crop.x1, width), (rect.y0, rect.y1, crop.y0, crop.y1, height)):
        centre = (lo + hi) / 2
        if side <= size and centre - side / 2 >= 0 and centre + side / 2 <= size:  # no need to move it inside
            assert abs((c0 + c1) / 2 - centre) <= 0.5


def test_square_crop_examples():
    # a 20x10 box, margin 5, well inside a 200x200 image: 30x30 square, centred vertically
    assert square_crop(Rect(50, 60, 70, 70), 5, 200, 200) == Rect(45, 50, 75, 80)
    # at the top-left corner: moved inside
    assert square_crop(Rect(0, 0, 10, 10), 5, 200, 200) == Rect(0, 0, 20, 20)
    # a wide image lower than the square: the crop is the image's full height
    assert square_crop(Rect(100, 10, 140, 30), 10, 300, 40) == Rect(90, 0, 150, 40)


def test_pixel_rect_rounds_outwards_and_clamps():
    assert pixel_rect(Box(10.2, 5.9, 20.1, 15.0), 100, 100) == Rect(10, 5, 21, 15)
    assert pixel_rect(Box(-5.0, -3.0, 4.5, 2.0), 100, 100) == Rect(0, 0, 5, 2)
    assert pixel_rect(Box(120.0, 10.0, 130.0, 20.0), 100, 100) is None
    assert pixel_rect(Box(10.0, 10.0, 10.0, 20.0), 100, 100) is None


def test_kept_filters_by_confidence_strictly_and_orders_by_score_then_position():
    d = [Detection(Box(50, 50, 60, 60), 0.5, 0), Detection(Box(10, 80, 20, 90), 0.9, 1),
         Detection(Box(10, 10, 20, 20), 0.9, 2), Detection(Box(0, 0, 5, 5), 0.3, 3),
         Detection(Box(200, 200, 210, 210), 0.99, 4)]  # outside a 100x100 image
    assert [x.index for x in kept(d, 0.4, 100, 100)] == [2, 1, 0]
    assert [x.index for x in kept(d, 0.5, 100, 100)] == [2, 1]  # a score equal to confidence does not count
    assert kept(d, 0.95, 100, 100) == []
    assert [x.index for x in kept(d, 0.0, 100, 100)] == [2, 1, 0, 3]


def box(x, y, side, score, index):
    return Detection(Box(x, y, x + side, y + side), score, index)


def test_select_keeps_the_largest_regions_and_details_them_highest_score_first():
    d = [box(10, 10, 20, 0.95, 0), box(100, 10, 40, 0.6, 1), box(10, 100, 30, 0.7, 2), box(100, 100, 40, 0.8, 3),
         box(200, 200, 5, 0.99, 4)]
    sel = select(d, 0.5, 300, 300, max_regions=3)
    assert [x.index for x in sel.regions] == [3, 2, 1]  # the 3 largest (40, 40, 30), then by score
    assert (sel.found, sel.limit, sel.small, sel.large) == (5, 2, 0, 0)
    sel = select(d, 0.5, 300, 300, max_regions=10)
    assert [x.index for x in sel.regions] == [4, 0, 3, 2, 1] and sel.limit == 0
    sel = select(d, 0.65, 300, 300, max_regions=1)  # confidence first: the 0.6 box is not a candidate
    assert [x.index for x in sel.regions] == [3] and (sel.found, sel.limit) == (4, 3)


def test_select_ignores_regions_outside_the_size_limits_before_counting():
    d = [box(10, 10, 20, 0.9, 0), box(100, 10, 40, 0.9, 1), box(10, 100, 10, 0.9, 2), box(100, 100, 60, 0.9, 3)]
    sel = select(d, 0.5, 300, 300, max_regions=2, min_size=10, max_size=40)
    assert [x.index for x in sel.regions] == [0, 1]  # a box exactly min_size wide is dropped (Impact's drop_size)
    assert (sel.small, sel.large, sel.limit, sel.found) == (1, 1, 0, 4)
    wide = Detection(Box(0, 0, 50, 8), 0.9, 5)  # sizes are per side: 8 px high is small, 50 px wide is large
    assert select([wide], 0.5, 300, 300, min_size=10).small == 1
    assert select([wide], 0.5, 300, 300, max_size=40).large == 1
    assert select([wide], 0.5, 300, 300).regions == [wide]  # defaults: no limit


@given(st.lists(st.tuples(st.integers(0, 280), st.integers(0, 280), st.integers(1, 60), st.floats(0, 1)),
                max_size=40), st.integers(1, 50), st.floats(0, 1))
def test_select_never_details_more_than_max_regions_and_accounts_for_every_candidate(raw, limit, confidence):
    d = [box(x, y, side, score, i) for i, (x, y, side, score) in enumerate(raw)]
    sel = select(d, confidence, 300, 300, max_regions=limit)
    assert len(sel.regions) <= limit
    assert len(sel.regions) + sel.limit + sel.small + sel.large == sel.found
    assert sel.found == len([x for x in d if x.score > confidence])
    if sel.limit:  # what was left out is never larger than what was kept
        kept_areas = [(r.box.x1 - r.box.x0) ** 2 for r in sel.regions]
        left = [(x.box.x1 - x.box.x0) ** 2 for x in d if x.score > confidence and x not in sel.regions]
        assert min(kept_areas) >= max(left)


def test_square_crop_grows_to_the_minimum_side_around_the_box():
    # a 20 px box, margin 5 -> 30, but at least 64: centred on the box
    assert square_crop(Rect(50, 60, 70, 80), 5, 300, 300, min_side=64) == Rect(28, 38, 92, 102)
    # near a corner: moved inside
    assert square_crop(Rect(0, 0, 20, 20), 5, 300, 300, min_side=64) == Rect(0, 0, 64, 64)
    # an image smaller than the minimum: its full size
    assert square_crop(Rect(10, 10, 30, 30), 5, 50, 40, min_side=64) == Rect(0, 0, 50, 40)
    assert min_crop_side(1024, 4.0) == 256 and min_crop_side(1000, 3.0) == 334 and min_crop_side(1024, 16.0) == 64


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(128, 2048), st.floats(1.0, 16.0))
def test_working_size_never_scales_more_than_max_upscale_beyond_rounding(w, h, size, cap):
    ww, wh = working_size(w, h, size, cap)
    assert ww % 8 == 0 and wh % 8 == 0
    longer = max(w, h)
    if size <= longer * cap:  # the crop is big enough: the longer side is inpaintSize
        assert max(ww, wh) == max(8, int(size / 8 + 0.5) * 8)
    else:  # too small: scaled by the cap, up to the rounding to 8
        assert abs(max(ww, wh) - longer * cap) <= 4 or max(ww, wh) == 8


def test_working_size_examples_with_a_cap():
    assert working_size(256, 256, 1024, 4.0) == (1024, 1024)  # exactly 4x
    assert working_size(200, 200, 1024, 4.0) == (800, 800)  # a 200-px picture: 4x, not 5.12x
    assert working_size(200, 100, 1024, 4.0) == (800, 400)
    assert working_size(50, 50, 128, 16.0) == (128, 128)


@given(st.integers(1, 3000), st.integers(1, 3000), st.integers(128, 2048))
def test_working_size_puts_the_longer_side_at_inpaint_size_in_multiples_of_eight(w, h, size):
    ww, wh = working_size(w, h, size)
    assert ww % 8 == 0 and wh % 8 == 0 and ww >= 8 and wh >= 8
    assert max(ww, wh) == max(8, int(size / 8 + 0.5) * 8)
    if min(w, h) * size / max(w, h) >= 16:  # aspect kept up to the rounding to 8
        assert abs(ww / wh - w / h) <= (w / h) * (8 / min(ww, wh)) * 1.01
    if w == h:
        assert ww == wh


def test_feather_kernel_reaches_exactly_the_blur():
    assert feather_kernel(0) is None
    size, sigma = feather_kernel(5)
    assert size == 11 and math.isclose(sigma, 5 / 3)
    assert feather_kernel(100)[0] == 201
