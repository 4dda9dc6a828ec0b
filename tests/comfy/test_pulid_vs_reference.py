"""PuLID-FLUX against its reference implementation (ToTheBeginning/PuLID at the vendored commit), the reference's own
code run side by side with ours on identical weights in the same key layouts, identical inputs and seeds:

- IDFormer and the cross-attention layer (`pulid/encoders_transformer.py`) against ours (engines/pulid/idformer.py);
- the FLUX forward with PuLID (`flux/model.py`: one cross-attention layer after every 2nd double and every 4th single
  block) against ComfyUI's FLUX with our per-block replacements, on a small FLUX with 3 double and 5 single blocks
  (4 layers: after double blocks 0 and 2, single blocks 0 and 4), weights written into both;
- the reference's sampler (`flux/sampling.py` denoise: `start_step`, `true_cfg`, `timestep_to_start_cfg` 1) against
  ComfyUI's euler sampler through our node's settings: same schedule, noise, prompts and embeddings; the number of
  model passes is counted on both sides.

Tolerances (float32 throughout): the operations are the same but their order is not (PyTorch's fused attention
against the reference's explicit softmax(q k^T) v with its split 1/sqrt(sqrt(d)) scaling; ComfyUI's FLUX blocks
against BFL's; ComfyUI's euler step x + (x - denoised) / sigma * dt against the reference's x + dt * v), so values
agree to float32 rounding, stated per test, not bit for bit.
"""

import pytest
import torch

from imageinference.testing import peers

HIDDEN, HEADS, DOUBLE, SINGLE = 256, 2, 3, 5
VEC, CONTEXT = 32, 64
ID_WIDTH = 64  # IDFormer output = the cross-attention layers' key/value width


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    folder = peers.unpack("PuLID", tmp_path_factory.mktemp("peers"))
    return peers.import_top_level(folder, ["flux.model", "flux.sampling", "pulid.encoders_transformer"])


def perturbed(module, seed):
    """The module's state dict with every tensor moved off its initial value (LayerNorms too), deterministically."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in module.state_dict().items()}


def close(mine, theirs, rel):
    scale = theirs.abs().max().item()
    err = (mine - theirs).abs().max().item()
    assert err <= rel * scale, f"max |difference| {err:.3g} against max |value| {scale:.3g} (allowed {rel:g} of it)"


# ---------------------------------------------------------------- IDFormer and the cross-attention layer

def test_idformer_matches_the_reference(ref):
    """The reference's IDFormer with small query widths; its five vision mappings take 1024 features and its ID
    mapping 1280 values (fixed in its code: EVA02-CLIP-L's width, 512 + 768), so those stay real-sized."""
    from imageinference.engines.pulid.idformer import IDFormer

    torch.manual_seed(0)
    theirs = ref["pulid.encoders_transformer"].IDFormer(dim=128, depth=10, dim_head=64, heads=2, num_id_token=5,
                                                        num_queries=8, output_dim=ID_WIDTH).eval()
    sd = perturbed(theirs, 1)
    theirs.load_state_dict(sd)
    mine = IDFormer.from_state_dict(sd)
    g = torch.Generator().manual_seed(2)
    id_vec = torch.randn(2, 1280, generator=g)
    scales = [torch.randn(2, 17, 1024, generator=g) for _ in range(5)]
    with torch.no_grad():
        expected = theirs(id_vec, scales)
        got = mine(id_vec, scales)
        # the unconditional embedding: IDFormer of zeros, as the reference computes it for real CFG
        zeros = [torch.zeros_like(s) for s in scales]
        expected_u, got_u = theirs(torch.zeros_like(id_vec), zeros), mine(torch.zeros_like(id_vec), zeros)
    assert got.shape == expected.shape == (2, 8, ID_WIDTH)
    close(got, expected, 1e-5)
    close(got_u, expected_u, 1e-5)


def test_cross_attention_matches_the_reference(ref):
    from imageinference.engines.pulid.idformer import cross_attention_layers

    torch.manual_seed(3)
    theirs = ref["pulid.encoders_transformer"].PerceiverAttentionCA(dim=HIDDEN, dim_head=128, heads=HEADS,
                                                                    kv_dim=ID_WIDTH).eval()
    sd = perturbed(theirs, 4)
    theirs.load_state_dict(sd)
    (mine,) = cross_attention_layers({f"0.{k}": v for k, v in sd.items()})
    g = torch.Generator().manual_seed(5)
    identity, image = torch.randn(2, 8, ID_WIDTH, generator=g), torch.randn(2, 64, HIDDEN, generator=g)
    with torch.no_grad():
        close(mine(identity, image), theirs(identity, image), 1e-5)


# ---------------------------------------------------------------- FLUX with PuLID

@pytest.fixture(scope="module")
def flux_pair(ref, comfy):
    """(the reference's FLUX with PuLID layers, a ComfyUI ModelPatcher of the same FLUX, the layers' weights)."""
    import comfy.model_patcher
    import comfy.supported_models

    model_mod, enc = ref["flux.model"], ref["pulid.encoders_transformer"]
    params = model_mod.FluxParams(in_channels=64, vec_in_dim=VEC, context_in_dim=CONTEXT, hidden_size=HIDDEN,
                                  mlp_ratio=4.0, num_heads=HEADS, depth=DOUBLE, depth_single_blocks=SINGLE,
                                  axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True)
    torch.manual_seed(6)
    theirs = model_mod.Flux(params).eval()
    sd = perturbed(theirs, 7)
    theirs.load_state_dict(sd)
    torch.manual_seed(8)
    layers = torch.nn.ModuleList([enc.PerceiverAttentionCA(dim=HIDDEN, dim_head=128, heads=HEADS, kv_dim=ID_WIDTH)
                                  for _ in range(4)])
    ca_sd = perturbed(layers, 9)
    layers.load_state_dict(ca_sd)
    theirs.pulid_ca = layers.eval()

    config = comfy.supported_models.Flux({
        "image_model": "flux", "guidance_embed": True, "in_channels": 16, "out_channels": 16, "vec_in_dim": VEC,
        "context_in_dim": CONTEXT, "hidden_size": HIDDEN, "mlp_ratio": 4.0, "num_heads": HEADS, "depth": DOUBLE,
        "depth_single_blocks": SINGLE, "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True,
        "txt_ids_dims": []})
    config.set_inference_dtype(torch.float32, None)
    base = config.get_model({})
    base.diffusion_model.load_state_dict(sd, strict=True)
    cpu = torch.device("cpu")
    return theirs, comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu), ca_sd


def ours(patcher, ca_sd, cond, uncond, weight, start=None, true_cfg=None):
    from imageinference.engines.pulid.idformer import cross_attention_layers
    from imageinference.engines.pulid.inject import apply_pulid, layer_holder
    from imageinference.engines.pulid.schedule import StartStep

    holder = layer_holder(cross_attention_layers(ca_sd))
    return apply_pulid(patcher, holder, cond, uncond, weight, StartStep(step=start), true_cfg)


def pack(x):
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x, h, w):
    b = x.shape[0]
    return x.view(b, h // 2, w // 2, -1, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h, w)


def ids(b, h, w, tokens):
    img_ids = torch.zeros(h // 2, w // 2, 3)
    img_ids[..., 1] += torch.arange(h // 2)[:, None]
    img_ids[..., 2] += torch.arange(w // 2)[None, :]
    return img_ids.reshape(1, -1, 3).expand(b, -1, -1), torch.zeros(b, tokens, 3)


def inputs(seed, h=8, w=8, tokens=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, 16, h, w, generator=g), torch.randn(1, tokens, CONTEXT, generator=g),
            torch.randn(1, VEC, generator=g), torch.randn(1, 8, ID_WIDTH, generator=g))


@pytest.mark.parametrize("weight", [1.0, 0.6])
def test_one_forward_with_pulid_matches_the_reference(flux_pair, weight):
    """Placement (which block each of the 4 layers follows; single blocks act on the image part only) and the added
    weight x CA(identity, image): the PuLID part of the output (with minus without) agrees within 1e-4 of its size,
    and the plain forwards within 1e-4 (ComfyUI's FLUX against BFL's)."""
    theirs, patcher, ca_sd = flux_pair
    x, txt, y, identity = inputs(10)
    t, guidance = torch.tensor([0.7]), torch.tensor([3.5])
    img_ids, txt_ids = ids(1, 8, 8, txt.shape[1])
    patched = ours(patcher, ca_sd, identity, torch.zeros_like(identity), weight)
    dm = patcher.model.diffusion_model
    with torch.no_grad():
        plain_ref = theirs(pack(x), img_ids, txt, txt_ids, t, y, guidance)
        pulid_ref = theirs(pack(x), img_ids, txt, txt_ids, t, y, guidance, id=identity, id_weight=weight)
        plain = pack(dm(x, t, txt, y, guidance, transformer_options={}))
        options = dict(patched.model_options["transformer_options"], cond_or_uncond=[0])
        with_pulid = pack(dm(x, t, txt, y, guidance, transformer_options=options))
    close(plain, plain_ref, 1e-4)
    assert (pulid_ref - plain_ref).abs().max() > 1e-2 * plain_ref.abs().max()  # PuLID changes the output
    close(with_pulid - plain, pulid_ref - plain_ref, 1e-4)


def test_every_layer_acts_after_its_block(flux_pair):
    """Layer by layer: switching off one cross-attention layer (zero output projection) in both implementations
    changes both outputs by the same amount, so each layer sits after the same block in both."""
    theirs, patcher, ca_sd = flux_pair
    x, txt, y, identity = inputs(11)
    t, guidance = torch.tensor([0.4]), torch.tensor([3.5])
    img_ids, txt_ids = ids(1, 8, 8, txt.shape[1])
    dm = patcher.model.diffusion_model
    keep = {k: v.clone() for k, v in theirs.pulid_ca.state_dict().items()}
    try:
        with torch.no_grad():
            full_ref = theirs(pack(x), img_ids, txt, txt_ids, t, y, guidance, id=identity)
            full = pack(dm(x, t, txt, y, guidance, transformer_options=dict(
                ours(patcher, ca_sd, identity, identity, 1.0).model_options["transformer_options"],
                cond_or_uncond=[0])))
            for n in range(4):
                off = {k: (torch.zeros_like(v) if k == f"{n}.to_out.weight" else v) for k, v in ca_sd.items()}
                theirs.pulid_ca.load_state_dict(off)
                drop_ref = full_ref - theirs(pack(x), img_ids, txt, txt_ids, t, y, guidance, id=identity)
                drop = full - pack(dm(x, t, txt, y, guidance, transformer_options=dict(
                    ours(patcher, off, identity, identity, 1.0).model_options["transformer_options"],
                    cond_or_uncond=[0])))
                assert drop_ref.abs().max() > 0, n
                close(drop, drop_ref, 1e-3)
    finally:
        theirs.pulid_ca.load_state_dict(keep)


# ---------------------------------------------------------------- the sampler: start step and real CFG

class Counter:
    def __init__(self):
        self.rows = 0


def reference_run(ref, theirs, x, txt, neg, y, neg_y, identity, uncond, steps, start, true_cfg):
    counter = Counter()
    forward = theirs.forward

    def counted(*args, **kwargs):
        counter.rows += kwargs["img"].shape[0]
        return forward(*args, **kwargs)

    theirs.forward = counted
    img_ids, txt_ids = ids(1, x.shape[2], x.shape[3], txt.shape[1])
    _, neg_ids = ids(1, x.shape[2], x.shape[3], neg.shape[1])
    sampling = ref["flux.sampling"]
    timesteps = sampling.get_schedule(steps, pack(x).shape[1], shift=True)
    try:
        with torch.no_grad():
            out = sampling.denoise(theirs, pack(x), img_ids, txt, txt_ids, y, timesteps, guidance=3.5, id_weight=1.0,
                                   id=identity, start_step=start, uncond_id=uncond, true_cfg=true_cfg,
                                   timestep_to_start_cfg=1, neg_txt=neg, neg_txt_ids=neg_ids, neg_vec=neg_y)
    finally:
        del theirs.forward
    return unpack(out, x.shape[2], x.shape[3]), timesteps, counter.rows


def our_run(patcher, ca_sd, x, txt, neg, y, neg_y, identity, uncond, timesteps, start, true_cfg):
    import comfy.patcher_extension
    import comfy.sample
    import comfy.samplers

    model = ours(patcher, ca_sd, identity, uncond, 1.0, start=start, true_cfg=true_cfg).clone()
    counter = Counter()

    def count(executor, x_, t, *args, **kwargs):
        counter.rows += x_.shape[0]
        return executor(x_, t, *args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_rows", count)
    positive = [[txt, {"pooled_output": y, "guidance": 3.5}]]
    negative = [[neg, {"pooled_output": neg_y, "guidance": 3.5}]]
    latent = torch.zeros_like(x)
    out = comfy.sample.sample_custom(model, x, 1.0, comfy.samplers.sampler_object("euler"), torch.tensor(timesteps),
                                     positive, negative, latent, disable_pbar=True, seed=0)
    return patcher.model.process_latent_in(out), counter.rows


@pytest.mark.parametrize(("true_cfg", "start"), [(1.0, 0), (1.0, 2), (3.0, 0), (3.0, 2), (1.005, 1)])
def test_sampling_matches_the_reference_sampler(ref, flux_pair, true_cfg, start):
    """Same latent within 1e-5 of its size (measured: 4e-7; one step off in start_step: 0.16), and the same number of model passes: steps, plus steps - 1 negative
    passes when real CFG acts (none within 0.01 of 1; none at step 0, the reference's timestep_to_start_cfg)."""
    theirs, patcher, ca_sd = flux_pair
    x, txt, y, identity = inputs(12)
    _, neg, neg_y, uncond = inputs(13, tokens=5)
    steps = 5
    expected, timesteps, ref_rows = reference_run(ref, theirs, x, txt, neg, y, neg_y, identity, uncond, steps, start,
                                                  true_cfg)
    got, rows = our_run(patcher, ca_sd, x, txt, neg, y, neg_y, identity, uncond, timesteps, start, true_cfg)
    acts = abs(true_cfg - 1) > 0.01
    assert ref_rows == steps + (steps - 1 if acts else 0)
    assert rows == ref_rows
    close(got, expected, 1e-5)


def test_below_one_the_reference_extrapolates_and_we_run_no_negative_pass(ref, flux_pair):
    """Outside the reference's 1-10 range, on purpose (docs/pulid.md): at 0.5 the reference runs real CFG with
    scale 0.5; we run the conditional pass only, as at 1 (the contract: a negative prompt acts on FLUX only above
    1)."""
    theirs, patcher, ca_sd = flux_pair
    x, txt, y, identity = inputs(12)
    _, neg, neg_y, uncond = inputs(13, tokens=5)
    at_half, timesteps, half_rows = reference_run(ref, theirs, x, txt, neg, y, neg_y, identity, uncond, 4, 0, 0.5)
    at_one, _, one_rows = reference_run(ref, theirs, x, txt, neg, y, neg_y, identity, uncond, 4, 0, 1.0)
    got, rows = our_run(patcher, ca_sd, x, txt, neg, y, neg_y, identity, uncond, timesteps, 0, 0.5)
    assert (half_rows, one_rows, rows) == (4 + 3, 4, 4)
    close(got, at_one, 2e-4)
    assert (got - at_half).abs().max() > 1e-2 * at_half.abs().max()
