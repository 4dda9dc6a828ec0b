"""The step caches' shared policy, profiles and calibration fit (pure)."""

import json

import numpy as np
import pytest

from imageinference.cache.build import cache_config
from imageinference.cache.fitting import fit
from imageinference.cache.policy import CachePolicy, SkipLedger, run_warnings
from imageinference.cache.profiles import (
    PUBLISHED,
    TEACACHE_THRESHOLD_SCALE,
    TeaCacheProfile,
    calibrated_scale,
    dbcache_split,
    load_calibrations,
    polyval,
    save_calibration,
    teacache_profile,
)
from imageinference.samplers.windows import StepWindow, step_index
from imageinference.schema.errors import ContractError


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
    from imageinference.cache.build import cache_config
    from imageinference.schema.errors import ContractError

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
