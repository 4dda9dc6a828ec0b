"""DeepCache's pure rules: which UNet blocks a cached step runs, which steps are cached, ControlNet masking."""

import pytest

from imageinference.engines.cache.deepcache import Branch, DeepCacheConfig, branch_for, cached_steps
from imageinference.engines.cache.policy import SkipLedger
from imageinference.engines.samplers.windows import StepWindow

SD15 = (12, 12)  # ComfyUI's SD1.5 UNet: 12 input blocks, a middle block, 12 output blocks
SDXL = (9, 9)


def test_branch_zero_keeps_only_the_input_convolution_and_the_last_output_block():
    b = branch_for(0, *SD15)
    assert b.partner == 11
    assert [i for i in range(12) if not b.skips_input(i)] == [0]
    assert [j for j in range(12) if not b.skips_output(j)] == [11]
    assert (b.blocks_per_forward, b.blocks_per_cached_forward) == (25, 2)


def test_each_kept_input_block_keeps_its_mirrored_output_block():
    for inputs, outputs in (SD15, SDXL):
        for k in range(inputs):
            b = branch_for(k, inputs, outputs)
            kept_in = [i for i in range(inputs) if not b.skips_input(i)]
            kept_out = [j for j in range(outputs) if not b.skips_output(j)]
            # output block j reads the skip connection of input block (outputs - 1 - j)
            assert sorted(outputs - 1 - j for j in kept_out) == kept_in
            assert b.blocks_per_cached_forward == len(kept_in) + len(kept_out)


def test_the_deepest_branch_skips_only_the_middle_block():
    b = branch_for(11, *SD15)
    assert b.partner == 0 and not any(b.skips_input(i) or b.skips_output(i) for i in range(12))


@pytest.mark.parametrize(("index", "inputs", "outputs"), [(12, 12, 12), (9, 9, 9), (-1, 12, 12), (0, 12, 11)])
def test_branches_the_unet_does_not_have_are_refused(index, inputs, outputs):
    with pytest.raises(ValueError, match="deepCacheBranchId|as many output"):
        branch_for(index, inputs, outputs)


def test_config_refuses_intervals_below_one_and_negative_branches():
    with pytest.raises(ValueError):
        DeepCacheConfig(interval=0)
    with pytest.raises(ValueError):
        DeepCacheConfig(branch=-1)


def test_control_entries_of_skipped_blocks_are_masked_in_pop_order():
    b = branch_for(2, *SD15)  # input blocks 0-2 and output blocks 9-11 run
    # the UNet pops from the end: the last entry goes to block 0
    assert b.masked_control("input", 12) == [True] * 9 + [False] * 3
    assert b.masked_control("output", 12) == [False] * 3 + [True] * 9
    assert b.masked_control("middle", 1) == [True]


def test_interval_one_never_caches():
    assert cached_steps(DeepCacheConfig(interval=1), 30) == []


def test_interval_n_is_the_uniform_pattern_and_the_last_step_runs_in_full():
    assert cached_steps(DeepCacheConfig(interval=3), 10) == [1, 2, 4, 5, 7, 8]
    assert cached_steps(DeepCacheConfig(interval=2), 7) == [1, 3, 5]


def test_max_consecutive_and_the_window_bound_the_cached_steps():
    assert cached_steps(DeepCacheConfig(interval=10, max_consecutive=2), 9) == [1, 2, 4, 5, 7]
    window = StepWindow(start_step=4, end_step=8)
    assert cached_steps(DeepCacheConfig(interval=3, window=window), 12) == [4, 5, 7]
    pct = StepWindow(start_percentage=50)
    assert cached_steps(DeepCacheConfig(interval=2, window=pct), 10) == [5, 7]


@pytest.mark.parametrize("interval", [1, 2, 3, 5])
@pytest.mark.parametrize("max_consecutive", [1, 3, 5])
def test_the_prediction_matches_the_shared_ledger_the_engine_uses(interval, max_consecutive):
    config = DeepCacheConfig(interval=interval, max_consecutive=max_consecutive, window=StepWindow(start_step=2))
    ledger = SkipLedger(config.policy, 20, Branch(0, 12, 12).blocks_per_forward)
    taken = []
    for step in range(20):
        skip = ledger.may_skip(step)
        ledger.record(step, skip)
        if skip:
            taken.append(step)
    assert taken == cached_steps(config, 20)
