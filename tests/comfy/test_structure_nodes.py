"""ControlNet windows and modes, outpaint, hires fix against real ComfyUI and the tiny models."""

import json
import math

import pytest
import torch

from imageinference.schema.errors import ContractError

W = H = 64


@pytest.fixture(scope="module")
def sd15(comfy):
    from imageinference.nodes.model_loader import AIRModelLoader

    model, clip, vae = AIRModelLoader.execute("test:sd15@1").result
    pos = comfy.CLIPTextEncode().encode(clip, "a lighthouse")[0]
    neg = comfy.CLIPTextEncode().encode(clip, "blurry")[0]
    return model, vae, pos, neg


@pytest.fixture(scope="module")
def guide():
    g = torch.Generator().manual_seed(3)
    return torch.rand((1, H, W, 3), generator=g)


def cn(pos, neg, guide, **kw):
    from imageinference.nodes.controlnet import ControlNetApply

    args = dict(model="test:cn@1", weight=1.0, startStep=-1, endStep=-1, startStepPercentage=-1,
                endStepPercentage=-1, controlMode="balanced")
    args.update(kw)
    return ControlNetApply.execute(pos, neg, guide, **args).result


def sample(sd15, pos=None, neg=None, steps=4, scheduler="Euler", model=None, **kw):
    from imageinference.nodes.image_inference import ImageInference

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


@pytest.mark.parametrize("schedule", ["karras", "simple"])
@pytest.mark.parametrize(("start", "end"), [(0, 3), (2, 7), (5, 10), (1, 2), (9, 10)])
def test_step_windows_use_the_exact_sigmas_of_the_schedule(sd15, guide, schedule, start, end):
    from imageinference.samplers.control import resolve_windows

    model, _v, pos, neg = sd15
    ms = model.get_model_object("model_sampling")
    steps = 10
    sigmas = (karras(float(ms.sigma_min), float(ms.sigma_max), steps) if schedule == "karras"
              else simple(ms.sigmas.tolist(), steps))
    p, _n = cn(pos, neg, guide, startStep=start, endStep=end)
    resolve_windows(model, sigmas, p)
    control = p[0][1]["control"]
    control.pre_run(model.model, ms.percent_to_sigma)  # as the sampler calls it
    upper, lower = control.timestep_range
    active = [i for i, s in enumerate(sigmas[:-1]) if lower <= s <= upper]
    assert active == list(range(start, end))


def test_prompt_mode_soft_weights(sd15, guide):
    from imageinference.samplers.control import _soft_class

    _m, _v, pos, neg = sd15
    p, _n = cn(pos, neg, guide, controlMode="prompt", weight=0.5)
    control = p[0][1]["control"]
    assert type(control).__name__.startswith("SoftWeighted")
    ones = {"input": [torch.ones(1) for _ in range(12)], "middle": [torch.ones(1)], "output": []}
    merged = control.control_merge(ones, None, None)
    expected = [0.5 * 0.825 ** (12 - i) for i in range(13)]
    got = [float(x) for x in merged["input"] + merged["middle"]]
    assert got == pytest.approx(expected, rel=1e-6)
    assert _soft_class(type(control).__mro__[1]) is type(control)
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
    from imageinference.nodes.controlnet import window_from_widgets

    with pytest.raises(ContractError) as info:
        window_from_widgets(2, -1, 10, -1)
    assert info.value.codes == ["conflictStartStepPercentage"]
    with pytest.raises(ContractError):
        window_from_widgets(5, 3, -1, -1)


# ---------------------------------------------------------------- outpaint

def test_outpaint_keeps_original_pixels_and_checks_the_size(sd15):
    from imageinference.nodes.outpaint import OutpaintNode

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
    from imageinference.samplers.outpaint import pad_canvas

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
    from imageinference.samplers.sizes import first_pass_size

    assert first_pass_size(1024, 1024, 512 * 512) == (512, 512)
    assert first_pass_size(2048, 1024, 1024 * 1024) == (1024, 512)
    assert first_pass_size(1024, 1536, 1024 * 1024) == (512, 768)
    assert first_pass_size(128, 128, 512 * 512) == (64, 64)
    w, h = first_pass_size(1536, 1536, 1024 * 1024)
    assert w * h <= 1024 * 1024 and w % 64 == 0 and (w, h) == (768, 768)


def test_hires_fix_final_size_and_smaller_first_pass(sd15):
    from imageinference.nodes.hires_fix import HiresFixNode

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
    from imageinference.nodes.hires_fix import HiresFixNode
    from imageinference.samplers.hires import upscale_image
    from imageinference.samplers.passes import fit

    hires = HiresFixNode.execute("runware:504@1", 2, 0.0, "4").result[0]
    out = sample(sd15, width=128, height=128, hiresFix=hires, steps=3)
    first = sample(sd15, width=64, height=64, steps=3)
    vae = sd15[1]
    expected = vae.decode(vae.encode(fit(upscale_image(hires.upscaler, first), 128, 128)))
    assert torch.allclose(out, expected, atol=1e-5)


def test_tiled_upscale_matches_untiled(sd15):
    from imageinference.nodes.hires_fix import HiresFixNode
    from imageinference.samplers.hires import upscale_image

    up = HiresFixNode.execute("runware:504@1", 0, -1.0, "4").result[0].upscaler
    img = torch.rand((1, 96, 80, 3), generator=torch.Generator().manual_seed(1))
    whole = upscale_image(up, img, tile=512)
    tiled = upscale_image(up, img, tile=48, overlap=16)
    assert whole.shape == (1, 384, 320, 3)
    assert (whole - tiled).abs().mean() < 0.02


def test_hires_defaults_for_true(sd15):
    from imageinference.nodes.hires_fix import DEFAULTS, HiresFixNode

    opts = HiresFixNode.execute(DEFAULTS, 0, -1.0, "4").result[0]
    assert (opts.air, opts.steps, opts.strength, opts.explicit) == ("runware:504@1", None, None, False)
    assert math.isclose(json.loads("0.5"), 0.5)
