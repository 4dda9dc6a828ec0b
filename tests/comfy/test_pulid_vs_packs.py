"""Our PuLID injection beside the two ComfyUI PuLID-FLUX packs users install, lldacing/ComfyUI_PuLID_Flux_ll and
balazik/ComfyUI-PuLID-Flux (vendored commits), in the same in-process ComfyUI: each pack's block replacements or
forward, its sampling wrappers and the part of its apply node that runs after the embedding (window, layer
numbering, registration), loaded from the unpacked archive by imageinference/testing/pulid_packs.py; their face
pipelines (insightface, EVA-CLIP, facexlib) do not run. Same tiny FLUX (hidden size 3072, 1 double and 1 single
block), the tiny PuLID file's two cross-attention layers in the packs' own PerceiverAttentionCA, one identity
embedding (our encoder's on the test face: the packs' encoder is the reference's IDFormer, compared in
test_pulid_encoder_vs_reference), the same prompts, noise, euler steps and weight.

Adaptations, none of which changes what either pack does on FLUX.1 (details in pulid_packs):
- lldacing numbers its layers over FLUX.1's 19 + 38 blocks whatever the model, so single block 0 takes layer 10:
  its layers here are a 20-layer variant of the tiny file in which the layer it picks for each block is the one
  PuLID-FLUX picks there; every layer it should not pick is NaN (a wrong pick would poison the latent). Its
  LastDitDoubleBlockReplace (its own class, keyed at FLUX.1's last double block 18, which records the text length
  for the single blocks) is registered at the tiny model's last double block, 0, with the arguments its node gave
  that block.
- Their PulidFluxModel (FLUX.1's twenty full-size layers and the full IDFormer) is stood for by a module holding
  the tiny layers and the two intervals, the attributes their nodes read.
- As vendored, neither pack runs on ComfyUI 0.8.0 (shown by test_neither_pack_runs_on_comfyui_080_as_vendored): the
  arguments ComfyUI added since are dropped before the pack's code sees them.

Tolerance: our node's cross-attention layers use PyTorch's fused attention, the packs' PerceiverAttentionCA an
explicit softmax(q k^T) v with a split 1/sqrt(sqrt(d)) scaling, so latents agree within TOLERANCE of their size
(float32 rounding), not bit for bit. With the packs' own layer class in our injection (engine entry point) the
latents are bit-identical, so everything else (placement, the added weight x CA, the image part of the single
blocks' sequence, the window) is the same computation.
"""

from types import SimpleNamespace

import comfy_helpers
import pytest
import torch
from comfy_helpers import pulid_apply, pulid_face, pulid_run

from imageinference.testing import pulid_packs as packs_mod

flux = comfy_helpers.flux  # fixtures
pulid_env = comfy_helpers.pulid_env

STEPS, WEIGHT = 4, 0.8
TOLERANCE = 1e-5  # of the latent's largest magnitude (measured: 1.5e-7)


@pytest.fixture(scope="module")
def packs(tmp_path_factory):
    dest = tmp_path_factory.mktemp("pulid-packs")
    return SimpleNamespace(ll=packs_mod.load_lldacing(dest), bz=packs_mod.load_balazik(dest))


@pytest.fixture(scope="module")
def tiny(flux, pulid_env):
    """Our identity embedding of the test face (conditional and unconditional) and the tiny file's layers."""
    import comfy.utils

    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid.encoder import identity_embedding, load_stack
    from imageinference.engines.pulid.idformer import split_pulid
    from imageinference.engines.pulid.stack import stack_entries
    from imageinference.testing.tiny_pulid import rel

    emb = identity_embedding(load_stack(stack_entries(Catalog.load(), "test:pulid@1")), pulid_face()[0])
    _, ca_sd = split_pulid(comfy.utils.load_torch_file(str(pulid_env / rel("pulid")), safe_load=True))
    return SimpleNamespace(cond=emb.cond, uncond=emb.uncond, ca_sd=ca_sd)


def run(model, cfg=1.0, steps=STEPS):
    return pulid_run(model, cfg=cfg, steps=steps)


def lldacing(flux, packs, tiny, cfg=1.0, start_at=0.0, end_at=1.0, steps=STEPS):
    from imageinference.engines.pulid.inject import flux_blocks

    layers = packs_mod.lldacing_layers(packs.ll, tiny.ca_sd, *flux_blocks(flux))
    return run(packs_mod.apply_lldacing(flux, packs.ll, layers, tiny.cond, WEIGHT, start_at, end_at), cfg, steps)


def balazik(flux, packs, tiny, cfg=1.0, start_at=0.0, end_at=1.0, steps=STEPS):
    """balazik's pack applied to `flux`, sampled through a clone made before it was applied (as another branch of
    a workflow holds the plain model): the pack writes on the FLUX module all clones share, so that clone has
    PuLID as well."""
    other = flux.clone()
    layers = packs_mod.balazik_layers(packs.bz, tiny.ca_sd)
    with packs_mod.apply_balazik(flux, packs.bz, layers, tiny.cond, WEIGHT, start_at, end_at):
        return run(other, cfg, steps)


def ours_with_pack_layers(flux, packs, tiny, cfg=1.0, start=0, uncond=None, steps=STEPS):
    """Our injection (the engine's entry point, as our node calls it) with the packs' PerceiverAttentionCA
    (balazik's; lldacing's differs only by an unused `mask` argument)."""
    from imageinference.engines.pulid.inject import apply_pulid, layer_holder
    from imageinference.engines.pulid.schedule import StartStep

    holder = layer_holder(packs_mod.balazik_layers(packs.bz, tiny.ca_sd))
    uncond = tiny.uncond if uncond is None else uncond
    return run(apply_pulid(flux, holder, tiny.cond, uncond, WEIGHT, StartStep(step=start)), cfg, steps)


def close(mine, theirs, rel=TOLERANCE):
    scale, err = theirs.abs().max().item(), (mine - theirs).abs().max().item()
    assert err <= rel * scale, f"max |difference| {err:.3g} against max |value| {scale:.3g} (allowed {rel:g} of it)"


def test_both_packs_inject_the_identity_as_ours(flux, packs, tiny):
    """Window 0..1 (start_at 0, end_at 1) against our node from step 0, weight 0.8, sampler CFG 1."""
    from_ll, from_bz = lldacing(flux, packs, tiny), balazik(flux, packs, tiny)
    plain, node = run(flux), run(pulid_apply(flux, idWeight=WEIGHT))
    assert (node - plain).abs().max() > 0.1 * plain.abs().max()  # PuLID changes the latent
    assert torch.equal(from_ll, from_bz)
    assert torch.equal(ours_with_pack_layers(flux, packs, tiny), from_ll)
    close(node, from_ll)
    assert torch.equal(run(flux), plain)  # balazik's attributes were taken off the shared module again


def test_neither_pack_runs_on_comfyui_080_as_vendored(flux, packs, tiny):
    """Why the packs are adapted: lldacing's OUTER_SAMPLE wrapper does not take `latent_shapes` (its issues #88,
    #90), balazik's forward_orig not `transformer_options` and `attn_mask` (its issue #53)."""
    from imageinference.engines.pulid.inject import flux_blocks

    layers = packs_mod.lldacing_layers(packs.ll, tiny.ca_sd, *flux_blocks(flux))
    as_vendored = packs_mod.apply_lldacing(flux, packs.ll, layers, tiny.cond, WEIGHT, adapt=False)
    with pytest.raises(TypeError, match="latent_shapes"):
        pulid_run(as_vendored, steps=1)
    layers = packs_mod.balazik_layers(packs.bz, tiny.ca_sd)
    with (packs_mod.apply_balazik(flux, packs.bz, layers, tiny.cond, WEIGHT, adapt=False) as model,
          pytest.raises(TypeError, match="attn_mask")):
        pulid_run(model, steps=1)


def test_packs_give_the_unconditional_rows_the_same_identity(flux, packs, tiny):
    """Differs on purpose: at sampler CFG 2 the negative prompt's rows run too. Both packs add the one identity
    embedding to every row; ours gives the unconditional rows PuLID's unconditional identity (IDFormer of zeros),
    as the reference's sampler does for its negative pass. Given the conditional embedding for those rows too, our
    injection is bit-identical to the packs; as our node runs it, it differs by far more than the tolerance."""
    steps = 2  # two steps show it (each runs both rows)
    from_ll, from_bz = lldacing(flux, packs, tiny, 2.0, steps=steps), balazik(flux, packs, tiny, 2.0, steps=steps)
    assert torch.equal(from_ll, from_bz)
    assert torch.equal(ours_with_pack_layers(flux, packs, tiny, 2.0, uncond=tiny.cond, steps=steps), from_ll)
    node = run(pulid_apply(flux, idWeight=WEIGHT), 2.0, steps)
    assert (node - from_ll).abs().max() > 1e3 * TOLERANCE * from_ll.abs().max()


def start_at_for(model, sigma):
    """The start_at whose percent_to_sigma is `sigma` (bisection: it falls as start_at grows)."""
    sampling, lo, hi = model.get_model_object("model_sampling"), 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float(sampling.percent_to_sigma(mid)) > sigma else (lo, mid)
    return (lo + hi) / 2


def test_start_at_is_a_fraction_of_the_noise_range(flux, packs, tiny):
    """Differs on purpose. Both packs act while sigma_start >= sigma >= sigma_end (inclusive), with start_at /
    end_at turned into sigmas by percent_to_sigma; ours counts the sampler's steps (CFGstartStep, or a percentage
    of the steps), and has no end (the API has none; end_at 1 is sigma 0, every step). A start_at whose sigma lies
    between two steps' sigmas starts both packs at the step ours is given. But FLUX's `simple` schedule puts step
    k's sigma exactly on percent_to_sigma(k / steps): start_at 0.5 over 4 steps lands on step 2's sigma, and
    float rounding decides whether step 2 gets the identity; each pack compares in its own precision (lldacing
    Python floats, balazik float32 tensors). Ours starts a 50% window at step 2 whatever the rounding."""
    import comfy.samplers

    from imageinference.engines.pulid.schedule import StartStep

    sampling = flux.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", STEPS).float()
    between = start_at_for(flux, float(sigmas[1] + sigmas[2]) / 2)
    assert torch.equal(lldacing(flux, packs, tiny, start_at=between), ours_with_pack_layers(flux, packs, tiny,
                                                                                            start=2))
    half = float(sampling.percent_to_sigma(0.5))
    assert abs(half - float(sigmas[2])) < 1e-6 and StartStep(percentage=50).first_step(STEPS) == 2
    # each pack's own comparison of the step's sigma with its sigma_start
    first_ll = next(k for k in range(STEPS) if half >= float(sigmas[k]))
    first_bz = next(k for k in range(STEPS) if bool(half >= sigmas[k:k + 1]))
    assert (first_ll, first_bz) == (3, 2), "docs/pulid.md quotes these steps"
    from_ll, from_bz = lldacing(flux, packs, tiny, start_at=0.5), balazik(flux, packs, tiny, start_at=0.5)
    assert torch.equal(from_ll, ours_with_pack_layers(flux, packs, tiny, start=first_ll))
    assert torch.equal(from_bz, ours_with_pack_layers(flux, packs, tiny, start=first_bz))
