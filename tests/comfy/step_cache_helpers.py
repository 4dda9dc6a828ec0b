"""Step caches against their peers (the comfy layer's helpers for test_teacache_vs_comfyui_teacache and
test_fbcache_vs_wavespeed): welltop-cn/ComfyUI-TeaCache's and Comfy-WaveSpeed's nodes from their archives, small
FLUX and SD3 models of ComfyUI's own classes, and a sampling run that counts the transformer blocks each step ran."""

import pytest as _pytest
import torch as _torch

CACHE_STEPS = 12
CACHE_WIDGETS = {"cacheStartStep": -1, "cacheStartStepPercentage": -1, "cacheEndStep": -1,
                 "cacheEndStepPercentage": -1, "cacheMaxConsecutiveSteps": 3}
CACHE_PEER_RULES = {"skipLastStep": True, "uncappedSkips": True}


@_pytest.fixture(scope="module")
def comfyui_teacache(comfy, tmp_path_factory):
    """welltop-cn/ComfyUI-TeaCache's node (with a stand-in for the one ComfyUI function it imports that ComfyUI
    0.8.0 lost; only its LTXV path calls it, see cache_peers)."""
    from imageinference.testing import cache_peers, peers

    try:
        return cache_peers.comfyui_teacache_node(tmp_path_factory.mktemp("teacache"))
    except peers.PeerMissing as exc:
        _pytest.skip(f"LOUD: {exc}")


@_pytest.fixture(scope="module")
def wavespeed(comfy, tmp_path_factory):
    from imageinference.testing import cache_peers, peers

    try:
        with cache_peers.wavespeed_node(tmp_path_factory.mktemp("wavespeed")) as node:
            yield node
    except peers.PeerMissing as exc:
        _pytest.skip(f"LOUD: {exc}")


def small_flux(double, single, seed):
    """A FLUX.1 model (ComfyUI's own class and key layout, guidance-distilled) at hidden size 256, so several double
    blocks cost little; ComfyUI's model class, so the caches and the peers treat it as FLUX."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    from imageinference.testing.tiny_models import _randomize

    config = comfy.supported_models.Flux({
        "image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
        "hidden_size": 256, "mlp_ratio": 4.0, "num_heads": 2, "depth": double, "depth_single_blocks": single,
        "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True,
        "txt_ids_dims": []})
    config.set_inference_dtype(_torch.float32, None)
    base = config.get_model({})
    _randomize(base.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


@_pytest.fixture(scope="module")
def cache_flux(comfy):
    return small_flux(2, 2, 2701)


@_pytest.fixture(scope="module")
def cache_flux_one_double(comfy):
    """One double block: the first block's output is read at the first single block, whose sequence starts with
    the text tokens (FLUX.1 has 19 double blocks; the benchmarks' scenario A has this shape)."""
    return small_flux(1, 2, 2702)


@_pytest.fixture(scope="module")
def cache_sd3(comfy, tmp_path_factory):
    import comfy.sd
    import safetensors.torch

    from imageinference.testing.tiny_models import make_sd3

    path = tmp_path_factory.mktemp("sd3") / "sd3_depth4.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in make_sd3(4, 99).items()}, str(path))
    return comfy.sd.load_diffusion_model(str(path))


def cache_cond(tokens, pooled, seed, **extra):
    g = _torch.Generator().manual_seed(seed)
    return [[_torch.randn(1, tokens, 4096, generator=g), {"pooled_output": _torch.randn(1, pooled, generator=g),
                                                         **extra}]]


CACHE_FLUX_COND = cache_cond(6, 768, 1, guidance=3.5)


def cache_blocks(model):
    dm = model.model.diffusion_model
    if hasattr(dm, "double_blocks"):
        return [*dm.double_blocks, *dm.single_blocks]
    return list(dm.joint_blocks)


def cache_run(model, positive, negative, cfg, seed=5, size=32):
    """(latent, transformer blocks run at each step): hooks on the blocks count them whoever skips them."""
    import comfy.sample

    per_step, count = [], [0]
    hooks = [b.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1)) for b in cache_blocks(model)]

    def step_done(*_):
        per_step.append(count[0])
        count[0] = 0

    latent = _torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    try:
        out = comfy.sample.sample(model, noise, CACHE_STEPS, cfg, "euler", "simple", positive, negative, latent,
                                  seed=seed, disable_pbar=True, callback=step_done)
    finally:
        for h in hooks:
            h.remove()
    return out, per_step


def cache_skipped(per_step, full):
    return [i for i, n in enumerate(per_step) if n < full]
