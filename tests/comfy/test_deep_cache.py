"""DeepCache against real ComfyUI sampling with the tiny SD1.5 UNet (and the tiny SDXL-shaped UNet)."""

import logging

import pytest
import torch

from imageinference.contract.errors import ContractError
from imageinference.engines.cache.deepcache import DeepCacheConfig, cached_steps
from imageinference.engines.samplers.windows import StepWindow, step_index

STEPS = 10


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    return AIRModelLoader.execute("test:sd15@1").result[0]


def conds(seed=0, uncond_tokens=77):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, 768, generator=g), {}]], [[torch.randn(1, uncond_tokens, 768, generator=g), {}]]


def run(model, cfg=5.0, steps=STEPS, size=64, sampler="euler", positive=None, negative=None, seed=3):
    import comfy.sample

    pos, neg = conds() if positive is None else (positive, negative)
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "normal", pos, neg, latent, seed=seed,
                               disable_pbar=True)


def deep(model, interval=3, branch=0, **kw):
    from imageinference.engines.cache.deepcache_patch import apply_deep_cache

    return apply_deep_cache(model, DeepCacheConfig(interval, branch, **kw))


class BlockCounter:
    """Counts UNet block executions per forward. ComfyUI runs a block by iterating its layers (never calling the
    block itself), so the hook sits on each block's first layer."""

    def __init__(self, model):
        net = model.get_model_object("diffusion_model")
        self.blocks = [*net.input_blocks, net.middle_block, *net.output_blocks]
        self.forwards = []
        self.handles = [net.input_blocks[0][0].register_forward_pre_hook(self.new_forward)]  # runs first
        self.handles += [b[0].register_forward_pre_hook(self.hook) for b in self.blocks]

    def new_forward(self, *_):
        self.forwards.append(0)

    def hook(self, *_):
        self.forwards[-1] += 1

    def close(self):
        for h in self.handles:
            h.remove()


class RunCapture:
    """Keeps the per-run DeepCache state (a keyed CALC_COND_BATCH wrapper that composes with the cache)."""

    def __init__(self, model):
        import comfy.patcher_extension

        from imageinference.engines.cache.deepcache_patch import RUN_KEY

        self.runs = []
        self.model = model.clone()

        def keep(executor, *args, **kwargs):
            r = args[-1]["transformer_options"].get(RUN_KEY)
            if r is not None and (not self.runs or self.runs[-1] is not r):
                self.runs.append(r)
            return executor(*args, **kwargs)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_capture", keep)


def reference(model, config):
    """DeepCache computed another way: the plain UNet runs every block at every step, and on the steps DeepCache
    caches the feature entering the branch's output block is replaced by the one kept at the last full step."""
    net = model.get_model_object("diffusion_model")
    partner = len(net.output_blocks) - 1 - config.branch
    state = {"kept": {}}

    def patch(h, hsp, topts):
        if topts.get("block") != ("output", partner):
            return h, hsp
        sigmas = [float(s) for s in topts["sample_sigmas"]]
        step = step_index(sigmas, float(topts["sigmas"][0]))
        key = tuple(topts["cond_or_uncond"])
        if step in cached_steps(config, len(sigmas) - 1):
            return state["kept"][key], hsp
        state["kept"][key] = h.clone()
        return h, hsp

    m = model.clone()
    m.set_model_output_block_patch(patch)
    return m


def test_interval_one_is_bit_identical_to_no_cache(sd15):
    base = run(sd15)
    assert torch.equal(run(deep(sd15, interval=1)), base)
    separate = conds(uncond_tokens=70)  # 77 and 70 tokens cannot be batched (lcm rule): separate forwards
    assert torch.equal(run(deep(sd15, interval=1), positive=separate[0], negative=separate[1]),
                       run(sd15, positive=separate[0], negative=separate[1]))


@pytest.mark.parametrize(("interval", "branch"), [(3, 0), (2, 4), (4, 11)])
def test_cached_steps_equal_the_full_unet_fed_the_kept_deep_feature(sd15, interval, branch):
    config = DeepCacheConfig(interval, branch)
    ours = run(deep(sd15, interval, branch))
    assert torch.equal(ours, run(reference(sd15, config)))
    assert not torch.equal(ours, run(sd15))


@pytest.mark.parametrize(("interval", "branch", "window", "schedule"), [
    (3, 0, StepWindow(), "uniform"), (5, 2, StepWindow(), "uniform"), (7, 0, StepWindow(), "uniform"),
    (2, 5, StepWindow(start_step=3, end_step=8), "uniform"), (3, 1, StepWindow(start_percentage=40), "uniform"),
    (3, 1, StepWindow(), "non-uniform")])
def test_cached_steps_run_only_the_branch_blocks_on_the_expected_steps(sd15, interval, branch, window, schedule):
    config = DeepCacheConfig(interval, branch, window, schedule, center=4)
    cap = RunCapture(deep(sd15, interval, branch, window=window, schedule=schedule, center=4))
    counter = BlockCounter(sd15)
    try:
        run(cap.model, cfg=1.0)  # one forward per step
    finally:
        counter.close()
    expected = cached_steps(config, STEPS)
    assert cap.runs[0].ledger.skipped == expected
    assert counter.forwards == [2 * (branch + 1) if step in expected else 25 for step in range(STEPS)]


def test_cond_and_uncond_share_one_decision_even_as_separate_forwards(sd15):
    pos, neg = conds(uncond_tokens=70)
    cap = RunCapture(deep(sd15, 2, 1))
    run(cap.model, positive=pos, negative=neg)
    log = cap.runs[0].forward_log
    by_step = {}
    for step, passes, cached in log:
        by_step.setdefault(step, set()).add((passes, cached))
    assert all(len(v) == 2 and len({c for _p, c in v}) == 1 for v in by_step.values())  # two forwards, one decision
    assert [s for s, v in sorted(by_step.items()) if next(iter(v))[1]] == cached_steps(DeepCacheConfig(2, 1), STEPS)


def test_a_second_order_sampler_shares_one_decision_per_step(sd15):
    """Heun calls the model twice a step (once on the last step). ComfyUI reports a step after its first call, so
    the second call, at the next step's sigma, goes with the next step's decision, as in the step caches."""
    config = DeepCacheConfig(2, 1)
    cap = RunCapture(deep(sd15, 2, 1))
    run(cap.model, cfg=1.0, sampler="heun")
    r = cap.runs[0]
    assert r.ledger.skipped == cached_steps(config, STEPS) and r.steps_reported == STEPS
    steps = [step for step, _passes, _cached in r.forward_log]
    assert steps == [0] + [s for s in range(1, STEPS) for _ in range(2)]
    assert {(step, cached) for step, _p, cached in r.forward_log} == {
        (s, s in cached_steps(config, STEPS)) for s in range(STEPS)}


def test_the_input_is_never_written_and_runs_do_not_share_state(sd15):
    import comfy.patcher_extension

    model = deep(sd15, 3, 0)
    first = run(model)
    run(model, size=128)  # another size in between: state belongs to a run
    assert torch.equal(run(model), first)
    copied = model.clone()

    def copy_input(executor, x, *args, **kwargs):
        return executor(x.clone(), *args, **kwargs)

    dm = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    copied.wrappers[dm] = {"copy_input": [copy_input], **copied.wrappers[dm]}  # outermost
    assert torch.equal(run(copied), first)


def test_controlnet_residuals_of_the_shallow_blocks_still_apply(comfy, sd15, caplog):
    from imageinference.comfyui.nodes.controlnet import ControlNetApply

    pos, neg = conds()
    guide = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    widgets = dict(model="(typed in below)", air="test:cn@1", weight=1.0, startStep=-1, endStep=-1,
                   startStepPercentage=-1, endStepPercentage=-1, controlMode="balanced")
    pos, neg = ControlNetApply.execute(pos, neg, guide, **widgets).result[:2]
    config = DeepCacheConfig(3, 2)
    with caplog.at_level(logging.WARNING):
        ours = run(deep(sd15, 3, 2), positive=pos, negative=neg)
    assert not [r for r in caplog.records if "control could not be applied" in r.getMessage()]
    assert torch.equal(ours, run(reference(sd15, config), positive=pos, negative=neg))


def test_the_node_applies_the_request_fields(sd15):
    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode

    widgets = dict(deepCacheInterval=2, deepCacheBranchId=3, cacheMaxConsecutiveSteps=1, cacheStartStep=2,
                   cacheStartStepPercentage=-1, cacheEndStep=-1, cacheEndStepPercentage=-1)
    model = DeepCacheNode.execute(sd15, **widgets).result[0]
    config = DeepCacheConfig(2, 3, StepWindow(start_step=2))
    assert torch.equal(run(model), run(deep(sd15, 2, 3, window=StepWindow(start_step=2))))
    assert torch.equal(run(model), run(reference(sd15, config)))


def test_the_node_honours_an_interval_longer_than_cache_max_consecutive_steps(sd15):
    """deepCacheInterval 7 with cacheMaxConsecutiveSteps 3 (the default) caches 6 steps in a row: full steps 0 and
    7 of 10, as DeepCache's `range(0, steps, interval)` says (it used to stop at 3 in a row, i.e. interval 4)."""
    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode

    cap = RunCapture(DeepCacheNode.execute(sd15, **dict(WIDGETS, deepCacheInterval=7)).result[0])
    run(cap.model, cfg=1.0)
    assert cap.runs[0].ledger.skipped == [1, 2, 3, 4, 5, 6, 8, 9]


def test_the_node_offers_deepcaches_non_uniform_schedule(sd15):
    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode

    node = DeepCacheNode.execute(sd15, **dict(WIDGETS, deepCacheInterval=3, deepCacheSchedule="non-uniform",
                                              nonUniformCenter=4, nonUniformPower=1.4)).result[0]
    config = DeepCacheConfig(3, 0, schedule="non-uniform", center=4, power=1.4)
    cap = RunCapture(node)
    out = run(cap.model)
    assert cap.runs[0].ledger.skipped == cached_steps(config, STEPS) != cached_steps(DeepCacheConfig(3), STEPS)
    assert torch.equal(out, run(reference(sd15, config)))


def test_it_logs_what_it_cached(sd15, caplog):
    with caplog.at_level(logging.INFO, logger="imageinference.cache"):
        run(deep(sd15, 3, 0), cfg=1.0)
    line, = [r.getMessage() for r in caplog.records if r.getMessage().startswith("DeepCache")]
    assert line.startswith("DeepCache (interval 3, branch 0): 6/10 steps ran the shallow branch only (6 of 10 UNet "
                           "forwards), 112/250 UNet block calls")


WIDGETS = dict(deepCacheInterval=3, deepCacheBranchId=0, cacheMaxConsecutiveSteps=3, cacheStartStep=-1,
               cacheStartStepPercentage=-1, cacheEndStep=-1, cacheEndStepPercentage=-1)


@pytest.mark.parametrize(("change", "code", "parameter"), [
    ({"deepCacheInterval": 0}, "invalidDeepCacheInterval", "acceleratorOptions.deepCacheInterval"),
    ({"deepCacheBranchId": 12}, "invalidDeepCacheBranchId", "acceleratorOptions.deepCacheBranchId"),
    ({"deepCacheBranchId": -1}, "invalidDeepCacheBranchId", "acceleratorOptions.deepCacheBranchId"),
    ({"cacheMaxConsecutiveSteps": 0}, "invalidCacheMaxConsecutiveSteps", "acceleratorOptions.cacheMaxConsecutiveSteps"),
    ({"cacheStartStep": 5, "cacheEndStep": 3}, "invalidCacheEndStep", "acceleratorOptions.cacheEndStep"),
    ({"cacheStartStep": 1, "cacheStartStepPercentage": 10}, "conflictCacheStartStepPercentage",
     "acceleratorOptions.cacheStartStepPercentage"),
])
def test_bad_widgets_are_contract_errors_naming_the_parameter(sd15, change, code, parameter):
    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode

    with pytest.raises(ContractError) as info:
        DeepCacheNode.execute(sd15, **dict(WIDGETS, **change))
    assert code in info.value.codes and parameter in info.value.parameters


def test_non_unet_models_and_a_second_cache_are_refused(comfy, sd15, tiny_models_root):
    import comfy.sd

    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode
    from imageinference.testing.tiny_models import TINY

    sd3 = comfy.sd.load_diffusion_model(str(TINY["sd3"].path(tiny_models_root)))
    with pytest.raises(ContractError) as info:
        DeepCacheNode.execute(sd3, **WIDGETS)
    assert info.value.codes == ["unsupportedAcceleratorOptions"]
    assert info.value.parameters == ["acceleratorOptions.deepCache"]
    with pytest.raises(ContractError) as info:
        DeepCacheNode.execute(DeepCacheNode.execute(sd15, **WIDGETS).result[0], **WIDGETS)
    assert info.value.codes == ["conflictingAcceleratorOptions"]


def test_sdxl_shaped_unet_has_nine_branches(comfy):
    import comfy.sd

    from imageinference.comfyui.nodes.deep_cache import DeepCacheNode
    from imageinference.testing.tiny_extras import TINY_EXTRAS, ensure_tiny_extras

    root = ensure_tiny_extras(["sdxl_unet"])
    sdxl = comfy.sd.load_diffusion_model(str(TINY_EXTRAS["sdxl_unet"].path(root)))
    with pytest.raises(ContractError) as info:
        DeepCacheNode.execute(sdxl, **dict(WIDGETS, deepCacheBranchId=9))
    assert "0-8" in info.value.errors[0].message
    g = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
    neg = [[torch.randn(1, 77, 2048, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
    config = DeepCacheConfig(3, 8)
    ours = run(DeepCacheNode.execute(sdxl, **dict(WIDGETS, deepCacheBranchId=8)).result[0], positive=pos,
               negative=neg, steps=6)
    assert torch.equal(ours, run(reference(sdxl, config), positive=pos, negative=neg, steps=6))
