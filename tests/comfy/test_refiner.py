"""The refiner hand-off against real ComfyUI: a tiny SDXL-shaped base UNet and a tiny SDXL-refiner-shaped UNet
(ComfyUI detects them as SDXL and SDXLRefiner), conditioning tensors of their shapes (their CLIP-G text encoder
is fixed at 694 M parameters in ComfyUI, too large to build here), and the tiny SD1.5 for ControlNet and the
node graph."""

import json

import pytest
import torch

from imageinference.contract.errors import ContractError

STEPS = 10


@pytest.fixture(scope="module")
def xl(comfy):
    import comfy.sd

    from imageinference.testing.tiny_extras import TINY_EXTRAS, ensure_tiny_extras

    root = ensure_tiny_extras(["sdxl_unet", "sdxl_refiner_unet"])
    base = comfy.sd.load_diffusion_model(str(TINY_EXTRAS["sdxl_unet"].path(root)))
    refiner = comfy.sd.load_diffusion_model(str(TINY_EXTRAS["sdxl_refiner_unet"].path(root)))
    assert type(base.model).__name__ == "SDXL" and type(refiner.model).__name__ == "SDXLRefiner"
    return base, refiner


def cond(width, seed):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 77, width, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]


BASE_CONDS = (cond(2048, 1), cond(2048, 2))
REFINER_CONDS = (cond(1280, 3), cond(1280, 4))


def options(refiner, start=None, pct=None, conds=REFINER_CONDS):
    from imageinference.engines.samplers.refiner import RefinerOptions

    return RefinerOptions(refiner, conds[0], conds[1], start, pct)


def ours(base, opts, steps=STEPS, cfg=5.0, sampler="euler", scheduler="karras", denoise=1.0, latent=None,
         conds=BASE_CONDS, seed=7):
    import comfy.sample

    from imageinference.engines.samplers.refiner import sample_with_refiner

    latent = torch.zeros(1, 4, 8, 8) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed)
    return sample_with_refiner(base, noise, steps, cfg, sampler, scheduler, conds[0], conds[1], latent, opts,
                               denoise=denoise, disable_pbar=True, seed=seed)


class SigmaRecorder:
    """The sigma of every evaluation of a model (a keyed APPLY_MODEL wrapper on a clone)."""

    def __init__(self, model):
        import comfy.patcher_extension

        self.sigmas = []
        self.model = model.clone()

        def record(executor, x, t, *args, **kwargs):
            self.sigmas.append(float(t.flatten()[0]))
            return executor(x, t, *args, **kwargs)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_sigmas", record)


def schedule(model, name, steps):
    import comfy.samplers

    return [float(s) for s in comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), name, steps)]


def test_the_hand_off_is_core_ksampler_advanced_twice_bit_for_bit(comfy, xl):
    base, refiner = xl
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    for sampler, scheduler in (("euler", "karras"), ("dpmpp_2m", "normal"), ("euler_ancestral", "simple")):
        first = comfy.KSamplerAdvanced().sample(base, "enable", 7, STEPS, 5.0, sampler, scheduler, *BASE_CONDS,
                                                latent, 0, 6, "enable")[0]
        core = comfy.KSamplerAdvanced().sample(refiner, "disable", 7, STEPS, 5.0, sampler, scheduler, *REFINER_CONDS,
                                               first, 6, 10000, "disable")[0]["samples"]
        assert torch.equal(ours(base, options(refiner, start=6), sampler=sampler, scheduler=scheduler), core), sampler


@pytest.mark.parametrize(("start", "pct", "first"), [(6, None, 6), (2, None, 2), (None, 70, 7), (None, 34, 3)])
def test_the_refiner_takes_over_on_the_exact_sigma_the_base_stops_at(xl, start, pct, first):
    base, refiner = xl
    b, r = SigmaRecorder(base), SigmaRecorder(refiner)
    ours(b.model, options(r.model, start, pct), conds=BASE_CONDS)
    sigmas = schedule(base, "karras", STEPS)  # the schedule, computed on its own
    # euler evaluates once per step (cond and uncond batched): the base on steps 0..first-1, the refiner on the rest
    assert b.sigmas == pytest.approx(sigmas[:first], rel=1e-6)
    assert r.sigmas == pytest.approx(sigmas[first:-1], rel=1e-6)


def test_with_img2img_strength_the_start_counts_the_steps_that_run(xl):
    base, refiner = xl
    b, r = SigmaRecorder(base), SigmaRecorder(refiner)
    ours(b.model, options(r.model, start=4), denoise=0.6, latent=torch.randn(1, 4, 8, 8) * 0.3)
    full = schedule(base, "karras", int(STEPS / 0.6))
    run = full[-(STEPS + 1):]  # KSampler's img2img schedule: the last `steps` of a longer one
    assert b.sigmas == pytest.approx(run[:4], rel=1e-6)
    assert r.sigmas == pytest.approx(run[4:-1], rel=1e-6)


def test_start_at_the_last_step_leaves_nothing_to_the_refiner(comfy, xl):
    import comfy.sample

    base, refiner = xl
    r = SigmaRecorder(refiner)
    out = ours(base, options(r.model, start=STEPS))
    latent = torch.zeros(1, 4, 8, 8)
    plain = comfy.sample.sample(base, comfy.sample.prepare_noise(latent, 7), STEPS, 5.0, "euler", "karras",
                                *BASE_CONDS, latent, seed=7, disable_pbar=True)
    assert r.sigmas == [] and torch.equal(out, plain)
    assert not torch.equal(ours(base, options(refiner, start=STEPS - 1)), plain)


def test_cfg_at_most_one_ignores_the_refiners_negative_prompt(xl):
    base, refiner = xl
    other = (REFINER_CONDS[0], cond(1280, 99))
    assert torch.equal(ours(base, options(refiner, 5), cfg=1.0), ours(base, options(refiner, 5, conds=other), cfg=1.0))
    assert not torch.equal(ours(base, options(refiner, 5)), ours(base, options(refiner, 5, conds=other)))


def test_start_beyond_the_steps_and_another_latent_space_are_contract_errors(comfy, xl):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    base, refiner = xl
    with pytest.raises(ContractError) as info:
        ours(base, options(refiner, start=STEPS + 1))
    assert (info.value.codes, info.value.parameters) == (["invalidStartStep"], ["refiner.startStep"])
    sd15 = AIRModelLoader.execute("test:sd15@1").result[0]
    with pytest.raises(ContractError) as info:
        ours(sd15, options(refiner, start=5), conds=(cond(768, 1), cond(768, 2)))
    assert (info.value.codes, info.value.parameters) == (["invalidModel"], ["refiner.model"])


@pytest.mark.parametrize(("start", "pct", "code", "parameter"), [
    (-1, -1, "missingStartStep", "refiner.startStep"),
    (10, 50, "conflictStartStep", "refiner.startStep"),
    (1, -1, "invalidStartStep", "refiner.startStep"),
    (101, -1, "invalidStartStep", "refiner.startStep"),
    (-1, 0, "invalidStartStepPercentage", "refiner.startStepPercentage"),
    (-1, 100, "invalidStartStepPercentage", "refiner.startStepPercentage"),
])
def test_the_node_refuses_bad_start_fields_naming_the_parameter(xl, start, pct, code, parameter):
    from imageinference.comfyui.nodes.refiner import RefinerNode

    _base, refiner = xl
    with pytest.raises(ContractError) as info:
        RefinerNode.execute(refiner, *REFINER_CONDS, start, pct)
    assert (info.value.codes, info.value.parameters) == ([code], [parameter])


def test_the_node_carries_model_conditioning_and_start(xl):
    from imageinference.comfyui.nodes.refiner import RefinerNode

    base, refiner = xl
    opts = RefinerNode.execute(refiner, *REFINER_CONDS, -1, 60).result[0]
    assert (opts.start_step, opts.start_percentage, opts.start(STEPS)) == (None, 60, 6)
    assert torch.equal(ours(base, opts), ours(base, options(refiner, start=6)))


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader
    from imageinference.comfyui.nodes.prompt import PromptNode

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos, neg = PromptNode.execute(clip, "a lighthouse", "blurry", "none", -1).result
    return model, clip, vae, pos, neg


def test_controlnet_step_windows_of_the_base_are_steps_of_the_whole_run(sd15):
    """endStepPercentage 50 of 10 steps is step 5 of the run, not of the base's 7 steps (where it would be 4)."""
    from imageinference.comfyui.nodes.controlnet import ControlNetApply

    model, _clip, _vae, pos, neg = sd15
    guide = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(4))
    widgets = dict(model="(typed in below)", air="test:cn@1", weight=1.0, startStep=-1, endStep=-1,
                   startStepPercentage=-1, endStepPercentage=-1, controlMode="balanced")
    by_pct = ControlNetApply.execute(pos, neg, guide, **dict(widgets, endStepPercentage=50)).result[:2]
    by_step = ControlNetApply.execute(pos, neg, guide, **dict(widgets, endStep=5)).result[:2]
    by_base_steps = ControlNetApply.execute(pos, neg, guide, **dict(widgets, endStep=4)).result[:2]
    opts = options(model, start=7, conds=(pos, neg))
    a, b, c = (ours(model, opts, conds=conds, scheduler="normal") for conds in (by_pct, by_step, by_base_steps))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_the_graph_nodes_run_the_refiner_on_sd15_shapes(comfy, sd15):
    """Loader + Prompt for the refiner, the Refiner node, the sampler's `refiner` input (SD1.5 shapes: the tiny
    SDXL pair has no text encoder to build the graph's prompts with)."""
    from imageinference.comfyui.nodes.image_inference import ImageInference
    from imageinference.comfyui.nodes.refiner import RefinerNode

    assert "refiner" in [i.id for i in ImageInference.define_schema().inputs]
    model, _clip, vae, pos, neg = sd15
    args = dict(width=64, height=64, seed=5, steps=6, scheduler="Euler", CFGScale=5.0, numberResults=1,
                strength=0.8, maskMargin=0)
    plain, seeds = ImageInference.execute(model, vae, pos, neg, **args).result[:2]
    opts = RefinerNode.execute(model, pos, neg, 4, -1).result[0]
    refined, seeds2 = ImageInference.execute(model, vae, pos, neg, refiner=opts, **args).result[:2]
    assert json.loads(seeds) == json.loads(seeds2) == [5]
    # the same model as its own refiner: only the hand-off's latent round trip (scale out and back in) differs
    assert torch.allclose(refined, plain, atol=1e-4) and refined.shape == plain.shape
