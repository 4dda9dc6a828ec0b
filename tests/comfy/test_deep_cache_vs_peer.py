"""Our DeepCache against horseee/DeepCache's own code (the vendored archive, imported from a temporary folder):
its `DeepCacheSDHelper` wraps the blocks of a diffusers UNet and decides per block and step what to run and what to
take from its cache; its pipelines' `sample_from_quad_center` gives the non-uniform schedule.

Both run inside one real ComfyUI sampling run each (same sampler, noise, seed, CFG): ours patches ComfyUI's UNet;
the peer's helper wraps a diffusers `UNet2DConditionModel` holding the same weights (ComfyUI's own diffusers key map),
called by a model-function wrapper with ComfyUI's own input scaling and timesteps. The two UNet implementations
differ by float rounding (diffusers and ComfyUI order some operations differently), measured uncached first; cached
runs must agree within 4x that gap, while a wrong branch or schedule is over a hundred times further off.
"""

import types

import pytest
import torch

STEPS = 10


@pytest.fixture(scope="module")
def deepcache(tmp_path_factory):
    """(the DeepCacheSDHelper class, DeepCache's sample_from_quad_center)."""
    import numpy as np

    from imageinference.testing import peers

    try:
        folder = peers.unpack("DeepCache", tmp_path_factory.mktemp("deepcache"))
    except peers.PeerMissing as exc:
        pytest.skip(f"LOUD: {exc}")
    package = peers.import_package(folder / "DeepCache", "peer_deepcache")
    quad = peers.load_function(folder / "DeepCache" / "sd" / "pipeline_stable_diffusion.py",
                               "sample_from_quad_center", {"np": np})
    return package.DeepCacheSDHelper, quad


@pytest.fixture(scope="module")
def sd15(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_checkpoint_guess_config(str(TINY["sd15"].path(tiny_models_root)), output_vae=False,
                                                 output_clip=False)[0]


@pytest.fixture(scope="module")
def diffusers_unet(sd15):
    """A diffusers UNet with exactly the tiny SD1.5 UNet's weights (every key mapped, none left over). The tiny UNet
    has attention at input levels 0-2 and output levels 0-2 (ComfyUI's transformer_depth_output counts from the
    top), so diffusers' last up block is the plain one."""
    import comfy.utils
    from diffusers import UNet2DConditionModel

    from imageinference.testing.tiny_models import SD15_UNET

    net = sd15.model.diffusion_model
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320,) * 4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("CrossAttnUpBlock2D",) * 3 + ("UpBlock2D",), cross_attention_dim=768, attention_head_dim=8)
    ours = net.state_dict()
    mapped = {key: ours[comfy_key] for key, comfy_key in comfy.utils.unet_to_diffusers(dict(SD15_UNET)).items()
              if comfy_key in ours}
    assert len(mapped) == len(ours)
    unet.load_state_dict(mapped, strict=True)
    return unet.to(next(net.parameters()).dtype).eval()


def conds():
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(1, 77, 768, generator=g), {}]], [[torch.randn(1, 77, 768, generator=g), {}]]


def run(model, cfg=5.0, seed=3, size=64):
    import comfy.sample

    positive, negative = conds()
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, STEPS, cfg, "euler", "normal", positive, negative, latent, seed=seed,
                               disable_pbar=True)


class PeerRun:
    """The peer's helper on the diffusers UNet, as ComfyUI's model function. `full_steps` (non-uniform only): the
    steps to run in full; the helper itself only knows the uniform `(t - start) % interval == 0`, so the interval
    is set per step to 1 (full) or to more steps than the run has (cached), as its pipelines' `interval_seq` does."""

    def __init__(self, helper_class, unet, model, interval, branch, full_steps=None):
        self.pipe = types.SimpleNamespace(unet=unet, scheduler=types.SimpleNamespace(timesteps=[]))
        self.helper = helper_class(pipe=self.pipe)
        self.helper.set_params(cache_interval=interval, cache_branch_id=branch)
        self.full_steps = full_steps
        self.middle_ran = []
        self.sampling = model.get_model_object("model_sampling")
        self.model = model.clone()
        self.model.set_model_unet_function_wrapper(self.forward)

    def forward(self, apply_model, args):
        x, sigma, c = args["input"], args["timestep"], args["c"]
        sigmas = c["transformer_options"]["sample_sigmas"]
        self.pipe.scheduler.timesteps = [self.sampling.timestep(s).float() for s in sigmas[:-1]]
        step = [float(s) for s in sigmas].index(float(sigma[0]))
        if self.full_steps is not None:
            self.helper.params["cache_interval"] = 1 if step in self.full_steps else 10 * STEPS
        ran = []
        hook = self.pipe.unet.mid_block.resnets[0].register_forward_pre_hook(lambda *_: ran.append(step))
        try:
            eps = self.pipe.unet(self.sampling.calculate_input(sigma, x), self.sampling.timestep(sigma)[0].float(),
                                 encoder_hidden_states=c["c_crossattn"], return_dict=False)[0]
        finally:
            hook.remove()
        self.middle_ran.append(bool(ran))
        return self.sampling.calculate_denoised(sigma, eps, x)

    def __enter__(self):
        self.helper.enable()
        return self

    def __exit__(self, *_):
        self.helper.disable()  # unwraps the UNet's blocks: the next run starts from the plain UNet


def ours(model, interval, branch, **options):
    from imageinference.engines.cache.deepcache import DeepCacheConfig
    from imageinference.engines.cache.deepcache_patch import apply_deep_cache

    return apply_deep_cache(model, DeepCacheConfig(interval, branch, **options))


def middle_block_runs(model):
    """The steps at which our UNet runs its middle block (one forward per step: cond and uncond are batched)."""
    ran = []
    hook = model.model.diffusion_model.middle_block[0].register_forward_pre_hook(lambda *_: ran.append(1))
    marks = []

    def count(apply_model, args):
        before = len(ran)
        out = apply_model(args["input"], args["timestep"], **args["c"])
        marks.append(len(ran) > before)
        return out
    m = model.clone()
    m.set_model_unet_function_wrapper(count)
    return m, marks, hook


@pytest.fixture(scope="module")
def gap(sd15, diffusers_unet, deepcache):
    """Uncached, ComfyUI's UNet against diffusers' on the same weights: (max |difference|, max |latent|)."""
    with PeerRun(deepcache[0], diffusers_unet, sd15, 1, 0) as peer:
        theirs = run(peer.model)
    base = run(sd15)
    difference = (base - theirs).abs().max().item()
    assert 0 < difference < 1e-5 * base.abs().max().item()  # the same network up to float rounding
    return difference, base


@pytest.mark.parametrize(("interval", "branch"), [(2, 0), (3, 1), (5, 2), (3, 3), (4, 5), (2, 11), (7, 0)])
def test_uniform_schedule_and_branch_equal_deepcaches_helper(sd15, diffusers_unet, deepcache, gap, interval, branch):
    """Branch k runs the same blocks (ComfyUI's input blocks 0..k and their output blocks; the helper's block k // 3,
    layer k % 3 of diffusers' UNet), the same steps run in full (0, N, 2N...; the last step cached when the pattern
    says so) and the latent agrees within the implementations' rounding gap."""
    difference, base = gap
    with PeerRun(deepcache[0], diffusers_unet, sd15, interval, branch) as peer:
        theirs = run(peer.model)
    counted, marks, hook = middle_block_runs(ours(sd15, interval, branch))
    try:
        mine = run(counted)
    finally:
        hook.remove()
    assert marks == peer.middle_ran == [step % interval == 0 for step in range(STEPS)]
    assert (mine - theirs).abs().max().item() <= 4 * difference
    assert (mine - base).abs().max().item() > 100 * difference  # caching changed the image: the test can tell
    wrong_branch = run(ours(sd15, interval, branch + 1 if branch < 11 else branch - 1))
    assert (wrong_branch - theirs).abs().max().item() > 100 * difference


@pytest.mark.parametrize(("interval", "center", "power"), [(3, 4, 1.4), (2, 3, 1.2), (4, 6, 2.0)])
def test_non_uniform_schedule_equals_deepcaches_pipeline_schedule(sd15, diffusers_unet, deepcache, gap, interval,
                                                                  center, power):
    """The node option deepCacheSchedule "non-uniform": full steps where DeepCache's own `sample_from_quad_center`
    puts them (its pipelines' uniform=False), the cached ones through its helper's branch logic."""
    import math
    import warnings

    import numpy as np

    difference, _ = gap
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
        full, _ = deepcache[1](STEPS, math.ceil(STEPS / interval), center=center, pow=power)
    full = {int(s) for s in full}
    assert full != set(range(0, STEPS, interval))  # a schedule the uniform one is not
    with PeerRun(deepcache[0], diffusers_unet, sd15, interval, 1, full_steps=full) as peer:
        theirs = run(peer.model)
    counted, marks, hook = middle_block_runs(ours(sd15, interval, 1, schedule="non-uniform", center=center,
                                                  power=power))
    try:
        mine = run(counted)
    finally:
        hook.remove()
    assert marks == peer.middle_ran == [step in full for step in range(STEPS)]
    assert (mine - theirs).abs().max().item() <= 4 * difference
    uniform = run(ours(sd15, interval, 1))
    assert (uniform - theirs).abs().max().item() > 100 * difference
