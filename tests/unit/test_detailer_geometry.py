"""Face-detailer geometry: which detections count, the square crop, the working size, the feather kernel."""

import math

from hypothesis import given
from hypothesis import strategies as st

from imageinference.engines.detailer.geometry import (
    Box,
    Detection,
    Rect,
    feather_kernel,
    kept,
    pixel_rect,
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
