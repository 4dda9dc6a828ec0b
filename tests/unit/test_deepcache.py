"""DeepCache's pure rules: which UNet blocks a cached step runs, which steps are cached, ControlNet masking."""

import pytest

from imageinference.engines.cache.deepcache import (
    Branch,
    DeepCacheConfig,
    branch_for,
    cached_step_set,
    cached_steps,
    quad_center_steps,
)
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
    assert cached_steps(DeepCacheConfig(interval=1, schedule="non-uniform"), 30) == []


@pytest.mark.parametrize("steps", [7, 10, 28, 50])
@pytest.mark.parametrize("interval", [2, 3, 4, 5, 6, 7, 8, 12, 30, 100])
def test_the_interval_is_honoured_as_deepcache_defines_it(steps, interval):
    """DeepCache's uniform schedule runs in full the steps range(0, steps, interval) and caches all others (its
    pipelines' `interval_seq`, its helper's `(t - start) % interval == 0`): interval 5 caches 4 steps in a row,
    interval 8 caches 7, whatever cacheMaxConsecutiveSteps says, and the last step follows the pattern."""
    full = set(range(0, steps, interval))
    assert cached_steps(DeepCacheConfig(interval=interval), steps) == [i for i in range(steps) if i not in full]


def test_the_window_bounds_the_cached_steps_and_the_pattern_continues_inside_it():
    window = StepWindow(start_step=4, end_step=8)
    assert cached_steps(DeepCacheConfig(interval=3, window=window), 12) == [4, 5, 7]
    pct = StepWindow(start_percentage=50)
    assert cached_steps(DeepCacheConfig(interval=2, window=pct), 10) == [5, 7, 9]
    assert cached_steps(DeepCacheConfig(interval=4, window=StepWindow(end_step=3)), 10) == [1, 2]
    assert cached_steps(DeepCacheConfig(interval=3, schedule="non-uniform", window=StepWindow(start_step=30)),
                        28) == []


def test_the_shared_ledger_counts_what_the_schedule_caches():
    """The run records its decisions in the shared SkipLedger; its summary counts the schedule's cached steps."""
    config = DeepCacheConfig(interval=5, window=StepWindow(start_step=2))
    ledger = SkipLedger(config.policy, 20, Branch(0, 12, 12).blocks_per_forward)
    expected = cached_steps(config, 20)
    for step in range(20):
        ledger.record(step, step in expected)
    assert ledger.skipped == expected and max(_streaks(ledger.decisions)) == 4


def _streaks(decisions):
    run, out = 0, [0]
    for _, skipped in decisions:
        run = run + 1 if skipped else 0
        out.append(run)
    return out


def test_non_uniform_schedule_options_are_checked():
    with pytest.raises(ValueError):
        DeepCacheConfig(schedule="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DeepCacheConfig(schedule="non-uniform", power=1.0)
    with pytest.raises(ValueError):
        DeepCacheConfig(schedule="non-uniform", center=-1)


@pytest.fixture(scope="module")
def deepcache_quad_center(tmp_path_factory):
    """DeepCache's own `sample_from_quad_center`, from its Stable Diffusion pipeline in the vendored archive."""
    import numpy as np

    from imageinference.testing import peers

    try:
        folder = peers.unpack("DeepCache", tmp_path_factory.mktemp("deepcache"))
    except peers.PeerMissing as exc:
        pytest.skip(f"LOUD: {exc}")
    return peers.load_function(folder / "DeepCache" / "sd" / "pipeline_stable_diffusion.py",
                               "sample_from_quad_center", {"np": np})


def _peer_schedule(function, steps, count, center, power):
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)  # its np.int32(complex) drops the imaginary
        try:
            indices, used = function(steps, count, center=center, pow=power)
        except ValueError:
            return None
    return [int(i) for i in indices], used


def test_non_uniform_schedule_equals_deepcaches_own(deepcache_quad_center):
    """Every (steps, interval, center, pow) of a grid around DeepCache's example (50 steps, interval 5, center 15,
    pow 1.4): the same full steps as DeepCache's pipeline (uniform=False) computes, found at the same pow, and the
    same failures (DeepCache raises ValueError; ours falls back to the uniform schedule with a warning)."""
    import math

    compared = failed = 0
    for steps in (10, 20, 28, 50):
        for interval in (2, 3, 4, 5, 7):
            count = math.ceil(steps / interval)
            for center in (0, 3, steps // 3, 15, steps - 2, steps + 4):
                for power in (1.1, 1.4, 2.0):
                    expected = _peer_schedule(deepcache_quad_center, steps, count, center, power)
                    ours = quad_center_steps(steps, count, center, power)
                    assert (ours is None) == (expected is None), (steps, interval, center, power)
                    if ours is None:
                        failed += 1
                        continue
                    assert ours[0] == expected[0] and ours[1] == expected[1], (steps, interval, center, power)
                    config = DeepCacheConfig(interval, schedule="non-uniform", center=center, power=power)
                    full = set(expected[0])
                    assert cached_steps(config, steps) == [i for i in range(1, steps) if i not in full]
                    compared += 1
    assert compared > 150 and failed > 0  # both outcomes are exercised


def test_an_impossible_non_uniform_schedule_falls_back_to_uniform_with_a_warning():
    config = DeepCacheConfig(2, schedule="non-uniform", center=15, power=1.1)
    assert quad_center_steps(28, 14, 15, 1.1) is None  # 14 full steps of 28 cannot crowd around step 15
    steps, warning = cached_step_set(config, 28)
    assert sorted(steps) == cached_steps(DeepCacheConfig(2), 28)
    assert warning is not None and "uniform schedule" in warning and "around step 15" in warning
