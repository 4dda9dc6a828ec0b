"""Our DeepCache against horseee/DeepCache's own code (the vendored archive, imported from a temporary folder):
its `DeepCacheSDHelper` wraps the blocks of a diffusers UNet and decides per block and step what to run and what to
take from its cache; its pipelines' `sample_from_quad_center` gives the non-uniform schedule.

Both run inside one real ComfyUI sampling run each (same sampler, noise, seed, CFG): ours patches ComfyUI's UNet;
the peer's helper wraps a diffusers `UNet2DConditionModel` holding the same weights (ComfyUI's own diffusers key map),
called by a model-function wrapper with ComfyUI's own input scaling and timesteps. The two UNet implementations
differ by float rounding (diffusers and ComfyUI order some operations differently), measured uncached first; cached
runs must agree within 4x that gap, while a wrong branch or schedule is over a hundred times further off.
"""

import pytest
import torch

from imageinference.testing.cache_peers import HelperRun

STEPS = 10


@pytest.fixture(scope="module")
def deepcache(tmp_path_factory):
    """(the DeepCacheSDHelper class, DeepCache's sample_from_quad_center)."""
    from imageinference.testing import cache_peers, peers

    try:
        return cache_peers.deepcache(tmp_path_factory.mktemp("deepcache"))
    except peers.PeerMissing as exc:
        pytest.skip(f"LOUD: {exc}")


@pytest.fixture(scope="module")
def sd15(comfy, tiny_models_root):
    import comfy.sd

    from imageinference.testing.tiny_models import TINY

    return comfy.sd.load_checkpoint_guess_config(str(TINY["sd15"].path(tiny_models_root)), output_vae=False,
                                                 output_clip=False)[0]


@pytest.fixture(scope="module")
def diffusers_unet(sd15):
    """A diffusers UNet with exactly the tiny SD1.5 UNet's weights (every key mapped, none left over)."""
    from imageinference.testing.cache_peers import diffusers_unet

    return diffusers_unet(sd15)


def test_the_copy_has_the_heads_comfyui_built_not_the_ones_its_config_asked_for(comfy):
    """ComfyUI's SD1.5 class sets 8 heads whatever the config asks. A head count is no weight: a diffusers copy with
    the asked-for 4 loads strictly and still attends differently (the benchmark's model T, asked with 4 heads, agreed
    with its copy to 19 dB uncached before the copy took the heads ComfyUI built)."""
    import comfy.model_patcher
    import comfy.supported_models
    from diffusers.models.attention_processor import Attention

    from imageinference.testing.cache_peers import diffusers_unet
    from imageinference.testing.tiny_models import SD15_UNET, _randomize

    config = comfy.supported_models.SD15(dict(SD15_UNET, model_channels=64, num_heads=4))
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _randomize(base.diffusion_model, 7)
    cpu = torch.device("cpu")
    copy = diffusers_unet(comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu))
    assert base.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.heads == 8
    g = torch.Generator().manual_seed(1)
    x, context, t = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, 768, generator=g), 500.0

    def theirs():
        return copy(x, torch.tensor(t), encoder_hidden_states=context, return_dict=False)[0]
    with torch.no_grad():
        mine = base.diffusion_model(x, torch.tensor([t]), context=context)
        assert (mine - theirs()).abs().max() <= 1e-5 * mine.abs().max()
        for module in copy.modules():
            if isinstance(module, Attention):
                module.heads = 4
        assert (mine - theirs()).abs().max() > 1e-2 * mine.abs().max()  # the test can tell the heads apart


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
    with HelperRun(deepcache[0], diffusers_unet, sd15, 1, 0) as peer:
        theirs = run(peer.model)
    base = run(sd15)
    difference = (base - theirs).abs().max().item()
    assert difference < 1e-5 * base.abs().max().item()  # the same network up to float rounding
    return difference, base


@pytest.mark.parametrize(("interval", "branch"), [(2, 0), (3, 1), (5, 2), (3, 3), (4, 5), (2, 11), (7, 0)])
def test_uniform_schedule_and_branch_equal_deepcaches_helper(sd15, diffusers_unet, deepcache, gap, interval, branch):
    """Branch k runs the same blocks (ComfyUI's input blocks 0..k and their output blocks; the helper's block k // 3,
    layer k % 3 of diffusers' UNet), the same steps run in full (0, N, 2N...; the last step cached when the pattern
    says so) and the latent agrees within the implementations' rounding gap."""
    difference, base = gap
    with HelperRun(deepcache[0], diffusers_unet, sd15, interval, branch) as peer:
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
    from imageinference.testing.cache_peers import deepcache_full_steps

    difference, _ = gap
    full = deepcache_full_steps(deepcache[1], STEPS, interval, center, power)
    assert full != set(range(0, STEPS, interval))  # a schedule the uniform one is not
    with HelperRun(deepcache[0], diffusers_unet, sd15, interval, 1, full_steps=full) as peer:
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
