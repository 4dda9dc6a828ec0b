"""PuLID-FLUX against real ComfyUI sampling: the tiny FLUX model, tiny random-weight PuLID weights and ID-encoder
models in the published key layouts (imageinference/testing/tiny_pulid.py)."""


import comfy_helpers
import pytest
import torch
from comfy_helpers import PULID_CN_AIR as CN_AIR
from comfy_helpers import PULID_IPA_AIR as IPA_AIR
from comfy_helpers import PULID_STEPS as STEPS
from comfy_helpers import pulid_apply as pulid
from comfy_helpers import pulid_conds as conds
from comfy_helpers import pulid_face as face
from comfy_helpers import pulid_run as run

from imageinference.contract.errors import ContractError

flux = comfy_helpers.flux  # fixtures
pulid_env = comfy_helpers.pulid_env


class CALog:
    """Records (step, layer, cond_or_uncond rows) for every cross-attention call of a PuLID model."""

    def __init__(self, model, steps=STEPS):
        import comfy.patcher_extension

        from imageinference.engines.pulid.inject import ADDITIONAL_KEY

        self.base = model  # keeps the patched model alive while its clone runs
        self.model = model.clone()
        self.calls = []
        self.identities = []
        self.sigma = None
        self.steps = steps
        (holder,) = model.get_additional_models_with_key(ADDITIONAL_KEY)
        self.layers = holder.model
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

        def keep(executor, *args, **kwargs):
            self.sigma = float(args[3].flatten()[0])
            self.schedule = [float(s) for s in args[-1]["transformer_options"]["sample_sigmas"]]
            return executor(*args, **kwargs)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_ca_log", keep)

    def _hook(self, i):
        def hook(module, inputs, output):
            step = min(range(len(self.schedule) - 1), key=lambda s: abs(self.schedule[s] - self.sigma))
            self.calls.append((step, i, inputs[0].shape[0]))
            self.identities.append(inputs[0].detach().clone())
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def test_id_weight_zero_is_bit_identical_and_one_is_not(pulid_env, flux):
    base = run(flux)
    assert torch.equal(run(pulid(flux, idWeight=0.0)), base)
    changed = run(pulid(flux, idWeight=1.0))
    assert not torch.equal(changed, base) and torch.isfinite(changed).all()


@pytest.mark.parametrize(("start", "start_pct"), [(3, -1), (-1, 50)])
def test_identity_acts_from_the_start_step_on_and_not_before(pulid_env, flux, start, start_pct):
    def trajectory(model):
        xs = []
        return xs, run(model, callback=lambda step, x0, x, total: xs.append(x0.clone()))

    base_xs, _ = trajectory(flux)
    log = CALog(pulid(flux, start=start, start_pct=start_pct))
    try:
        xs, _ = trajectory(log.model)
    finally:
        log.close()
    assert sorted({(s, layer) for s, layer, _ in log.calls}) == [(s, layer) for s in range(3, STEPS) for layer in (0, 1)]
    for step in range(3):
        assert torch.equal(xs[step], base_xs[step]), step
    assert not torch.equal(xs[3], base_xs[3])


def test_a_run_after_removing_the_node_equals_a_fresh_model(pulid_env, flux):
    before = run(flux)
    options_before = repr(flux.model_options)
    patched = pulid(flux)
    assert not torch.equal(run(patched), before)
    assert repr(flux.model_options) == options_before
    assert "patches_replace" not in flux.model_options.get("transformer_options", {})
    assert torch.equal(run(flux), before)


def test_with_a_step_cache_the_pulid_blocks_see_every_computed_step(pulid_env, flux):
    import comfy.patcher_extension

    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import RUN_KEY, apply_step_cache, model_layout
    from imageinference.engines.samplers.windows import StepWindow

    steps = 10
    config = cache_config("fbCache", 1.0, model_layout(flux), window=StepWindow(), max_consecutive=2)
    log = CALog(pulid(flux, start=2), steps)
    cached = apply_step_cache(log.model, config)
    runs = []

    def keep(executor, *args, **kwargs):
        r = args[-1]["transformer_options"].get(RUN_KEY)
        if r is not None and r not in runs:
            runs.append(r)
        return executor(*args, **kwargs)

    cached.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test_runs", keep)
    try:
        out = run(cached, steps=steps)
    finally:
        log.close()
    (r,) = runs
    skipped = {s for s, k in r.ledger.decisions if k}
    assert skipped, "the loose threshold must skip steps"
    first = {s for s, layer, _ in log.calls if layer == 0}  # after double block 0: the cache's first block
    ranged = {s for s, layer, _ in log.calls if layer == 1}  # after single block 0: inside the cached range
    assert first == set(range(2, steps))
    assert ranged == set(range(2, steps)) - skipped
    assert torch.isfinite(out).all()


def test_pulid_after_a_step_cache_is_refused(pulid_env, flux):
    from imageinference.engines.cache.build import cache_config
    from imageinference.engines.cache.patch import apply_step_cache, model_layout

    cached = apply_step_cache(flux, cache_config("fbCache", 0.1, model_layout(flux)))
    with pytest.raises(ContractError) as info:
        pulid(cached)
    assert info.value.codes == ["conflictPulid"] and "before the step cache" in str(info.value)


def test_composes_with_lora_and_an_earlier_block_replacement(pulid_env, flux):
    import comfy.lora
    import comfy.sd

    key_map = comfy.lora.model_lora_keys_unet(flux.model, {})
    weights = flux.model.state_dict()
    g = torch.Generator().manual_seed(9)
    lora = {}
    for name, key in key_map.items():
        if isinstance(key, str) and "double_blocks.0.img_attn.qkv" in key and key.endswith("weight"):
            w = weights[key]
            lora[f"{name}.lora_down.weight"] = torch.randn(4, w.shape[1], generator=g) * 0.02
            lora[f"{name}.lora_up.weight"] = torch.randn(w.shape[0], 4, generator=g) * 0.02
            break
    assert lora
    with_lora, _ = comfy.sd.load_lora_for_models(flux, None, lora, 1.0, 0.0)
    seen = []

    def earlier(args, extra):  # e.g. another pack's replacement of the same block
        seen.append(1)
        return extra["original_block"](args)

    with_lora.set_model_patch_replace(earlier, "dit", "double_block", 0)
    base = run(with_lora)
    calls = len(seen)
    assert calls == STEPS and not torch.equal(base, run(flux))
    assert torch.equal(run(pulid(with_lora, idWeight=0.0)), base)
    assert len(seen) == 2 * calls
    assert not torch.equal(run(pulid(with_lora)), base)


def ip_adapter(model, weight=0.8):
    from imageinference.comfyui.nodes.ip_adapter import IPAdapter

    guide = torch.rand(1, 224, 224, 3, generator=torch.Generator().manual_seed(41))
    return IPAdapter.execute([model], [guide], [IPA_AIR], [weight], ["concat"], ["kv"], ["normal"], [-1.0]).result[0]


def test_composes_with_a_flux_ip_adapter_in_either_order(pulid_env, flux):
    """Both replace FLUX's double blocks: each must wrap the other, not take its place (two steps show it)."""
    def short(model):
        return run(model, steps=2)

    base, with_ipa, with_pulid = short(flux), short(ip_adapter(flux)), short(pulid(flux))
    assert not torch.equal(with_ipa, base) and not torch.equal(with_pulid, base)
    for both in (pulid(ip_adapter(flux)), ip_adapter(pulid(flux))):
        out = short(both)
        assert not torch.equal(out, with_ipa) and not torch.equal(out, with_pulid)
    assert torch.equal(short(pulid(ip_adapter(flux), idWeight=0.0)), with_ipa)
    assert torch.equal(short(ip_adapter(pulid(flux), weight=0.0)), with_pulid)
    assert torch.equal(short(flux), base)  # neither leaves anything on the model it was given


def test_composes_with_a_flux_controlnet(pulid_env, flux):
    import comfy.sample

    from imageinference.comfyui.nodes.controlnet import ControlNetApply

    hint = torch.rand(1, 32, 32, 3, generator=torch.Generator().manual_seed(42))

    def sample(model, control):
        pos, neg = conds(1), conds(2, 5)
        if control:
            pos, neg = ControlNetApply.execute(pos, neg, hint, CN_AIR, 0.8, -1, -1, -1, -1, "balanced").result
        latent = torch.zeros(1, 16, 4, 4)
        noise = comfy.sample.prepare_noise(latent, 5)
        return comfy.sample.sample(model, noise, 2, 1.0, "euler", "simple", pos, neg, latent, seed=5,
                                   disable_pbar=True)  # two steps show the composition

    controlled, plain_pulid = sample(flux, True), sample(pulid(flux), False)
    assert not torch.equal(controlled, sample(flux, False))  # the ControlNet acts on the tiny FLUX
    both = sample(pulid(flux), True)
    assert torch.isfinite(both).all()
    assert not torch.equal(both, controlled) and not torch.equal(both, plain_pulid)
    assert torch.equal(sample(pulid(flux, idWeight=0.0), True), controlled)


class PassLog:
    """Records, per model call, the step and which passes (0 conditional, 1 unconditional) it computed."""

    def __init__(self, model):
        import comfy.patcher_extension

        self.model = model.clone()
        self.calls = []

        def keep(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kw):
            sigmas = [float(s) for s in transformer_options["sample_sigmas"]]
            step = min(range(len(sigmas) - 1), key=lambda i: abs(sigmas[i] - float(t.flatten()[0])))
            self.calls.append((step, tuple(transformer_options["cond_or_uncond"])))
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kw)

        self.model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, "test_pass_log", keep)

    def passes(self, step):
        return sorted(p for s, chunks in self.calls if s == step for p in chunks)


@pytest.mark.parametrize("scale", [1.0, 1.005, 0.5, 0.0])
def test_true_cfg_scale_at_or_below_one_runs_no_negative_pass(pulid_env, flux, scale):
    """Issue 24.11: as core CFG at 1, and PuLID-FLUX's sampler within 0.01 of 1 (below 1: see docs/pulid.md)."""
    log = PassLog(pulid(flux, true_cfg=scale))
    out = run(log.model)
    assert [log.passes(step) for step in range(STEPS)] == [[0]] * STEPS
    assert torch.equal(out, run(pulid(flux)))


def test_true_cfg_runs_the_negative_pass_from_step_one_as_the_reference(pulid_env, flux):
    """PuLID-FLUX's `timestep_to_start_cfg` is 1: step 0 is the conditional prediction alone."""
    log = PassLog(pulid(flux, true_cfg=4.0))
    out = run(log.model)
    assert log.passes(0) == [0]
    assert all(log.passes(step) == [0, 1] for step in range(1, STEPS))
    # from step 1 on it is real CFG with scale 4 whatever the sampler's scale (1 would skip the negative pass)
    assert torch.equal(run(pulid(flux, true_cfg=4.0), cfg=2.0), out)
    assert not torch.allclose(out, run(pulid(flux)), rtol=1e-2, atol=1e-2)


def test_unconditional_rows_get_the_unconditional_identity(pulid_env, flux):
    from imageinference.engines.models.catalog import Catalog
    from imageinference.engines.pulid import encoder
    from imageinference.engines.pulid.stack import stack_entries

    emb = encoder.identity_embedding(encoder.load_stack(stack_entries(Catalog.load(), "test:pulid@1")), face()[0])
    log = CALog(pulid(flux))
    try:
        run(log.model, cfg=3.0)
    finally:
        log.close()
    rows = [row for ids in log.identities for row in ids]
    dtype = rows[0].dtype
    cond, uncond = emb.cond[0].to(dtype), emb.uncond[0].to(dtype)
    assert all(torch.equal(r, cond) or torch.equal(r, uncond) for r in rows)
    assert sum(torch.equal(r, uncond) for r in rows) == sum(torch.equal(r, cond) for r in rows) == STEPS * 2
    log = CALog(pulid(flux, true_cfg=3.0))  # PuLID's own real CFG: the negative pass from step 1 on
    try:
        run(log.model)
    finally:
        log.close()
    rows = [row for ids in log.identities for row in ids]
    assert sum(torch.equal(r.to(dtype), uncond) for r in rows) == (STEPS - 1) * 2
    assert sum(torch.equal(r.to(dtype), cond) for r in rows) == STEPS * 2
    assert not torch.equal(cond, uncond)
