"""FLUX IP-Adapter (XLabs layout) sampled in real ComfyUI, through the node, on the tiny FLUX: the image attention
of each double block's own image query over the adapter's tokens, added to the block's image output; the weight
scales that attention's output (XLabs' ip_scale); the conditional rows attend to the guide image's tokens and
the unconditional rows (real CFG, `trueCFGScale`) to a black guide image's, as XLabs' sampler does. Each term is
recomputed here from the adapter file's weights and the block's own layers. Against XLabs' code itself:
test_ip_adapter_vs_xlabs.py.
"""

import comfy_helpers
import torch
import torch.nn.functional as F
from comfy_helpers import IPA_FLUX, close, heads_attention
from comfy_helpers import ipa_apply as apply
from comfy_helpers import ipa_weights as weights

ipa_models = comfy_helpers.ipa_models  # fixtures
ipa_nodes = comfy_helpers.ipa_nodes
ipa_vitl = comfy_helpers.ipa_vitl
ipa_flux = comfy_helpers.ipa_flux


def flux_cond(seed=1):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 6, 4096, generator=g), {"pooled_output": torch.randn(1, 768, generator=g),
                                                    "guidance": 3.5}]]


def flux_sample(model, cond=None, steps=3, seed=5, cfg=1.0, negative=None):
    import comfy.sample

    cond = cond or flux_cond()
    latent = torch.zeros(1, 16, 4, 4)
    noise = comfy.sample.prepare_noise(latent, seed)
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", cond, negative or cond, latent, seed=seed,
                               disable_pbar=True)


def recorded(flux, nodes, weight):
    """The adapter applied over a recording replacement; returns (patched model, list of per-call records): the
    block's input, what the block itself made, and what the adapter's replacement returned."""
    seen = []

    def inner(args, extra):  # under the adapter: what the block itself makes
        rec = {"img": args["img"].detach().clone(), "vec": args["vec"].detach().clone(),
               "cou": list(args["transformer_options"]["cond_or_uncond"])}
        out = extra["original_block"](args)
        rec["block_out"] = out["img"].detach().clone()
        seen.append(rec)
        return out

    recording = flux.clone()
    recording.set_model_patch_replace(inner, "dit", "double_block", 0)
    patched = apply(nodes, recording, IPA_FLUX, weight=weight, scaling="kv")
    replacement = patched.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)]

    def outer(args, extra):
        out = replacement(args, extra)
        seen[-1]["final"] = out["img"].detach().clone()
        return out

    patched.set_model_patch_replace(outer, "dit", "double_block", 0)
    return patched, seen


def block_q(flux, rec):
    """The block's image query, from its own layers: modulated pre-norm, qkv, RMS q-norm."""
    block = flux.get_model_object("diffusion_model").double_blocks[0]
    with torch.no_grad():
        mod = block.img_mod(rec["vec"])[0]
        x = F.layer_norm(rec["img"].float(), (3072,), eps=1e-6) * (1 + mod.scale.float()) + mod.shift.float()
        q = (x @ block.img_attn.qkv.weight.float().T + block.img_attn.qkv.bias.float())[..., :3072]
        q = q.reshape(*q.shape[:2], 24, 128)
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6) * block.img_attn.norm.query_norm.scale.float()
        return q.reshape(*q.shape[:2], 3072)


def image_kv(sd, embeds):
    """XLabs' projection and the block's k/v projections, written out."""
    c = 4096
    tok = (embeds @ sd["ip_adapter_proj_model.proj.weight"].T + sd["ip_adapter_proj_model.proj.bias"]).reshape(1, -1, c)
    tok = F.layer_norm(tok, (c,), sd["ip_adapter_proj_model.norm.weight"], sd["ip_adapter_proj_model.norm.bias"])
    p = "double_blocks.0.processor.ip_adapter_double_stream"
    return tok @ sd[f"{p}_k_proj.weight"].T + sd[f"{p}_k_proj.bias"], tok @ sd[f"{p}_v_proj.weight"].T + sd[f"{p}_v_proj.bias"]


def test_flux_adapter_adds_the_weighted_image_attention_after_each_double_block(ipa_nodes, ipa_flux, ipa_models,
                                                                                  ipa_vitl):
    base = flux_sample(ipa_flux)
    assert torch.equal(flux_sample(apply(ipa_nodes, ipa_flux, IPA_FLUX, weight=0.0)), base)
    patched, seen = recorded(ipa_flux, ipa_nodes, 0.3)
    out = flux_sample(patched, steps=1)
    assert torch.isfinite(out).all() and not torch.equal(out, flux_sample(ipa_flux, steps=1))
    sd = weights(ipa_models["ipadapter_flux"])
    (rec,) = seen
    k, v = image_kv(sd, ipa_vitl["embeds"][:1])
    q = block_q(ipa_flux, rec)
    want = 0.3 * heads_attention(q, k, v, 24)  # ip_scale on the attention's output (embedScaling "kv" or not)
    kv_scaled = heads_attention(q, 0.3 * k, 0.3 * v, 24)
    got = rec["final"].float() - rec["block_out"].float()
    # random FLUX blocks give sharp attention (large q), so tiny encoder differences show: 2 % of the term, while
    # the other scaling would be far off
    assert close(got, want, rel=2e-2), (got - want).norm() / want.norm()
    assert not close(got, kv_scaled, rel=0.2)


def test_flux_negative_rows_attend_to_a_black_guide_image_under_true_cfg(ipa_nodes, ipa_flux, ipa_models, ipa_vitl):
    """With real CFG (trueCFGScale) each model call holds conditional and unconditional rows: the conditional rows
    get the guide image's term, the unconditional ones the term of a black image's tokens (XLabs' negative image),
    both scaled by the weight."""
    patched, seen = recorded(ipa_flux, ipa_nodes, 0.8)
    flux_sample(patched, steps=1, cfg=3.0, negative=flux_cond(2))
    (rec,) = seen
    assert sorted(rec["cou"]) == [0, 1]
    sd = weights(ipa_models["ipadapter_flux"])
    q = block_q(ipa_flux, rec)
    got = rec["final"].float() - rec["block_out"].float()
    guide_kv, black_kv = image_kv(sd, ipa_vitl["embeds"][:1]), image_kv(sd, ipa_vitl["black_embeds"])
    zero_kv = image_kv(sd, torch.zeros(1, 768))
    for row, c in enumerate(rec["cou"]):
        k, v = guide_kv if c == 0 else black_kv
        want = 0.8 * heads_attention(q[row:row + 1], k, v, 24)
        assert close(got[row:row + 1], want, rel=2e-2), (c, (got[row:row + 1] - want).norm() / want.norm())
        if c == 1:  # not the zero embeddings IP-Adapter uses on SD for its negative side
            zk, zv = zero_kv
            assert not close(got[row:row + 1], 0.8 * heads_attention(q[row:row + 1], zk, zv, 24), rel=0.2)


def test_flux_adapter_under_a_step_cache(ipa_nodes, ipa_flux):
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout

    adapted = apply(ipa_nodes, ipa_flux, IPA_FLUX, weight=0.7)
    cached = apply_step_cache(adapted, cache_config("fbCache", 0.0, model_layout(adapted)))
    assert torch.equal(flux_sample(cached), flux_sample(adapted))  # the cache keeps the adapter (threshold 0)
