"""Our TeaCache and First Block Cache against the node packs users install for them, run side by side in this
ComfyUI on the same weights, conditioning, noise and sampler: welltop-cn/ComfyUI-TeaCache's `TeaCache` node and
chengzeyi/Comfy-WaveSpeed's `ApplyFBCacheOnModel`, imported from their vendored archives (test oracles only).

With the peers' rules (node options skipLastStep and uncappedSkips, FBCache's firstBlockSignal "output" on FLUX)
ours skips the same steps and returns the same latent bit for bit, at every threshold tried. The peers copy
ComfyUI's FLUX forward, and ComfyUI 0.8.0's FLUX double blocks add into their input in place, so the tensor the
peers keep as "the input of the blocks" is overwritten (the residual they cache misses the double blocks); the
equality is therefore shown with a block replacement that hands each double block a copy of its input (the peers'
own forwards honour ComfyUI's block replacements), and the tests below show the alias and its effect as shipped.
"""

import pytest
import torch

STEPS = 12
WIDGETS = {"cacheStartStep": -1, "cacheStartStepPercentage": -1, "cacheEndStep": -1, "cacheEndStepPercentage": -1,
           "cacheMaxConsecutiveSteps": 3}
PEER_RULES = {"skipLastStep": True, "uncappedSkips": True}


# ---------------------------------------------------------------- the peers, imported from their archives

@pytest.fixture(scope="module")
def peer_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("peers")


@pytest.fixture(scope="module")
def comfyui_teacache(comfy, peer_dir):
    """welltop-cn/ComfyUI-TeaCache's node (with a stand-in for the one ComfyUI function it imports that ComfyUI
    0.8.0 lost; only its LTXV path calls it, see cache_peers)."""
    from imageinference.testing import cache_peers, peers

    try:
        return cache_peers.comfyui_teacache_node(peer_dir)
    except peers.PeerMissing as exc:
        pytest.skip(f"LOUD: {exc}")


@pytest.fixture(scope="module")
def wavespeed(comfy, peer_dir):
    from imageinference.testing import cache_peers, peers

    try:
        with cache_peers.wavespeed_node(peer_dir) as node:
            yield node
    except peers.PeerMissing as exc:
        pytest.skip(f"LOUD: {exc}")


# ---------------------------------------------------------------- models, conditioning, runs

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
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    _randomize(base.diffusion_model, seed)
    device = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=device)


@pytest.fixture(scope="module")
def flux(comfy):
    return small_flux(2, 2, 2701)


@pytest.fixture(scope="module")
def sd3(comfy, tmp_path_factory):
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


FLUX_COND = cond(6, 768, 1, guidance=3.5)


def blocks_of(model):
    dm = model.model.diffusion_model
    if hasattr(dm, "double_blocks"):
        return [*dm.double_blocks, *dm.single_blocks]
    return list(dm.joint_blocks)


def run(model, positive, negative, cfg, seed=5, size=32):
    """(latent, transformer blocks run at each step): hooks on the blocks count them whoever skips them."""
    import comfy.sample

    per_step, count = [], [0]
    hooks = [b.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1)) for b in blocks_of(model)]

    def step_done(*_):
        per_step.append(count[0])
        count[0] = 0

    latent = torch.zeros(1, 16, size // 8, size // 8)
    noise = comfy.sample.prepare_noise(latent, seed)
    try:
        out = comfy.sample.sample(model, noise, STEPS, cfg, "euler", "simple", positive, negative, latent, seed=seed,
                                  disable_pbar=True, callback=step_done)
    finally:
        for h in hooks:
            h.remove()
    return out, per_step


def copying_double_blocks(model):
    from imageinference.testing.cache_peers import copying_double_blocks as copying

    return copying(model)


def skipped(per_step, full):
    return [i for i, n in enumerate(per_step) if n < full]


# ---------------------------------------------------------------- TeaCache vs ComfyUI-TeaCache (FLUX)

def ours_teacache(model, rel_l1_thresh, **options):
    """Our TeaCache node at the teaCacheDistance whose threshold is ComfyUI-TeaCache's rel_l1_thresh."""
    from imageinference.comfyui.nodes.step_cache import TeaCacheNode
    from imageinference.engines.cache.patch import CONFIG_KEY
    from imageinference.engines.cache.profiles import PUBLISHED, TEACACHE_THRESHOLD_SCALE, api_value

    patched = TeaCacheNode.execute(model, teaCacheDistance=api_value(rel_l1_thresh, TEACACHE_THRESHOLD_SCALE),
                                   **WIDGETS, **options).result[0]
    config = patched.model_options["transformer_options"][CONFIG_KEY]
    assert config.coefficients == PUBLISHED["flux"]  # the coefficients ComfyUI-TeaCache uses for "flux"
    assert config.threshold == pytest.approx(rel_l1_thresh, rel=1e-12)
    return patched


TEA_THRESHOLDS = [0.1, 0.25, 0.4, 0.6, 0.8, 1.2, 2.0]


def test_teacache_skips_the_same_steps_and_gives_the_same_latent_as_comfyui_teacache(flux, comfyui_teacache):
    """Every threshold: the same steps skipped and the same latent, bit for bit, once the peer's cached input is no
    longer overwritten by ComfyUI's in-place double blocks."""
    base, base_steps = run(flux, FLUX_COND, FLUX_COND, 1.0)
    full = base_steps[0]
    patterns = set()
    for thresh in TEA_THRESHOLDS:
        peer_model = comfyui_teacache().apply_teacache(copying_double_blocks(flux), "flux", thresh, 0.0, 1.0, "cpu")[0]
        peer, peer_steps = run(peer_model, FLUX_COND, FLUX_COND, 1.0)
        ours, our_steps = run(ours_teacache(flux, thresh, **PEER_RULES), FLUX_COND, FLUX_COND, 1.0)
        assert our_steps == peer_steps, thresh
        assert all(n in (0, full) for n in our_steps)  # TeaCache skips whole steps
        assert torch.equal(ours, peer), thresh
        patterns.add(tuple(skipped(our_steps, full)))
    assert len(patterns) >= 4 and () in patterns and any(STEPS - 1 in p for p in patterns)  # a varied sweep


def test_comfyui_teacache_as_shipped_caches_only_the_single_blocks_residual(flux, comfyui_teacache):
    """As shipped, the peer keeps `ori_img = img.to(cache_device)`, the same tensor when the cache device is the
    compute device, and ComfyUI 0.8.0's double blocks add into it: the residual it caches is final - (image after
    the double blocks), measured here with hooks, so a skipped step drops the double blocks' contribution. Ours
    caches final - (image entering the blocks); same steps skipped, a different latent, closer to the uncached one."""
    dm = flux.model.diffusion_model
    seen = {}
    hooks = [dm.single_blocks[0].register_forward_pre_hook(lambda _m, a: seen.__setitem__("single_in", a[0].clone())),
             dm.final_layer.register_forward_pre_hook(lambda _m, a: seen.__setitem__("final_in", a[0].clone())),
             dm.img_in.register_forward_hook(lambda _m, _a, out: seen.__setitem__("img_in", out.clone()))]
    try:
        shipped_model = comfyui_teacache().apply_teacache(flux, "flux", 0.0001, 0.0, 1.0, "cpu")[0]
        run(shipped_model, FLUX_COND, FLUX_COND, 1.0)  # computes every step: the last one's residual stays
    finally:
        for h in hooks:
            h.remove()
    txt_tokens = FLUX_COND[0][0].shape[1]
    after_doubles = seen["single_in"][:, txt_tokens:]
    assert torch.equal(dm.previous_residual, seen["final_in"] - after_doubles)
    assert not torch.allclose(dm.previous_residual, seen["final_in"] - seen["img_in"], atol=1e-3)

    base, base_steps = run(flux, FLUX_COND, FLUX_COND, 1.0)
    peer, peer_steps = run(comfyui_teacache().apply_teacache(flux, "flux", 0.8, 0.0, 1.0, "cpu")[0], FLUX_COND,
                           FLUX_COND, 1.0)
    ours, our_steps = run(ours_teacache(flux, 0.8, **PEER_RULES), FLUX_COND, FLUX_COND, 1.0)
    assert our_steps == peer_steps and skipped(our_steps, base_steps[0])
    assert (ours - base).abs().mean() < 0.5 * (peer - base).abs().mean()


def longest_streak(steps):
    longest = streak = 0
    for i in range(STEPS):
        streak = streak + 1 if i in steps else 0
        longest = max(longest, streak)
    return longest


def test_our_default_rules_compute_the_last_step_and_cap_skips_in_a_row(flux, comfyui_teacache):
    """Without the node options, the last step always runs and at most cacheMaxConsecutiveSteps (here 3) are
    skipped in a row (a forced computation also resets the accumulated change): at a high threshold the peer skips
    more, the last step among them."""
    base_steps = run(flux, FLUX_COND, FLUX_COND, 1.0)[1]
    full = base_steps[0]
    peer_steps = run(comfyui_teacache().apply_teacache(copying_double_blocks(flux), "flux", 2.0, 0.0, 1.0, "cpu")[0],
                     FLUX_COND, FLUX_COND, 1.0)[1]
    our_steps = run(ours_teacache(flux, 2.0), FLUX_COND, FLUX_COND, 1.0)[1]
    ours, theirs = skipped(our_steps, full), skipped(peer_steps, full)
    assert STEPS - 1 in theirs and longest_streak(theirs) > 3
    assert STEPS - 1 not in ours and longest_streak(ours) == 3 and len(ours) < len(theirs)


def test_comfyui_teacache_has_no_sd3_path(sd3, comfyui_teacache):
    """The peer offers no SD3 model type; its FLUX type patches a `forward_orig` that SD3's MMDiT does not have, so
    sampling fails. There is nothing of the peer to compare our SD3 TeaCache with (see the test below)."""
    model_types = comfyui_teacache.INPUT_TYPES()["required"]["model_type"][0]
    assert not [t for t in model_types if "sd3" in t.lower() or "mmdit" in t.lower()]
    patched = comfyui_teacache().apply_teacache(sd3, "flux", 0.4, 0.0, 1.0, "cpu")[0]
    with pytest.raises(AttributeError, match="forward_orig"):
        run(patched, cond(8, 2048, 2), cond(8, 2048, 3), 4.5)


def test_our_sd3_teacache_follows_the_teacache_rule_on_the_blocks_own_modulated_input(sd3):
    """SD3 instead, against quantities measured another way: the probe equals the modulated input the first joint
    block itself computes (captured at its attention), and the skip decisions are TeaCache's rule (accumulate the
    polynomial of the relative L1 change, skip while under the threshold) applied to those values by this test."""
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout
    from imageinference.engines.cache.profiles import TeaCacheProfile

    profile = TeaCacheProfile((2.0, 0.1), 1.0, "test")
    config = cache_config("teaCache", 0.6, model_layout(sd3), profile=profile, skip_last_step=True, uncapped=True)
    patched = apply_step_cache(sd3, config)
    attn = sd3.model.diffusion_model.joint_blocks[0].x_block.attn
    measured, probes = [], []
    original_pre_attention = attn.pre_attention

    def capture(x, *a, **k):
        measured.append(x.clone())
        return original_pre_attention(x, *a, **k)

    import imageinference.engines.cache.patch as patch_module

    original_probe = patch_module.modulation_probe

    def recording_probe(diffusion_model, family):
        probe = original_probe(diffusion_model, family)

        def record(args):
            value = probe(args)
            probes.append(value.clone())
            return value
        return record

    attn.pre_attention = capture
    patch_module.modulation_probe = recording_probe
    try:
        _, per_step = run(patched, cond(8, 2048, 2), cond(8, 2048, 3), 4.5)
    finally:
        del attn.pre_attention
        patch_module.modulation_probe = original_probe
    computed = [i for i, n in enumerate(per_step) if n]
    assert len(probes) == STEPS and len(measured) == len(computed) and 0 < len(computed) < STEPS
    for k, step in enumerate(computed):
        assert torch.allclose(probes[step], measured[k], rtol=1e-5, atol=1e-6)
    acc, expected = 0.0, []
    for step in range(STEPS):
        if step == 0:
            expected.append(False)
            continue
        x = ((probes[step] - probes[step - 1]).abs().mean() / probes[step - 1].abs().mean()).item()
        acc += abs(2.0 * x + 0.1)
        if acc < config.threshold:
            expected.append(True)
        else:
            expected.append(False)
            acc = 0.0
    assert [not n for n in per_step] == expected


# ---------------------------------------------------------------- First Block Cache vs Comfy-WaveSpeed

def ours_fbcache(model, threshold, hits, **options):
    """Our FBCache node at the fbCacheThreshold whose threshold is WaveSpeed's residual_diff_threshold, with
    WaveSpeed's max_consecutive_cache_hits (-1 = no cap)."""
    from imageinference.comfyui.nodes.step_cache import FBCacheNode
    from imageinference.engines.cache.patch import CONFIG_KEY
    from imageinference.engines.cache.profiles import api_value

    widgets = dict(WIDGETS, cacheMaxConsecutiveSteps=max(hits, 1))
    patched = FBCacheNode.execute(model, fbCacheThreshold=api_value(threshold, 1.0), **widgets,
                                  skipLastStep=True, uncappedSkips=hits < 0, **options).result[0]
    assert patched.model_options["transformer_options"][CONFIG_KEY].threshold == pytest.approx(threshold, rel=1e-12)
    return patched


FB_THRESHOLDS = [0.05, 0.2, 0.5, 0.7, 0.8, 0.9, 1.0]


@pytest.mark.parametrize("hits", [-1, 1, 2])
@pytest.mark.parametrize("separate", [False, True])
def test_fbcache_equals_wavespeed_on_sd3(sd3, wavespeed, hits, separate):
    """SD3-shaped MMDiT with CFG: WaveSpeed's generic path compares the first block's residual, as ours does. Cond
    and uncond batched, or run as two forwards (context lengths 8 and 7 cannot be batched), where WaveSpeed numbers
    the chunks of a step and lets the first decide, as ours shares one decision per step."""
    positive, negative = cond(8, 2048, 2), cond(7 if separate else 8, 2048, 3)
    base_steps = run(sd3, positive, negative, 4.5)[1]
    patterns = set()
    for thresh in FB_THRESHOLDS:
        peer, peer_steps = run(wavespeed().patch(sd3, "diffusion_model", thresh, hits, 0.0, 1.0)[0], positive,
                               negative, 4.5)
        ours, our_steps = run(ours_fbcache(sd3, thresh, hits), positive, negative, 4.5)
        assert our_steps == peer_steps, thresh
        assert torch.equal(ours, peer), thresh
        patterns.add(tuple(skipped(our_steps, base_steps[0])))
    assert len(patterns) >= 3 and () in patterns


@pytest.mark.parametrize("hits", [-1, 2])
def test_fbcache_with_the_output_signal_equals_wavespeed_on_flux(flux, wavespeed, hits):
    """WaveSpeed's FLUX path compares the first block's output, not its residual: with firstBlockSignal "output"
    ours skips the same steps and gives the same latent, once WaveSpeed's buffers are not overwritten in place."""
    base_steps = run(flux, FLUX_COND, FLUX_COND, 1.0)[1]
    patterns = set()
    for thresh in FB_THRESHOLDS:
        peer_model = wavespeed().patch(copying_double_blocks(flux), "diffusion_model", thresh, hits, 0.0, 1.0)[0]
        peer, peer_steps = run(peer_model, FLUX_COND, FLUX_COND, 1.0)
        ours, our_steps = run(ours_fbcache(flux, thresh, hits, firstBlockSignal="output"), FLUX_COND, FLUX_COND, 1.0)
        assert our_steps == peer_steps, thresh
        assert torch.equal(ours, peer), thresh
        patterns.add(tuple(skipped(our_steps, base_steps[0])))
    assert len(patterns) >= 3 and () in patterns


def test_wavespeed_as_shipped_on_flux_compares_and_caches_overwritten_tensors(flux, wavespeed):
    """As shipped on a FLUX with two double blocks, the tensor WaveSpeed stores as the first block's output is the
    one the second double block then adds into: its buffer holds the image after the double blocks, and the residual
    it reuses covers the single blocks only. Measured on its own buffers with hooks."""
    peer_module = __import__("peer_comfy_wavespeed.first_block_cache", fromlist=["x"])
    dm = flux.model.diffusion_model
    seen = {}
    hooks = [dm.double_blocks[0].register_forward_hook(lambda _m, _a, out: seen.__setitem__("first_out",
                                                                                          out[0].clone())),
             dm.single_blocks[0].register_forward_pre_hook(lambda _m, a: seen.__setitem__("single_in", a[0].clone())),
             dm.final_layer.register_forward_pre_hook(lambda _m, a: seen.__setitem__("final_in", a[0].clone()))]
    try:
        run(wavespeed().patch(flux, "diffusion_model", 0.0001, -1, 0.0, 1.0)[0], FLUX_COND, FLUX_COND, 1.0)
    finally:
        for h in hooks:
            h.remove()
    context = peer_module.get_current_cache_context()
    buffer = context.buffers["first_hidden_states_residual"][0]
    residual = context.buffers["hidden_states_residual"][0]
    after_doubles = seen["single_in"][:, FLUX_COND[0][0].shape[1]:]
    assert torch.equal(buffer, after_doubles) and not torch.equal(buffer, seen["first_out"])
    assert torch.equal(residual, seen["final_in"] - after_doubles)
    peer_module.set_current_cache_context(None)
