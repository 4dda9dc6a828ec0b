"""The step caches' shared policy, profiles and calibration fit (pure)."""

import json
import logging
import math

import numpy as np
import pytest

from imageinference.contract.errors import ContractError
from imageinference.engines.cache.build import cache_config
from imageinference.engines.cache.fitting import fit
from imageinference.engines.cache.policy import (
    ALWAYS_RUN_SHARE_LIMIT,
    CachePolicy,
    SkipLedger,
    always_run_warning,
    fewest_computed_steps,
    floor_model_calls,
    run_warnings,
)
from imageinference.engines.cache.profiles import (
    PUBLISHED,
    TEACACHE_THRESHOLD_SCALE,
    TeaCacheProfile,
    api_threshold,
    calibrated_scale,
    dbcache_split,
    load_calibrations,
    polyval,
    save_calibration,
    teacache_profile,
)
from imageinference.engines.samplers.windows import StepWindow, step_index


def simulate(policy, total, wants):
    """Skip decisions of a run where the criterion wants to skip at the steps in `wants`."""
    ledger = SkipLedger(policy, total, 10)
    out = []
    for step in range(total):
        skip = step in wants and ledger.may_skip(step)
        ledger.record(step, skip)
        out.append(skip)
    return out


@pytest.mark.parametrize("cap", [1, 2, 3, 4, 5])
def test_max_consecutive_caps_every_streak(cap):
    flags = simulate(CachePolicy(max_consecutive=cap), 28, set(range(28)))
    streaks, n = [], 0
    for f in flags:
        n = n + 1 if f else 0
        streaks.append(n)
    assert max(streaks) == cap
    assert not flags[0] and not flags[-1]  # first and last step always computed


def test_window_and_refresh_interval():
    policy = CachePolicy(StepWindow(start_percentage=25, end_percentage=75), max_consecutive=5, refresh_interval=3)
    flags = simulate(policy, 20, set(range(20)))
    skipped = [i for i, f in enumerate(flags) if f]
    assert skipped and min(skipped) >= 5 and max(skipped) < 15
    assert policy.max_run == 2 and not any(all(flags[i:i + 3]) for i in range(18))


def test_last_step_may_be_cached_when_asked():
    assert CachePolicy(compute_last_step=False).bounds(10) == (1, 10)
    assert CachePolicy().bounds(10) == (1, 9)


def test_step_index_matches_the_schedule_and_midpoints():
    sigmas = [1.0, 0.8, 0.5, 0.2, 0.0]
    assert [step_index(sigmas, s) for s in sigmas[:-1]] == [0, 1, 2, 3]
    assert step_index(sigmas, 0.65) == 1  # a second-order sampler's midpoint belongs to its step
    assert step_index(sigmas, 0.8 * (1 + 1e-9)) == 1


def test_summary_and_warnings():
    ledger = SkipLedger(CachePolicy(), 4, 10)
    ledger.forwards, ledger.block_calls = 4, 20
    for step, skipped in ((0, False), (1, True), (2, True), (3, False)):
        ledger.record(step, skipped)
    assert ledger.summary("TeaCache") == ("TeaCache: skipped 2/4 steps, 20/40 transformer block calls "
                                          "(estimated 2.00x on the blocks)")
    assert len(run_warnings("X", 4, True)) == 2 and run_warnings("X", 28, False) == []


@pytest.mark.parametrize(("blocks", "first", "last"), [(2, 1, 0), (4, 1, 0), (8, 1, 1), (24, 2, 1), (57, 4, 1)])
def test_dbcache_split_leaves_a_middle(blocks, first, last):
    split = dbcache_split(blocks)
    assert (split.first, split.last) == (first, last) and split.first + split.last < blocks


def test_polyval_and_fit_recover_a_known_polynomial():
    coeffs = (3.0, -2.0, 0.5, 0.1, 0.01)
    xs = np.linspace(0.01, 0.5, 40)
    points = [(float(x), float(np.polyval(coeffs, x))) for x in xs]
    assert polyval(coeffs, 0.3) == pytest.approx(np.polyval(coeffs, 0.3))
    assert np.allclose(fit(points), coeffs, atol=1e-6)
    assert len(fit([(0.1, 0.2), (0.2, 0.3)])) == 2  # two distinct x: a line, not a degree-4 guess
    with pytest.raises(ValueError):
        fit([(0.1, 0.2)])


def test_calibration_file_round_trip_and_priority(tmp_path):
    path = tmp_path / "cal.json"
    assert load_calibrations(path) == {}
    save_calibration(path, "sd3", TeaCacheProfile((2.0, 0.1), 0.7, "calibrated"), {"points": 9})
    loaded = load_calibrations(path)
    assert loaded["sd3"].coefficients == (2.0, 0.1) and loaded["sd3"].threshold_scale == 0.7
    assert json.loads(path.read_text())["sd3"]["points"] == 9
    assert teacache_profile("sd3", loaded).coefficients == (2.0, 0.1)
    assert teacache_profile("flux", loaded).coefficients == PUBLISHED["flux"]
    assert teacache_profile("flux", {}).threshold(0.5) == pytest.approx(0.5 * TEACACHE_THRESHOLD_SCALE)
    path.write_text(json.dumps({"sd3": {"coefficients": [], "thresholdScale": 1}}))
    with pytest.raises(ValueError):
        load_calibrations(path)


def test_calibrated_scale_is_five_median_steps():
    assert calibrated_scale([0.1, 0.3, 0.2, 0.0]) == pytest.approx(5 * 0.2)


class Layout:
    family = "flux"
    kinds = ("double", "single")


def test_cache_config_maps_request_values():
    tea = cache_config("teaCache", 0.5, Layout(), profile=TeaCacheProfile((1.0, 0.0), 0.8, "t"))
    assert tea.threshold == pytest.approx(0.4) and (tea.split.first, tea.split.last) == (0, 0)
    db = cache_config("dbCache", 0.3, Layout(), skip_interval=2, max_consecutive=5)
    assert db.policy.max_run == 1 and db.name == "DBCache F1B0"
    with pytest.raises(ContractError):
        cache_config("fbCache", 1.5, Layout())
    with pytest.raises(ContractError):
        cache_config("teaCache", -0.1, Layout(), profile=TeaCacheProfile((1.0, 0.0), 0.8, "t"))


class _Layout:
    def __init__(self, family, blocks):
        self.family = family
        self.kinds = ["double"] * blocks


def test_config_problems_are_contract_errors_naming_the_field(tmp_path, monkeypatch):
    from imageinference.contract.errors import ContractError
    from imageinference.engines.cache.build import cache_config

    with pytest.raises(ContractError) as info:
        cache_config("fbCache", 0.2, _Layout("sd3", 1))
    assert info.value.codes == ["unsupportedAcceleratorOptions"]
    assert info.value.parameters == ["acceleratorOptions.fbCache"]
    with pytest.raises(ContractError) as info:
        cache_config("dbCache", 1.5, _Layout("sd3", 8))
    assert info.value.parameters == ["acceleratorOptions.dbCacheThreshold"]
    bad = tmp_path / "calibration.json"
    monkeypatch.setenv("IMAGEINFERENCE_TEACACHE_CALIBRATION", str(bad))
    for text in ("{not json", "[1, 2]", '{"sd3": {"coefficients": "x", "thresholdScale": 1}}'):
        bad.write_text(text)
        with pytest.raises(ContractError) as info:
            cache_config("teaCache", 0.5, _Layout("sd3", 4))
        assert info.value.codes == ["invalidTeaCacheCalibration"]
        assert str(bad) in info.value.errors[0].message
    bad.unlink()
    assert cache_config("teaCache", 0.5, _Layout("sd3", 4)).threshold == pytest.approx(0.4)


@pytest.mark.parametrize("scale", [1.0, 0.8, 3.7])
def test_api_threshold_keeps_the_lower_half_and_reaches_the_policy_floor_at_one(scale):
    assert api_threshold(0.0, scale) == 0.0
    for v in (0.05, 0.25, 0.5):
        assert api_threshold(v, scale) == pytest.approx(v * scale)  # unchanged from the linear mapping
    assert api_threshold(0.75, scale) == pytest.approx(scale)  # what 1.0 meant under the linear mapping
    assert math.isinf(api_threshold(1.0, scale))
    values = np.linspace(0, 0.999, 400)
    mapped = [api_threshold(float(v), scale) for v in values]
    assert all(b > a for a, b in zip(mapped, mapped[1:], strict=False))  # strictly increasing
    h = 1e-6  # continuous, with a continuous slope, where the two pieces meet
    left = (api_threshold(0.5, scale) - api_threshold(0.5 - h, scale)) / h
    right = (api_threshold(0.5 + h, scale) - api_threshold(0.5, scale)) / h
    assert left == pytest.approx(right, rel=1e-4) and left == pytest.approx(scale, rel=1e-4)
    assert api_threshold(0.5 + h, scale) == pytest.approx(0.5 * scale, rel=1e-5)
    for bad in (-0.01, 1.01):
        with pytest.raises(ValueError):
            api_threshold(bad, scale)


def test_request_values_map_through_the_same_curve():
    tea = TeaCacheProfile((1.0, 0.0), 0.8, "t")
    assert math.isinf(tea.threshold(1.0)) and tea.threshold(0.75) == pytest.approx(0.8)
    for kind in ("fbCache", "dbCache"):
        assert cache_config(kind, 0.3, _Layout("sd3", 24)).threshold == pytest.approx(0.3)
        assert cache_config(kind, 0.9, _Layout("sd3", 24)).threshold == pytest.approx(2.5)
        assert math.isinf(cache_config(kind, 1.0, _Layout("sd3", 24)).threshold)
    assert cache_config("fbCache", 0.0, _Layout("sd3", 24)).threshold == 0.0


def _greedy(policy, total):
    """The computed steps of a run whose criterion always wants to skip, simulated step by step."""
    return [i for i, skipped in enumerate(simulate(policy, total, set(range(total)))) if not skipped]


@pytest.mark.parametrize(("cap", "expected"), [(5, [0, 6, 12, 18, 24, 27]), (3, [0, 4, 8, 12, 16, 20, 24, 27]),
                                               (1, list(range(0, 28, 2)) + [27])])
def test_fewest_computed_steps_is_the_policy_floor(cap, expected):
    policy = CachePolicy(max_consecutive=cap)
    assert fewest_computed_steps(policy, 28) == expected == _greedy(policy, 28)
    no_last = CachePolicy(max_consecutive=cap, compute_last_step=False)
    assert fewest_computed_steps(no_last, 28) == _greedy(no_last, 28)
    windowed = CachePolicy(StepWindow(start_step=10, end_step=20), max_consecutive=cap)
    assert fewest_computed_steps(windowed, 28) == _greedy(windowed, 28)


def test_floor_model_calls_counts_the_always_run_blocks():
    policy = CachePolicy(max_consecutive=5)
    assert floor_model_calls(policy, 28, 0, 12) == 6  # TeaCache: whole steps
    assert floor_model_calls(policy, 28, 1, 3) == pytest.approx(6 + 22 / 3)  # FBCache on 3 blocks: 13.33
    assert floor_model_calls(policy, 28, 2, 12) == pytest.approx(6 + 22 * 2 / 12)  # DBCache F1B1 on 12 blocks


@pytest.mark.parametrize(("kind", "blocks", "warns"), [
    ("fbCache", 2, True), ("fbCache", 3, True), ("fbCache", 8, False), ("fbCache", 12, False),
    ("fbCache", 24, False), ("fbCache", 57, False),
    ("dbCache", 3, True), ("dbCache", 8, True), ("dbCache", 12, True), ("dbCache", 24, False),
    ("dbCache", 38, False), ("dbCache", 57, False)])
def test_few_block_models_warn_for_fbcache_and_dbcache(kind, blocks, warns, caplog):
    with caplog.at_level(logging.WARNING, logger="imageinference.cache"):
        config = cache_config(kind, 0.25, _Layout("sd3", blocks), max_consecutive=5)
    messages = [r.getMessage() for r in caplog.records]
    always = config.split.first + config.split.last
    assert (always / blocks > ALWAYS_RUN_SHARE_LIMIT) == warns
    assert bool(messages) == warns
    if warns:
        (text,) = messages
        floor = floor_model_calls(config.policy, 28, always, blocks)
        assert f"{always} of this model's {blocks} transformer blocks" in text
        assert f"below {floor:.1f} model calls" in text and "reaches 6" in text and "teaCache" in text


def test_teacache_never_warns_about_always_run_blocks(caplog):
    with caplog.at_level(logging.WARNING, logger="imageinference.cache"):
        cache_config("teaCache", 0.5, _Layout("sd3", 2), profile=TeaCacheProfile((1.0, 0.0), 0.8, "t"))
    assert not caplog.records
    assert always_run_warning("X", CachePolicy(), 0, 2) is None


def test_the_warning_counts_a_binding_skip_interval(caplog):
    with caplog.at_level(logging.WARNING, logger="imageinference.cache"):
        config = cache_config("dbCache", 0.25, _Layout("sd3", 3), max_consecutive=5, skip_interval=3)
    (record,) = caplog.records
    text = record.getMessage()
    assert fewest_computed_steps(config.policy, 28) == list(range(0, 28, 3))  # at most 2 skipped in a row
    computed = 10
    assert "cacheMaxConsecutiveSteps 5 and dbCacheSkipInterval 3" in text
    assert f"below {computed + (28 - computed) / 3:.1f} model calls" in text and "reaches 6" in text


def test_peer_pack_rules_lift_the_cap_and_the_last_step_rule():
    """skipLastStep / uncappedSkips (node options): a criterion that always wants to skip then computes only the
    first step, as ComfyUI-TeaCache and Comfy-WaveSpeed (max_consecutive_cache_hits -1) do; DBCache's interval
    still forces its refresh."""
    profile = TeaCacheProfile((1.0, 0.0), 0.8, "t")
    peer = cache_config("teaCache", 1.0, Layout(), profile=profile, skip_last_step=True, uncapped=True)
    assert peer.policy.max_consecutive is None and not peer.policy.compute_last_step
    assert fewest_computed_steps(peer.policy, 28) == [0] == _greedy(peer.policy, 28)
    last_only = cache_config("fbCache", 0.3, Layout(), max_consecutive=2, skip_last_step=True)
    assert fewest_computed_steps(last_only.policy, 10) == [0, 3, 6, 9] == _greedy(last_only.policy, 10)
    capped = cache_config("fbCache", 0.3, Layout(), max_consecutive=2, uncapped=False)
    assert fewest_computed_steps(capped.policy, 10) == [0, 3, 6, 9]  # step 9 is the last: computed either way
    db = cache_config("dbCache", 0.3, Layout(), skip_interval=4, uncapped=True, skip_last_step=True)
    assert fewest_computed_steps(db.policy, 10) == [0, 4, 8]
    assert cache_config("fbCache", 0.3, Layout(), signal="output").signal == "output"
    with pytest.raises(ValueError):
        cache_config("fbCache", 0.3, Layout(), signal="input")  # type: ignore[arg-type]
    text = always_run_warning("FBCache", peer.policy, 1, 2)
    assert text is not None and "no cap on skips in a row" in text and "reaches 1" in text


@pytest.mark.parametrize("scale", [0.8, 1.0, 2.5])
def test_api_value_is_the_inverse_of_api_threshold(scale):
    from imageinference.engines.cache.profiles import api_value

    for threshold in (0.0, 0.01, 0.12, 0.3, 0.4, 0.5, 0.8, 1.0, 2.0, 7.5):
        value = api_value(threshold, scale)
        assert 0.0 <= value < 1.0
        assert api_threshold(value, scale) == pytest.approx(threshold, rel=1e-12, abs=1e-15)
    assert api_value(0.4, 0.8) == 0.5 and api_value(0.8, 0.8) == pytest.approx(0.75)
    assert api_value(math.inf, scale) == 1.0
