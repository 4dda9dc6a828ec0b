"""TeaCache / FBCache / DBCache against real ComfyUI sampling with the tiny FLUX and SD3-shaped models."""

import logging

import pytest
import torch

from imageinference.contract.errors import ContractError
from imageinference.engines.cache.engine import CacheConfig
from imageinference.engines.cache.policy import CachePolicy
from imageinference.engines.cache.profiles import BlockSplit, TeaCacheProfile
from imageinference.engines.samplers.windows import StepWindow

STEPS = 12
# a profile that makes TeaCache skip on the tiny random models (their per-step change is large)
LOOSE = TeaCacheProfile((1.0, 0.0), 50.0, "test")


@pytest.fixture(scope="module")
def flux(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_diffusion_model(str(TINY["flux"].path(tiny_models_root)))


@pytest.fixture(scope="module")
def sd3(comfy, tmp_path_factory):
    """A 4-block SD3-shaped MMDiT (the shipped tiny SD3 has 2), so block ranges have a middle."""
    import comfy.sd
    import safetensors.torch

    from imageinference.testing.tiny_models import make_sd3

    path = tmp_path_factory.mktemp("sd3") / "sd3_depth4.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in make_sd3(4, 99).items()}, str(path))
    return comfy.sd.load_diffusion_model(str(path))


def cond(tokens, pooled, seed, **extra):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=g), {"pooled_output": torch.randn(1, pooled, generator=g),
                                                         **extra}]]


def flux_conds():
    c = cond(6, 768, 1, guidance=3.5)
    return c, c


def sd3_conds(separate=False):
    # context lengths 8 and 7 cannot be batched (lcm rule), so cond and uncond run as separate forwards
    return cond(8, 2048, 2), cond(7 if separate else 8, 2048, 3)


def run(model, conds, size=32, cfg=1.0, steps=STEPS, sampler="euler", seed=5):
    import comfy.sample

    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "simple", conds[0], conds[1], latent, seed=seed,
                               disable_pbar=True)


class RunCapture:
    """Collects the cache's per-run state objects (a keyed CALC_COND_BATCH wrapper; composes with the cache)."""

    def __init__(self, model):
        import comfy.patcher_extension

        from imageinference.engines.cache.patch import RUN_KEY

        self.runs = []
        self.model = model.clone()

        def keep(executor, *args, **kwargs):
            r = args[-1]["transformer_options"].get(RUN_KEY)
            if r is not None and (not self.runs or self.runs[-1] is not r):
                self.runs.append(r)
            return executor(*args, **kwargs)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_capture", keep)


def cached(model, kind, threshold, split=None, **policy):
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout

    if split is not None:
        config = CacheConfig(kind, threshold, split, CachePolicy(**policy))
    else:
        window = policy.pop("window", None)
        config = cache_config(kind, threshold, model_layout(model), window=window,
                              profile=LOOSE if kind == "teaCache" else None, **policy)
    return apply_step_cache(model, config)


KINDS = ["teaCache", "fbCache", "dbCache"]
WIDGETS = {"cacheStartStep": -1, "cacheStartStepPercentage": -1, "cacheEndStep": -1, "cacheEndStepPercentage": -1,
           "cacheMaxConsecutiveSteps": 3}


@pytest.mark.parametrize("kind", KINDS)
def test_threshold_zero_is_bit_identical_flux(flux, kind):
    base = run(flux, flux_conds(), steps=6)
    assert torch.equal(run(cached(flux, kind, 0.0), flux_conds(), steps=6), base)


@pytest.mark.parametrize("kind", KINDS)
def test_threshold_zero_is_bit_identical_sd3_with_cfg(sd3, kind):
    base = run(sd3, sd3_conds(), cfg=4.5)
    assert torch.equal(run(cached(sd3, kind, 0.0), sd3_conds(), cfg=4.5), base)


@pytest.mark.parametrize("kind", KINDS)
def test_caches_skip_and_stay_close(sd3, kind):
    """Skipping moves the result, but far less than another seed does (the scale of 'different image')."""
    base = run(sd3, sd3_conds(), cfg=4.5)
    other_seed = run(sd3, sd3_conds(), cfg=4.5, seed=6)
    cap = RunCapture(cached(sd3, kind, 1.0))
    out = run(cap.model, sd3_conds(), cfg=4.5)
    (r,) = cap.runs
    assert r.ledger.skipped, "a loose threshold must skip steps"
    assert r.ledger.block_calls < r.ledger.forwards * 4
    assert not torch.equal(out, base)
    drift = (out - base).abs().mean().item()
    assert drift < 0.5 * (other_seed - base).abs().mean().item()


def test_skipping_never_writes_into_the_model_input(sd3):
    seen = []

    def guard(apply_model, args):
        x = args["input"]
        before = x.clone()
        out = apply_model(x, args["timestep"], **args["c"])
        seen.append(torch.equal(x, before))
        return out

    def with_copy(apply_model, args):
        return apply_model(args["input"].clone(), args["timestep"], **args["c"])

    for kind in KINDS:
        m = cached(sd3, kind, 1.0)
        m.set_model_unet_function_wrapper(guard)
        direct = run(m, sd3_conds(), cfg=4.5)
        m2 = cached(sd3, kind, 1.0)
        m2.set_model_unet_function_wrapper(with_copy)
        copied = run(m2, sd3_conds(), cfg=4.5)
        assert torch.equal(direct, copied), kind
    assert seen and all(seen)


@pytest.mark.parametrize("max_consecutive", [1, 2, 3])
def test_skips_respect_max_consecutive_and_window(sd3, max_consecutive):
    window = StepWindow(start_step=3, end_step=10)
    cap = RunCapture(cached(sd3, "fbCache", 1.0, window=window, max_consecutive=max_consecutive))
    run(cap.model, sd3_conds(), cfg=4.5)
    (r,) = cap.runs
    skipped = [s for s, k in r.ledger.decisions if k]
    assert skipped and all(3 <= s < 10 for s in skipped)
    assert [s for s, _ in r.ledger.decisions] == list(range(STEPS))
    streak = longest = 0
    for _, k in r.ledger.decisions:
        streak = streak + 1 if k else 0
        longest = max(longest, streak)
    assert longest == max_consecutive


def test_dbcache_skip_interval_forces_a_refresh(sd3):
    def longest_streak(skip_interval):
        cap = RunCapture(cached(sd3, "dbCache", 1.0, skip_interval=skip_interval, max_consecutive=5))
        run(cap.model, sd3_conds(), cfg=4.5)
        streak = longest = 0
        for _, k in cap.runs[0].ledger.decisions:
            streak = streak + 1 if k else 0
            longest = max(longest, streak)
        return longest

    assert longest_streak(100) > 2  # the criterion alone skips several steps in a row
    assert longest_streak(3) == 2 and longest_streak(2) == 1 and longest_streak(1) == 0


def test_dbcache_last_blocks_always_run(sd3):
    calls = []
    blocks = list(sd3.model.diffusion_model.joint_blocks)
    hooks = [b.register_forward_pre_hook(lambda mod, *_: calls.append(blocks.index(mod))) for b in blocks]
    try:
        cap = RunCapture(cached(sd3, "dbCache", 1.0, split=BlockSplit(1, 1), max_consecutive=3))
        run(cap.model, sd3_conds(), cfg=4.5)
    finally:
        for h in hooks:
            h.remove()
    (r,) = cap.runs
    assert r.ledger.skipped
    forwards = r.ledger.forwards
    assert calls.count(0) == forwards and calls.count(3) == forwards  # F1 and B1 every forward
    assert calls.count(1) == calls.count(2) == forwards - len(r.ledger.skipped)


def test_state_does_not_leak_between_runs_of_different_sizes(sd3):
    m = cached(sd3, "teaCache", 0.6)
    run(m, sd3_conds(), size=32, cfg=4.5)
    second = run(m, sd3_conds(), size=48, cfg=4.5, steps=9)
    fresh = run(cached(sd3, "teaCache", 0.6), sd3_conds(), size=48, cfg=4.5, steps=9)
    assert torch.equal(second, fresh)


def test_cond_and_uncond_forwards_share_each_decision(sd3):
    cap = RunCapture(cached(sd3, "fbCache", 1.0))
    run(cap.model, sd3_conds(separate=True), cfg=4.5)
    (r,) = cap.runs
    by_step = {}
    for step, passes, skipped in r.forward_log:
        by_step.setdefault(step, {})[passes] = skipped
    assert all(len(v) == 2 for v in by_step.values()), "cond and uncond must run as separate forwards here"
    assert any(all(v.values()) for v in by_step.values())
    assert all(len(set(v.values())) == 1 for v in by_step.values())


def test_teacache_on_flux_skips_whole_forwards(flux):
    cap = RunCapture(cached(flux, "teaCache", 1.0))
    run(cap.model, flux_conds(), steps=8)
    (r,) = cap.runs
    assert r.ledger.skipped
    assert r.ledger.block_calls == 2 * (r.ledger.forwards - len(r.ledger.skipped))


def test_an_existing_block_replacement_still_runs(sd3):
    seen = []

    def other(args, extra):
        seen.append(1)
        return extra["original_block"](args)

    m = sd3.clone()
    m.set_model_patch_replace(other, "dit", "double_block", 2)
    base = run(m, sd3_conds(), cfg=4.5)
    assert torch.equal(run(cached(m, "fbCache", 0.0), sd3_conds(), cfg=4.5), base)
    assert len(seen) == 2 * STEPS


def test_one_log_line_per_run_and_stochastic_warning(sd3, caplog):
    with caplog.at_level(logging.INFO, logger="imageinference.cache"):
        run(cached(sd3, "fbCache", 1.0), sd3_conds(), cfg=4.5, sampler="euler_ancestral")
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(infos) == 1 and "FBCache: skipped" in infos[0] and f"/{STEPS} steps" in infos[0]
    assert any("ancestral" in w for w in warnings)


def test_nodes_apply_and_refuse_bad_input(comfy, sd3):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.comfyui.nodes.step_cache import DBCacheNode, FBCacheNode, TeaCacheNode

    m = TeaCacheNode.execute(sd3, teaCacheDistance=0.5, **WIDGETS).result[0]
    assert m is not sd3 and "imageinference_step_cache" in m.model_options["transformer_options"]
    assert "imageinference_step_cache" not in sd3.model_options["transformer_options"]
    with pytest.raises(ContractError) as info:
        FBCacheNode.execute(sd3, fbCacheThreshold=0.2, **dict(WIDGETS, cacheStartStep=10, cacheEndStep=5))
    assert info.value.parameters == ["acceleratorOptions.cacheEndStep"]
    with pytest.raises(ContractError) as info:
        DBCacheNode.execute(m, dbCacheThreshold=0.2, dbCacheSkipInterval=5, **WIDGETS)
    assert info.value.codes == ["conflictingAcceleratorOptions"]
    sd15 = AIRModelLoader.execute("test:sd15@1").result[0]
    with pytest.raises(ContractError) as info:
        TeaCacheNode.execute(sd15, teaCacheDistance=0.5, **WIDGETS)
    assert info.value.codes == ["unsupportedAcceleratorOptions"]


def test_calibration_fits_the_recorded_points(sd3):
    """The residual changes the calibration records equal ones measured independently with hooks on the first
    and last blocks, and its polynomial is the least-squares fit (solved here on a Vandermonde matrix)."""
    import numpy as np

    from imageinference.engines.cache.calibrate import calibrate

    blocks = sd3.model.diffusion_model.joint_blocks
    residuals = []
    inputs = []
    pre = blocks[0].register_forward_pre_hook(lambda mod, args: inputs.append(args[1].detach().clone()))
    post = blocks[-1].register_forward_hook(lambda mod, args, out: residuals.append(out[1].detach() - inputs[-1]))
    try:
        fit = calibrate(sd3, [sd3_conds()[0], cond(5, 2048, 11)], steps=8, seeds=(1, 2))
    finally:
        pre.remove()
        post.remove()
    assert len(fit.points) == 2 * 2 * 7  # prompts x seeds x (steps - 1) consecutive pairs
    assert len(residuals) == 2 * 2 * 8
    measured = []
    for run_start in range(0, len(residuals), 8):
        r = residuals[run_start:run_start + 8]
        measured += [((r[k] - r[k - 1]).abs().mean() / r[k - 1].abs().mean()).item() for k in range(1, 8)]
    assert np.allclose([y for _x, y in fit.points], measured, rtol=1e-4)
    xs, ys = np.array(fit.points).T
    solution, *_ = np.linalg.lstsq(np.vander(xs, 5), ys, rcond=None)
    assert np.allclose(fit.coefficients, solution, rtol=1e-3, atol=1e-6)
    assert fit.profile.threshold_scale > 0


def test_calibrate_command_writes_what_the_teacache_node_uses(comfy, tmp_path, monkeypatch, capsys):
    import json

    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.comfyui.nodes.step_cache import TeaCacheNode
    from imageinference.commands.cli import main
    from imageinference.engines.cache.patch import CONFIG_KEY

    path = tmp_path / "teacache.json"
    monkeypatch.setenv("IMAGEINFERENCE_TEACACHE_CALIBRATION", str(path))
    code = main(["calibrate-teacache", "--model", "test:sd3@1", "--prompt", "a red fox", "--prompt", "a blue boat",
                 "--steps", "6", "--seeds", "1", "--width", "64", "--height", "64", "--write"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "sd3" and report["points"] == 2 * 5 and report["written"] == str(path)
    stored = json.loads(path.read_text())["sd3"]
    assert stored["coefficients"] == report["coefficients"] and stored["thresholdScale"] > 0
    model = AIRModelLoader.execute("test:sd3@1").result[0]
    config = TeaCacheNode.execute(model, teaCacheDistance=0.5, **WIDGETS).result[0].model_options["transformer_options"][
        CONFIG_KEY]
    assert list(config.coefficients) == stored["coefficients"]
    assert config.threshold == pytest.approx(0.5 * stored["thresholdScale"])


def test_heun_steps_are_sampler_steps_not_model_calls(sd3, caplog):
    """Heun calls the model twice per step; the cache counts, windows and caps sampler steps."""
    with caplog.at_level(logging.INFO, logger="imageinference.cache"):
        cap = RunCapture(cached(sd3, "fbCache", 1.0, window=StepWindow(start_step=2, end_step=9),
                                max_consecutive=2))
        run(cap.model, sd3_conds(), cfg=4.5, sampler="heun")
    (r,) = cap.runs
    assert [s for s, _ in r.ledger.decisions] == list(range(STEPS))
    assert r.steps_reported == STEPS
    skipped = r.ledger.skipped
    assert skipped and all(2 <= s < 9 for s in skipped)
    streak = longest = 0
    for _, k in r.ledger.decisions:
        streak = streak + 1 if k else 0
        longest = max(longest, streak)
    assert longest == 2
    assert sum(1 for step, _p, _k in r.forward_log if step == skipped[0]) == 2  # both model calls of the step
    assert any(f"/{STEPS} steps" in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("family_class", ["Flux2", "Chroma"])
def test_models_the_caches_were_not_tuned_for_are_refused(flux, family_class):
    """FLUX.2 and Chroma derive from FLUX.1's model class; the caches refuse them by their exact class."""
    import comfy.model_base

    from imageinference.engines.cache.patch import layout_of

    def instance(cls):
        obj = cls.__new__(cls)
        torch.nn.Module.__init__(obj)
        obj.diffusion_model = flux.model.diffusion_model
        return obj

    assert layout_of(instance(comfy.model_base.Flux)).family == "flux"
    with pytest.raises(ValueError, match=family_class):
        layout_of(instance(getattr(comfy.model_base, family_class)))
    m = flux.clone()
    m.model = instance(getattr(comfy.model_base, family_class))
    from imageinference.comfyui.nodes.step_cache import TeaCacheNode

    with pytest.raises(ContractError) as info:
        TeaCacheNode.execute(m, teaCacheDistance=0.5, **WIDGETS)
    assert info.value.codes == ["unsupportedAcceleratorOptions"]


@pytest.mark.parametrize("kind", KINDS)
def test_one_skips_every_step_the_policy_allows(sd3, kind):
    """At 1.0 the criterion's threshold is infinite: the run computes exactly the policy's floor (first step, last
    step, one step after every cacheMaxConsecutiveSteps skipped), whatever the model's step-to-step change."""
    from imageinference.engines.cache.policy import fewest_computed_steps

    for cap in (1, 3, 5):
        cap_run = RunCapture(cached(sd3, kind, 1.0, max_consecutive=cap))
        run(cap_run.model, sd3_conds(), cfg=4.5)
        (r,) = cap_run.runs
        computed = [s for s, k in r.ledger.decisions if not k]
        assert computed == fewest_computed_steps(r.config.policy, STEPS), (kind, cap)


def test_few_block_warning_at_install_names_teacache(sd3, caplog):
    from imageinference.comfyui.nodes.step_cache import DBCacheNode, FBCacheNode, TeaCacheNode

    with caplog.at_level(logging.WARNING, logger="imageinference.cache"):
        TeaCacheNode.execute(sd3, teaCacheDistance=0.5, **WIDGETS)
        assert not caplog.records
        FBCacheNode.execute(sd3, fbCacheThreshold=0.25, **WIDGETS)
        DBCacheNode.execute(sd3, dbCacheThreshold=0.25, dbCacheSkipInterval=5, **WIDGETS)
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 2 and all("1 of this model's 4 transformer blocks" in t and "teaCache" in t for t in texts)
    assert texts[0].startswith("FBCache") and texts[1].startswith("DBCache F1B0")
