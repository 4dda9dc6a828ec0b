"""IP-Adapter option semantics: weight-type block schedules, embedding scaling, what each adapter family accepts."""

import pytest

from imageinference.contract.request import WEIGHT_TYPES as CONTRACT_WEIGHT_TYPES
from imageinference.contract.request import IpAdapter
from imageinference.engines.ipadapter.options import (
    SD15_BLOCKS,
    SDXL_BLOCKS,
    WEIGHT_TYPES,
    Scaling,
    ScheduleError,
    block_weights,
    embed_scaling,
    middle_block_off,
    option_issues,
)

W, WC = 0.8, 0.5

# The reference's block tables written out by block name (not by index), then turned into t positions:
# SD1.5 t order: in1 in2 in4 in5 in7 in8 mid out3 out4 out5 out6 out7 out8 out9 out10 out11
SD15_NAMES = ["in1", "in2", "in4", "in5", "in7", "in8", "mid", "out3", "out4", "out5", "out6", "out7", "out8", "out9",
              "out10", "out11"]
# SDXL t order: in4 in5 in7 in8 mid out0 out1 out2 out3 out4 out5
SDXL_NAMES = ["in4", "in5", "in7", "in8", "mid", "out0", "out1", "out2", "out3", "out4", "out5"]
SD15_STYLE = {"in1", "in2", "in4", "in5", "out5", "out6", "out7", "out8", "out9", "out10", "out11"}

EXPECTED_BY_NAME = {
    ("sd15", "style_transfer"): {n: W for n in SD15_STYLE},
    ("sd15", "composition"): {"in7": 0.25 * W, "in8": W},
    ("sd15", "strong_style_transfer"): {n: W for n in SD15_NAMES if n not in ("in7", "in8")},
    ("sd15", "style_and_composition"): {**{n: W for n in SD15_STYLE}, "in7": 0.25 * WC, "in8": WC},
    ("sd15", "strong_style_and_composition"): {n: (WC if n in ("in7", "in8") else W) for n in SD15_NAMES},
    ("sdxl", "style_transfer"): {"out1": W},
    ("sdxl", "composition"): {"in8": W},
    ("sdxl", "strong_style_transfer"): {n: W for n in SDXL_NAMES if n != "in8"},
    ("sdxl", "style_and_composition"): {"in8": WC, "out1": W},
    ("sdxl", "strong_style_and_composition"): {n: (WC if n == "in8" else W) for n in SDXL_NAMES},
}


def layout(name):
    return (SD15_BLOCKS, SD15_NAMES) if name == "sd15" else (SDXL_BLOCKS, SDXL_NAMES)


def test_the_contract_and_the_engine_list_the_same_weight_types():
    assert set(WEIGHT_TYPES) == set(CONTRACT_WEIGHT_TYPES) and len(WEIGHT_TYPES) == 13
    assert IpAdapter.model_fields["combineMethod"].default == "concat"
    assert IpAdapter.model_fields["embedScaling"].default == "kv"


@pytest.mark.parametrize(("arch", "weight_type"), sorted(EXPECTED_BY_NAME))
def test_block_dict_types_apply_only_on_the_blocks_they_name(arch, weight_type):
    blocks, names = layout(arch)
    got = block_weights(weight_type, W, blocks, WC)
    want = EXPECTED_BY_NAME[(arch, weight_type)]
    assert got == pytest.approx([want.get(n, 0.0) for n in names])
    assert {n for n, w in zip(names, got, strict=True) if w} == set(want)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_depth_profiles_follow_the_layer_index_not_time(arch):
    blocks, names = layout(arch)
    n = len(names)
    ease_in = block_weights("ease_in", W, blocks)
    ease_out = block_weights("ease_out", W, blocks)
    ease_in_out = block_weights("ease_in_out", W, blocks)
    for t in range(n):
        depth = t / n  # 0 at the first cross-attention block
        assert ease_in[t] == pytest.approx(W * (1 - 0.95 * depth))
        assert ease_out[t] == pytest.approx(W * (0.05 + 0.95 * depth))
        assert ease_in_out[t] == pytest.approx(W * (0.05 + 0.95 * (1 - abs(2 * t - n) / n)))
    assert ease_in[0] == pytest.approx(W) and ease_in == tuple(sorted(ease_in, reverse=True))
    assert max(ease_in_out) == ease_in_out[n // 2]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
@pytest.mark.parametrize(("weight_type", "weak"), [("weak_input", {"in"}), ("weak_output", {"out"}),
                                                   ("weak_middle", {"mid"}), ("strong_middle", {"in", "out"})])
def test_weak_and_strong_types_scale_block_groups_by_a_fifth(arch, weight_type, weak):
    blocks, names = layout(arch)
    got = block_weights(weight_type, W, blocks)
    for name, w in zip(names, got, strict=True):
        group = "in" if name.startswith("in") else "out" if name.startswith("out") else "mid"
        assert w == pytest.approx(W * 0.2 if group in weak else W), name


def test_normal_is_the_weight_everywhere_and_zero_weight_touches_nothing():
    assert block_weights("normal", W, SD15_BLOCKS) == (W,) * 16
    for weight_type in WEIGHT_TYPES:
        assert not any(block_weights(weight_type, 0.0, SDXL_BLOCKS, 0.0))
    # as in the reference, the composition weight is its own: weight 0 leaves the composition block on
    assert block_weights("style_and_composition", 0.0, SDXL_BLOCKS, WC) == (0, 0, 0, WC, 0, 0, 0, 0, 0, 0, 0)


def test_weight_composition_defaults_to_one():
    got = block_weights("style_and_composition", W, SDXL_BLOCKS)
    assert got[3] == 1.0 and got[6] == W


def test_block_tables_need_an_sd_layout_but_depth_profiles_do_not():
    odd = ("input",) * 3 + ("middle",) + ("output",) * 3
    assert len(block_weights("ease_out", W, odd)) == 7
    with pytest.raises(ScheduleError, match="SD1.5 or SDXL"):
        block_weights("style_transfer", W, odd)


@pytest.mark.parametrize(("method", "want"), [
    ("only_v", Scaling(1, 1, 1, W)),
    ("kv", Scaling(W, W, W, 1)),
    ("kv_penalty_c", Scaling(W / 2, W / 2, W / 2, 1)),
    ("k_mean_v_penalty_c", Scaling(W / 2, 1, W / 2, 1)),
])
def test_embed_scaling(method, want):
    got = embed_scaling(method, W, 640)  # a 640-wide layer: C penalty 640 / 1280
    assert (got.key, got.value, got.value_mean, got.output) == pytest.approx(
        (want.key, want.value, want.value_mean, want.output))


def test_options_each_family_refuses():
    full = {"combineMethod": "average", "embedScaling": "k_mean_v_penalty_c", "weightType": "composition",
            "weightComposition": 0.3}
    assert option_issues("unet", full) == []
    flux = option_issues("flux", full)
    assert [i.field for i in flux] == ["embedScaling", "weightType", "weightComposition"]
    assert flux[0].allowed == ("only_v", "kv")
    assert option_issues("flux", {"combineMethod": "norm_average", "embedScaling": "only_v"}) == []
    redux = option_issues("redux", {"embedScaling": "only_v", "weightType": "normal"})
    assert [i.field for i in redux] == ["embedScaling"]
    assert option_issues("redux", {}) == []  # defaults are fine everywhere


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_middle_block_off_zeroes_only_the_middle_block_and_keeps_the_depth_profile(arch):
    blocks, names = layout(arch)
    schedule = block_weights("ease_in_out", W, blocks)
    off = middle_block_off(schedule, blocks)
    assert [n for n, w in zip(names, off, strict=True) if w == 0] == ["mid"]
    assert [w for n, w in zip(names, off, strict=True) if n != "mid"] == \
        [w for n, w in zip(names, schedule, strict=True) if n != "mid"]  # t still counts the middle block
    # weak_middle then leaves every other block at the full weight: the same schedule as normal
    assert middle_block_off(block_weights("weak_middle", W, blocks), blocks) == \
        middle_block_off(block_weights("normal", W, blocks), blocks)


def test_the_c_penalty_is_computed_in_the_references_order():
    """w * (C / 1280), not (w * C) / 1280: they differ in the last bit for some weights, and the comparison with
    the reference is bit for bit."""
    w, width = 0.7, 640
    assert embed_scaling("kv_penalty_c", w, width).key == w * (width / 1280.0)
    assert any(x * (c / 1280.0) != x * c / 1280.0 for x in (0.1, 0.3, 0.7, 1.1, 1.3) for c in (320, 640, 1280, 960))
