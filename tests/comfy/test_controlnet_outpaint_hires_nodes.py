"""ControlNet windows and modes, outpaint, hires fix against real ComfyUI and the tiny models."""


import pytest
import torch

from imageinference.contract.errors import ContractError

W = H = 64


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.comfyui.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a lighthouse")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, vae, pos, neg


@pytest.fixture(scope="module")
def guide():
    g = torch.Generator().manual_seed(3)
    return torch.rand((1, H, W, 3), generator=g)


def cn(pos, neg, guide, **kw):
    from imageinference.comfyui.nodes.controlnet import ControlNetApply

    args = dict(model="test:cn@1", weight=1.0, startStep=-1, endStep=-1, startStepPercentage=-1,
                endStepPercentage=-1, controlMode="balanced")
    args.update(kw)
    return ControlNetApply.execute(pos, neg, guide, **args).result


def sample(sd15, pos=None, neg=None, steps=4, scheduler="Euler", model=None, **kw):
    from imageinference.comfyui.nodes.image_inference import ImageInference

    m, vae, p, n = sd15
    args = dict(width=W, height=H, seed=11, steps=steps, scheduler=scheduler, CFGScale=5.0, numberResults=1,
                strength=0.8, maskMargin=0)
    args.update(kw)
    return ImageInference.execute(model or m, vae, pos or p, neg or n, **args).result[0]


def test_weight_zero_equals_no_controlnet(sd15, guide):
    _m, _v, pos, neg = sd15
    p, n = cn(pos, neg, guide, weight=0.0)
    assert torch.equal(sample(sd15, p, n), sample(sd15))


def test_window_ending_before_the_first_step_equals_no_controlnet(sd15, guide):
    _m, _v, pos, neg = sd15
    base = sample(sd15)
    p, n = cn(pos, neg, guide, endStepPercentage=1)  # round(1% of 4 steps) = 0: no step in the window
    assert torch.equal(sample(sd15, p, n), base)
    p, n = cn(pos, neg, guide)
    assert not torch.equal(sample(sd15, p, n), base)


class PassRecorder:
    """Records, for every model call, which passes it carried and whether a ControlNet result was applied."""

    def __init__(self):
        self.calls = []

    def __call__(self, apply_model, args):
        c = args["c"]
        self.calls.append((list(args["cond_or_uncond"]), c.get("control") is not None))
        return apply_model(args["input"], args["timestep"], **c)


def recorded(sd15, pos, neg):
    m = sd15[0].clone()
    rec = PassRecorder()
    m.set_model_unet_function_wrapper(rec)
    sample(sd15, pos, neg, model=m)
    return rec.calls


def test_controlnet_mode_leaves_the_unconditional_pass_untouched(sd15, guide):
    _m, _v, pos, neg = sd15
    calls = recorded(sd15, *cn(pos, neg, guide, controlMode="controlnet"))
    uncond = [has for passes, has in calls if passes == [1]]
    cond = [has for passes, has in calls if passes == [0]]
    assert uncond and not any(uncond)
    assert cond and all(cond)
    balanced = recorded(sd15, *cn(pos, neg, guide, controlMode="balanced"))
    assert all(has for passes, has in balanced if 1 in passes)


def karras(sigma_min, sigma_max, n, rho=7.0):
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)] + [0.0]


def simple(table, n):
    """ComfyUI's 'simple' schedule from the model's sigma table, computed here from its definition."""
    step = len(table) / n
    return [float(table[-(1 + int(i * step))]) for i in range(n)] + [0.0]


class ControlRecorder:
    """For every model call: its sigma and whether a ControlNet result reached the model."""

    def __init__(self):
        self.calls = []

    def __call__(self, apply_model, args):
        self.calls.append((float(args["timestep"][0]), args["c"].get("control") is not None))
        return apply_model(args["input"], args["timestep"], **args["c"])

    def active_steps(self, sigmas):
        """Steps (by position in an independently computed schedule) on which the control acted."""
        steps = {min(range(len(sigmas) - 1), key=lambda i: abs(sigmas[i] - s)) for s, on in self.calls if on}
        return sorted(steps)


def run_recorded(sd15, pos, neg, steps, scheduler):
    m = sd15[0].clone()
    rec = ControlRecorder()
    m.set_model_unet_function_wrapper(rec)
    sample(sd15, pos, neg, model=m, steps=steps, scheduler=scheduler)
    return rec


def core_ksampler_recorded(comfy, sd15, pos, neg, steps, scheduler):
    m = sd15[0].clone()
    rec = ControlRecorder()
    m.set_model_unet_function_wrapper(rec)
    latent = {"samples": torch.zeros(1, 4, H // 8, W // 8)}
    comfy.KSampler().sample(m, 3, steps, 5.0, "euler", scheduler, pos, neg, latent)
    return rec


def schedule_of(model, schedule, steps):
    ms = model.get_model_object("model_sampling")
    return (karras(float(ms.sigma_min), float(ms.sigma_max), steps) if schedule == "karras"
            else simple(ms.sigmas.tolist(), steps))


@pytest.mark.parametrize(("scheduler", "schedule"), [("Euler Karras", "karras"),
                                                     ("FlowMatchEulerDiscreteScheduler", "simple")])
@pytest.mark.parametrize(("start", "end"), [(0, 3), (2, 7), (5, 10), (1, 2), (9, 10)])
def test_step_windows_act_on_the_exact_steps_of_the_schedule(sd15, guide, scheduler, schedule, start, end):
    """The control acts on steps start..end-1 of the sigmas the sampler really runs (computed independently
    here from each schedule's definition), whatever the schedule's spacing."""
    model, _v, pos, neg = sd15
    p, n = cn(pos, neg, guide, startStep=start, endStep=end)
    rec = run_recorded(sd15, p, n, 10, scheduler)
    assert rec.active_steps(schedule_of(model, schedule, 10)) == list(range(start, end))


def test_a_window_means_the_same_to_every_later_sampler(comfy, sd15, guide):
    """Windows are decided per call from the run's own sigmas: after a 10-step run of the pack's sampler, the
    same conditioning under core KSampler with 6 steps (karras) acts on steps 2..4 of those 6, and a 10-step run
    afterwards still acts on 2..4 of its 10."""
    model, _v, pos, neg = sd15
    p, n = cn(pos, neg, guide, startStep=2, endStep=5)
    first = run_recorded(sd15, p, n, 10, "Euler Karras")
    assert first.active_steps(schedule_of(model, "karras", 10)) == [2, 3, 4]
    core = core_ksampler_recorded(comfy, sd15, p, n, 6, "karras")
    assert core.active_steps(schedule_of(model, "karras", 6)) == [2, 3, 4]
    again = run_recorded(sd15, p, n, 10, "FlowMatchEulerDiscreteScheduler")
    assert again.active_steps(schedule_of(model, "simple", 10)) == [2, 3, 4]


def test_percentage_windows_under_core_ksampler_are_steps_too(comfy, sd15, guide):
    """startStepPercentage 50 of 8 steps is step 4 under core KSampler as under the pack's sampler."""
    model, _v, pos, neg = sd15
    p, n = cn(pos, neg, guide, startStepPercentage=50)
    core = core_ksampler_recorded(comfy, sd15, p, n, 8, "karras")
    assert core.active_steps(schedule_of(model, "karras", 8)) == [4, 5, 6, 7]


def test_prompt_mode_soft_weights(sd15, guide):
    _m, _v, pos, neg = sd15
    p, _n = cn(pos, neg, guide, controlMode="prompt", weight=0.5)
    control = p[0][1]["control"]
    assert control.imageinference_soft and control.copy().imageinference_soft
    ones = {"input": [torch.ones(1) for _ in range(12)], "middle": [torch.ones(1)], "output": []}
    merged = control.control_merge(ones, None, None)
    expected = [0.5 * 0.825 ** (12 - i) for i in range(13)]
    got = [float(x) for x in merged["input"] + merged["middle"]]
    assert got == pytest.approx(expected, rel=1e-6)
    balanced = sample(sd15, *cn(pos, neg, guide))
    assert not torch.equal(sample(sd15, p, _n), balanced)


def test_controlnets_compose(sd15, guide):
    _m, _v, pos, neg = sd15
    one = cn(pos, neg, guide)
    two = cn(*one, torch.flip(guide, dims=[2]), weight=0.7)
    chain = two[0][0][1]["control"]
    assert chain.previous_controlnet is one[0][0][1]["control"]
    assert not torch.equal(sample(sd15, *two), sample(sd15, *one))


def test_window_widgets_follow_the_contract():
    from imageinference.comfyui.nodes.controlnet import window_from_widgets

    with pytest.raises(ContractError) as info:
        window_from_widgets(2, -1, 10, -1)
    assert info.value.codes == ["conflictStartStepPercentage"]
    with pytest.raises(ContractError):
        window_from_widgets(5, 3, -1, -1)


# ---------------------------------------------------------------- outpaint

def test_outpaint_keeps_original_pixels_and_checks_the_size(sd15):
    from imageinference.comfyui.nodes.outpaint import OutpaintNode

    g = torch.Generator().manual_seed(5)
    seed = torch.rand((1, 64, 64, 3), generator=g)
    op = OutpaintNode.execute(top=0, right=64, bottom=64, left=0, blur=8).result[0]
    out = sample(sd15, width=128, height=128, seedImage=seed, outpaint=op, strength=1.0)
    assert out.shape == (1, 128, 128, 3)
    # away from the feather (8 px from the seams) the seed image is untouched
    assert torch.equal(out[0, :56, :56], seed[0, :56, :56])
    assert (out[0, 64:, 64:] - 0.5).abs().mean() > 0  # new area generated
    with pytest.raises(ContractError) as info:
        sample(sd15, width=192, height=128, seedImage=seed, outpaint=op)
    assert info.value.codes == ["invalidWidth"] and "64x64" in info.value.errors[0].message
    with pytest.raises(ContractError):
        OutpaintNode.execute(top=32, right=0, bottom=0, left=0, blur=0)
    with pytest.raises(ContractError):
        OutpaintNode.execute(top=0, right=0, bottom=0, left=0, blur=0)


def test_outpaint_mask_feathers_into_the_original():
    from imageinference.engines.samplers.outpaint import pad_canvas

    img = torch.rand((1, 16, 16, 3))
    canvas, mask = pad_canvas(img, 8, 0, 0, 0, 4)
    assert canvas.shape == (1, 24, 16, 3) and torch.equal(canvas[0, 8:], img[0])
    assert torch.equal(canvas[0, 0], img[0, 0])  # edge repeated
    column = mask[0, :, 5].tolist()
    assert column[:8] == [1.0] * 8
    assert column[8:12] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    assert column[12:] == [0.0] * 12


# ---------------------------------------------------------------- hires fix

def test_first_pass_size_rule():
    from imageinference.engines.samplers.sizes import first_pass_size

    assert first_pass_size(1024, 1024, 512 * 512) == (512, 512)
    assert first_pass_size(2048, 1024, 1024 * 1024) == (1024, 512)
    assert first_pass_size(1024, 1536, 1024 * 1024) == (512, 768)
    assert first_pass_size(128, 128, 512 * 512) == (64, 64)
    w, h = first_pass_size(1536, 1536, 1024 * 1024)
    assert w * h <= 1024 * 1024 and w % 64 == 0 and (w, h) == (768, 768)


def test_hires_fix_final_size_and_smaller_first_pass(sd15):
    from imageinference.comfyui.nodes.hires_fix import HiresFixNode

    hires = HiresFixNode.execute("runware:504@1", 2, 0.5, "4").result[0]
    m = sd15[0].clone()
    shapes = []

    def record(apply_model, args):
        shapes.append(tuple(args["input"].shape[-2:]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(record)
    out = sample(sd15, model=m, width=128, height=128, hiresFix=hires, steps=3)
    assert out.shape == (1, 128, 128, 3)
    assert (8, 8) in shapes and (16, 16) in shapes  # latent 64px first pass, then 128px second pass
    assert shapes.index((8, 8)) < shapes.index((16, 16))


def test_hires_strength_zero_returns_the_upscaled_first_pass_re_encoded(comfy, sd15):
    from imageinference.comfyui.nodes.hires_fix import HiresFixNode
    from imageinference.engines.samplers.hires import upscale_image
    from imageinference.engines.samplers.passes import fit

    hires = HiresFixNode.execute("runware:504@1", 2, 0.0, "4").result[0]
    out = sample(sd15, width=128, height=128, hiresFix=hires, steps=3)
    first = sample(sd15, width=64, height=64, steps=3)
    vae = sd15[1]
    expected = vae.decode(vae.encode(fit(upscale_image(hires.upscaler, first), 128, 128)))
    assert torch.allclose(out, expected, atol=1e-5)


def test_tiled_upscale_matches_untiled(sd15):
    from imageinference.comfyui.nodes.hires_fix import HiresFixNode
    from imageinference.engines.samplers.hires import upscale_image

    up = HiresFixNode.execute("runware:504@1", 0, -1.0, "4").result[0].upscaler
    img = torch.rand((1, 96, 80, 3), generator=torch.Generator().manual_seed(1))
    whole = upscale_image(up, img, tile=512)
    tiled = upscale_image(up, img, tile=48, overlap=16)
    assert whole.shape == (1, 384, 320, 3)
    assert (whole - tiled).abs().mean() < 0.02


def test_hires_defaults_for_true(sd15):
    from imageinference.comfyui.nodes.hires_fix import DEFAULTS, HiresFixNode

    opts = HiresFixNode.execute(DEFAULTS, 0, -1.0, "4").result[0]
    assert (opts.air, opts.steps, opts.strength, opts.explicit) == ("runware:504@1", None, None, False)
    # `hiresFix: true` samples exactly as RealESRGAN x4plus, the request's steps and strength 0.5
    explicit = HiresFixNode.execute("runware:504@1", 3, 0.5, "4").result[0]
    by_default = sample(sd15, width=128, height=128, hiresFix=opts, steps=3)
    assert torch.equal(by_default, sample(sd15, width=128, height=128, hiresFix=explicit, steps=3))
    other = HiresFixNode.execute("runware:504@1", 3, 0.3, "4").result[0]
    assert not torch.equal(by_default, sample(sd15, width=128, height=128, hiresFix=other, steps=3))


@pytest.mark.parametrize(("start", "end"), [(0.2, 0.6), (0.0, 0.35), (0.5, 1.0)])
def test_core_percent_windows_export_to_the_steps_core_runs_them_on(comfy, sd15, guide, start, end):
    """Export converts a core ControlNet's noise-range fractions through the sampler's real sigmas: the exported
    step window is exactly the steps on which core KSampler applied the control."""
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.samplers.sigma_oracle import sigma_oracle
    from imageinference.interop.exporter import export_prompt

    model, _v, pos, neg = sd15
    control = comfy.ControlNetLoader().load_controlnet("tiny_sd15_controlnet.safetensors")[0]
    p, n = comfy.ControlNetApplyAdvanced().apply_controlnet(pos, neg, control, guide, 1.0, start, end)[:2]
    core = core_ksampler_recorded(comfy, sd15, p, n, 10, "karras")
    ran_on = core.active_steps(schedule_of(model, "karras", 10))
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny_sd15.safetensors"}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a lighthouse"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "ImageInferenceLoadImage", "inputs": {"image": "59a2edc2-45e6-429f-be5f-7ded59b92046",
                                                                  "role": "guideImage"}},
        "5": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "tiny_sd15_controlnet.safetensors"}},
        "6": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["5", 0], "image": ["4", 0],
            "strength": 1.0, "start_percent": start, "end_percent": end}},
        "7": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["6", 0], "negative": ["6", 1], "latent_image": ["7", 0], "seed": 3,
            "steps": 10, "cfg": 5.0, "sampler_name": "euler", "scheduler": "karras", "denoise": 1.0}},
        "9": {"class_type": "VAEDecode", "inputs": {"samples": ["8", 0], "vae": ["1", 2]}},
        "10": {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "x"}},
    }
    catalog = Catalog.load()
    (entry,) = export_prompt(graph, catalog, sigma_oracle=sigma_oracle(catalog)).request["controlNet"]
    exported = list(range(entry.get("startStep", 0), entry.get("endStep", 10)))
    assert ran_on and exported == ran_on
