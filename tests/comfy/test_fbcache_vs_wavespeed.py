"""Our First Block Cache against chengzeyi/Comfy-WaveSpeed's `ApplyFBCacheOnModel`, run side by side in this
ComfyUI on the same weights, conditioning, noise and sampler, the node imported from its vendored archive (a test
oracle only). With the peer's rules (node options skipLastStep and uncappedSkips; firstBlockSignal "output" on FLUX,
where WaveSpeed compares the first block's output) ours skips the same steps and returns the same latent bit for bit,
at every threshold tried, on SD3 and on FLUX with two double blocks or one.

The peers copy ComfyUI's FLUX forward, and ComfyUI 0.8.0's FLUX double blocks add into their input in place, so
the tensor the peers keep as "the input of the blocks" is overwritten (the residual they cache misses the double
blocks); the equality is therefore shown with a block replacement that hands each double block a copy of its input
(the peers' own forwards honour ComfyUI's block replacements), and a test below shows the alias and its effect as
shipped. Models, runs and the peers' fixtures: step_cache_helpers."""

import pytest
import step_cache_helpers
import torch
from step_cache_helpers import CACHE_FLUX_COND as FLUX_COND
from step_cache_helpers import CACHE_WIDGETS as WIDGETS
from step_cache_helpers import cache_cond as cond
from step_cache_helpers import cache_run as run
from step_cache_helpers import cache_skipped as skipped

from imageinference.testing.cache_peers import copying_double_blocks

cache_flux = step_cache_helpers.cache_flux  # fixtures
cache_flux_one_double = step_cache_helpers.cache_flux_one_double
cache_sd3 = step_cache_helpers.cache_sd3
wavespeed = step_cache_helpers.wavespeed


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
def test_fbcache_equals_wavespeed_on_sd3(cache_sd3, wavespeed, hits, separate):
    """SD3-shaped MMDiT with CFG: WaveSpeed's generic path compares the first block's residual, as ours does. Cond
    and uncond batched, or run as two forwards (context lengths 8 and 7 cannot be batched), where WaveSpeed numbers
    the chunks of a step and lets the first decide, as ours shares one decision per step."""
    positive, negative = cond(8, 2048, 2), cond(7 if separate else 8, 2048, 3)
    base_steps = run(cache_sd3, positive, negative, 4.5)[1]
    patterns = set()
    for thresh in FB_THRESHOLDS:
        peer, peer_steps = run(wavespeed().patch(cache_sd3, "diffusion_model", thresh, hits, 0.0, 1.0)[0], positive,
                               negative, 4.5)
        ours, our_steps = run(ours_fbcache(cache_sd3, thresh, hits), positive, negative, 4.5)
        assert our_steps == peer_steps, thresh
        assert torch.equal(ours, peer), thresh
        patterns.add(tuple(skipped(our_steps, base_steps[0])))
    assert len(patterns) >= 3 and () in patterns


FLUX_SHAPES = {"two double blocks": "cache_flux", "one double block": "cache_flux_one_double"}


@pytest.mark.parametrize("hits", [-1, 2])
@pytest.mark.parametrize("shape", FLUX_SHAPES)
def test_fbcache_with_the_output_signal_equals_wavespeed_on_flux(request, wavespeed, shape, hits):
    """WaveSpeed's FLUX path compares the first block's output, not its residual: with firstBlockSignal "output"
    ours skips the same steps and gives the same latent, once WaveSpeed's buffers are not overwritten in place. With
    one double block, the first block's output reaches our cache at the first single block, whose sequence starts
    with the text tokens: the change is measured on the image tokens alone, as WaveSpeed measures it."""
    flux = request.getfixturevalue(FLUX_SHAPES[shape])
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


def test_the_residual_signal_on_one_double_block_is_the_image_streams(cache_flux_one_double):
    """firstBlockSignal "residual" (the API's FBCache, as ParaAttention and DBCache define it: the first block's
    image residual) on a FLUX whose first block is its only double block: the steps ours skips are the rule applied
    by this test to the image residual of that block, captured with hooks at every step (the block always runs)."""
    flux = cache_flux_one_double
    block = flux.model.diffusion_model.double_blocks[0]
    residuals = []
    seen_input = {}
    hooks = [block.register_forward_pre_hook(lambda _m, _a, kw: seen_input.__setitem__("img", kw["img"].clone()),
                                             with_kwargs=True),
             block.register_forward_hook(lambda _m, _a, out: residuals.append(out[0] - seen_input["img"]))]
    base_steps = run(flux, FLUX_COND, FLUX_COND, 1.0)[1]
    patterns = set()
    try:
        for thresh in (0.3, 0.6, 0.75, 0.9, 1.2):
            residuals.clear()
            our_steps = run(ours_fbcache(flux, thresh, -1), FLUX_COND, FLUX_COND, 1.0)[1]
            expected, reference = [], None
            for residual in residuals:
                change = (None if reference is None else
                          ((residual - reference).abs().mean() / reference.abs().mean()).item())
                skip = change is not None and change < thresh  # the peers' rules: no cap, the last step too
                expected.append(skip)
                if not skip:
                    reference = residual
            assert skipped(our_steps, base_steps[0]) == [i for i, s in enumerate(expected) if s], thresh
            patterns.add(tuple(skipped(our_steps, base_steps[0])))
    finally:
        for h in hooks:
            h.remove()
    assert len(patterns) >= 3


def test_wavespeed_as_shipped_on_flux_compares_and_caches_overwritten_tensors(cache_flux, wavespeed):
    """As shipped on a FLUX with two double blocks, the tensor WaveSpeed stores as the first block's output is the
    one the second double block then adds into: its buffer holds the image after the double blocks, and the residual
    it reuses covers the single blocks only. Measured on its own buffers with hooks."""
    peer_module = __import__("peer_comfy_wavespeed.first_block_cache", fromlist=["x"])
    dm = cache_flux.model.diffusion_model
    seen = {}
    hooks = [dm.double_blocks[0].register_forward_hook(lambda _m, _a, out: seen.__setitem__("first_out",
                                                                                          out[0].clone())),
             dm.single_blocks[0].register_forward_pre_hook(lambda _m, a: seen.__setitem__("single_in", a[0].clone())),
             dm.final_layer.register_forward_pre_hook(lambda _m, a: seen.__setitem__("final_in", a[0].clone()))]
    try:
        run(wavespeed().patch(cache_flux, "diffusion_model", 0.0001, -1, 0.0, 1.0)[0], FLUX_COND, FLUX_COND, 1.0)
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
